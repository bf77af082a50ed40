"""The webhook and Kubernetes actuators against real HTTP servers on loopback.

No Kubernetes API server can run here: ``KubeApi`` implements just the endpoints the actuator
uses (GET/PATCH node, list pods on a node, POST eviction) with the real API's semantics: merge
patches (null deletes, lists replaced), ``resourceVersion`` conflicts as 409 (a patch without one is
applied blindly), and a PodDisruptionBudget refusal as 429. ``KubeApi.interleave`` lands another
writer's change between seamguard's read and its patch, which is what the 409 tests drive. The official ``kubernetes`` client talks to it unmodified.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from seamguard.actuators.dispatch import Dispatcher, Route
from seamguard.actuators.guard import GuardConfig
from seamguard.actuators.kubernetes import OWNER_ANNOTATION, STATE_KEY, KubernetesActuator, KubernetesConfig
from seamguard.actuators.sections import Mode, WebhookConfig
from seamguard.actuators.webhook import WebhookActuator, verify_signature
from seamguard.model.actions import Action
from tests.http_stub import serve

SECRET = b"s3cret-shared"


# -- webhook --------------------------------------------------------------------------------
class Receiver(BaseHTTPRequestHandler):
    """Verifies the signature with hmac directly (not with seamguard's code), fails the first POST."""

    received: ClassVar[list[tuple[dict[str, str], bytes, int]]] = []
    fail_first = True

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ts = self.headers.get("X-Seamguard-Timestamp", "")
        given = self.headers.get("X-Seamguard-Signature", "")
        want = "sha256=" + hmac.new(SECRET, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, given) or abs(time.time() - float(ts or 0)) > 300:
            code = 401
        elif Receiver.fail_first:
            Receiver.fail_first = False
            code = 500
        else:
            code = 200
        Receiver.received.append((dict(self.headers), body, code))
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"ok" if code == 200 else b"no")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.received = []
    Receiver.fail_first = True
    with serve(Receiver) as url:
        yield url


def act(kind: str, target: str, at: float, state: str = "quarantine") -> Action:
    return Action(kind, target, "hot GPU", state, decided_at=at, epoch=7)


def test_webhook_signed_post_is_retried_after_a_500(receiver: str) -> None:
    hook = WebhookActuator(WebhookConfig(url=receiver + "/hook"), SECRET)
    d = Dispatcher([Route(hook, Mode.ENFORCE, GuardConfig(backoff_base_s=1.0))])
    now = time.time()
    (first,) = d.dispatch([act("drain_node", "node/n01", now)], now)
    assert first.status == "failed" and "HTTP 500" in first.detail
    due = d.guards["webhook"].pending()[0][2]
    (second,) = d.due(due)
    assert (second.status, second.attempt) == ("done", 2)
    assert [code for _, _, code in Receiver.received] == [500, 200]
    headers, body, _ = Receiver.received[1]
    sent = json.loads(body)
    assert (sent["kind"], sent["target"], sent["epoch"]) == ("drain_node", "node/n01", 7)
    assert headers["Idempotency-Key"] == Receiver.received[0][0]["Idempotency-Key"] == sent["key"]


def test_webhook_bad_signature_is_rejected_and_a_replay_with_a_new_timestamp_fails(receiver: str) -> None:
    wrong = WebhookActuator(WebhookConfig(url=receiver), b"not-the-secret")
    r = wrong.apply(act("drain_node", "node/n01", 1.0), time.time())
    assert r.status == "refused" and "HTTP 401" in r.detail
    good = WebhookActuator(WebhookConfig(url=receiver), SECRET)
    Receiver.fail_first = False
    assert good.apply(act("drain_node", "node/n02", 1.0), time.time()).status == "done"
    headers, body, _ = Receiver.received[-1]
    replay = {k: v for k, v in headers.items() if k.lower().startswith("x-seamguard")}
    replay["X-Seamguard-Timestamp"] = str(int(time.time()) + 5)  # a fresh stamp on a captured body
    assert httpx.post(receiver, content=body, headers=replay).status_code == 401
    ts = headers["X-Seamguard-Timestamp"]
    sig = headers["X-Seamguard-Signature"]
    assert verify_signature(SECRET, ts, body, sig, now=float(ts))
    assert not verify_signature(SECRET, ts, body, sig, now=float(ts) + 301)  # stale
    assert not verify_signature(SECRET, ts, body + b" ", sig, now=float(ts))


def test_webhook_in_advise_mode_sends_nothing(receiver: str) -> None:
    hook = WebhookActuator(WebhookConfig(url=receiver), SECRET)
    (r,) = Dispatcher([Route(hook)]).dispatch([act("drain_node", "node/n01", 1.0)], 1.0)
    assert (r.actuator, r.status) == ("webhook", "advised") and Receiver.received == []


def test_webhook_secret_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from seamguard.errors import InputError

    monkeypatch.delenv("SG_TEST_SECRET", raising=False)
    with pytest.raises(InputError, match="SG_TEST_SECRET"):
        WebhookActuator.from_config(WebhookConfig(url="http://127.0.0.1:1", secret_env="SG_TEST_SECRET"))


# -- kubernetes -----------------------------------------------------------------------------
def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """JSON merge patch (RFC 7386): null deletes, objects merge, lists are replaced. For the node
    fields used here (labels, annotations, unschedulable, taints: no patchMergeKey) strategic merge
    behaves the same."""
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            _merge(target[k], v)
        else:
            target[k] = copy.deepcopy(v)


def _node(
    name: str, unschedulable: bool = False, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "resourceVersion": "1", "labels": {"kubernetes.io/hostname": name},
                     "annotations": annotations or {}},
        "spec": {"unschedulable": unschedulable, "taints": [{"key": "gpu", "value": "h100", "effect": "NoSchedule"}]},
    }  # fmt: skip


def _pod(name: str, node: str, owner: str = "ReplicaSet") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "train", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": owner, "name": f"{name}-owner", "uid": f"uid-{name}"}]},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
    }  # fmt: skip


def _bump(node: dict[str, Any]) -> None:
    """Every write to an object gives it a new resourceVersion."""
    node["metadata"]["resourceVersion"] = str(int(node["metadata"]["resourceVersion"]) + 1)


class KubeApi(BaseHTTPRequestHandler):
    nodes: ClassVar[dict[str, dict[str, Any]]] = {}
    pods: ClassVar[list[dict[str, Any]]] = []
    pdb_refusals: ClassVar[dict[str, int]] = {}  # pod -> 429s before the budget allows it
    log: ClassVar[list[tuple[str, str, str]]] = []  # (method, path, content type)
    patches: ClassVar[list[dict[str, Any]]] = []  # each PATCH body as sent
    # node -> another writer's change, landed once just before the next PATCH of that node is
    # processed: a controller or operator writing between seamguard's GET and its PATCH
    interleave: ClassVar[dict[str, Callable[[dict[str, Any]], None]]] = {}

    def _send(self, code: int, obj: dict[str, Any]) -> None:
        raw = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _status(self, code: int, reason: str, message: str) -> None:
        self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                          "message": message, "code": code})  # fmt: skip

    def _body(self) -> Any:
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"null")

    def do_GET(self) -> None:
        url = urlparse(self.path)
        KubeApi.log.append(("GET", url.path, ""))
        parts = url.path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "nodes"] and len(parts) == 4:
            node = KubeApi.nodes.get(parts[3])
            return (
                self._send(200, node)
                if node
                else self._status(404, "NotFound", f'nodes "{parts[3]}" not found')
            )
        if url.path == "/api/v1/pods":
            selector = parse_qs(url.query).get("fieldSelector", [""])[0]
            node = selector.removeprefix("spec.nodeName=")
            items = [p for p in KubeApi.pods if p["spec"]["nodeName"] == node]
            return self._send(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
        return self._status(404, "NotFound", url.path)

    def do_PATCH(self) -> None:
        ctype = self.headers.get("Content-Type", "")
        KubeApi.log.append(("PATCH", self.path, ctype))
        name = self.path.strip("/").split("/")[-1]
        if ctype not in ("application/strategic-merge-patch+json", "application/merge-patch+json"):
            return self._status(
                415, "UnsupportedMediaType", f"the body of the request was in an unknown format {ctype}"
            )
        node = KubeApi.nodes.get(name)
        if node is None:
            return self._status(404, "NotFound", name)
        patch = self._body()
        KubeApi.patches.append(copy.deepcopy(patch))
        other = KubeApi.interleave.pop(name, None)
        if other is not None:
            other(node)
            _bump(node)
        # Optimistic concurrency as kube-apiserver does it: a resourceVersion in the patch is a
        # precondition; none at all and the patch is applied blindly over whatever is there.
        rv = (patch.get("metadata") or {}).pop("resourceVersion", None)
        if rv is not None and rv != node["metadata"]["resourceVersion"]:
            return self._conflict(name)
        _merge(node, patch)
        _bump(node)
        return self._send(200, node)

    def _conflict(self, name: str) -> None:
        """409 with the Status body apimachinery's ``errors.NewConflict`` builds (registry's
        ``OptimisticLockErrorMsg`` as the cause)."""
        self._send(409, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f'Operation cannot be fulfilled on nodes "{name}": the object has been modified; '
                       "please apply your changes to the latest version and try again",
            "reason": "Conflict", "details": {"name": name, "kind": "nodes"}, "code": 409,
        })  # fmt: skip

    def do_POST(self) -> None:
        KubeApi.log.append(("POST", self.path, self.headers.get("Content-Type", "")))
        parts = self.path.strip("/").split("/")  # api v1 namespaces <ns> pods <name> eviction
        if len(parts) != 7 or parts[-1] != "eviction":
            return self._status(404, "NotFound", self.path)
        ns, name = parts[3], parts[5]
        body = self._body()
        if body.get("kind", "Eviction") != "Eviction" or body["metadata"]["name"] != name:
            return self._status(400, "BadRequest", "not an Eviction of this pod")
        if KubeApi.pdb_refusals.get(name, 0) > 0:
            KubeApi.pdb_refusals[name] -= 1
            return self._status(
                429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget."
            )
        before = len(KubeApi.pods)
        KubeApi.pods = [
            p
            for p in KubeApi.pods
            if not (p["metadata"]["name"] == name and p["metadata"]["namespace"] == ns)
        ]
        if len(KubeApi.pods) == before:
            return self._status(404, "NotFound", f'pods "{name}" not found')
        return self._send(201, body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def kube() -> Iterator[str]:
    KubeApi.nodes = {"n01": _node("n01"), "n02": _node("n02", unschedulable=True, annotations={"ops": "rma"})}
    KubeApi.pods = [
        _pod("trainer-0", "n01"),
        _pod("dcgm-exporter", "n01", owner="DaemonSet"),
        _pod("other", "n02"),
    ]
    KubeApi.pdb_refusals = {"trainer-0": 1}
    KubeApi.log = []
    KubeApi.patches = []
    KubeApi.interleave = {}
    with serve(KubeApi) as url:
        yield url


def _actuator(url: str) -> KubernetesActuator:
    return KubernetesActuator(KubernetesConfig(host=url, timeout_s=5.0))


def test_drain_cordons_taints_labels_and_evicts_retrying_a_pdb_refusal(kube: str) -> None:
    d = Dispatcher([Route(_actuator(kube), Mode.ENFORCE, GuardConfig(backoff_base_s=1.0))])
    (first,) = d.dispatch([act("drain_node", "gpu/n01/3", 10.0)], 10.0)
    assert (
        first.status == "failed" and "train/trainer-0 refused by a PodDisruptionBudget (429)" in first.detail
    )
    node = KubeApi.nodes["n01"]
    assert node["spec"]["unschedulable"] is True
    assert node["metadata"]["annotations"][OWNER_ANNOTATION] == "seamguard"
    assert node["metadata"]["labels"][STATE_KEY] == "quarantine"
    assert {"key": STATE_KEY, "value": "quarantine", "effect": "NoSchedule"} in node["spec"]["taints"]
    assert {"key": "gpu", "value": "h100", "effect": "NoSchedule"} in node["spec"]["taints"]  # others' kept
    patches = [c for m, _, c in KubeApi.log if m == "PATCH"]
    assert patches == ["application/strategic-merge-patch+json"]
    # The guard's retry: the cordon is in place (no second patch), the PDB now allows the eviction.
    (second,) = d.due(d.guards["kubernetes"].pending()[0][2])
    assert second.status == "done" and "evicted train/trainer-0" in second.detail and second.attempt == 2
    assert [p["metadata"]["name"] for p in KubeApi.pods if p["spec"]["nodeName"] == "n01"] == [
        "dcgm-exporter"
    ]
    assert len([m for m, _, _ in KubeApi.log if m == "PATCH"]) == 1


def test_resume_uncordons_only_seamguards_own_cordon(kube: str) -> None:
    k = _actuator(kube)
    assert k.apply(act("drain_node", "node/n01", 1.0), 1.0).status in ("done", "failed")
    r = k.apply(act("resume_node", "node/n01", 2.0, state="healthy"), 2.0)
    node = KubeApi.nodes["n01"]
    assert r.status == "done" and "uncordoned" in r.detail
    assert node["spec"]["unschedulable"] is False and OWNER_ANNOTATION not in node["metadata"]["annotations"]
    assert STATE_KEY not in node["metadata"]["labels"]
    assert node["spec"]["taints"] == [{"key": "gpu", "value": "h100", "effect": "NoSchedule"}]
    assert k.apply(act("resume_node", "node/n01", 3.0, state="healthy"), 3.0).status == "already"


def test_a_foreign_cordon_is_never_uncordoned(kube: str) -> None:
    k = _actuator(kube)
    r = k.apply(act("drain_node", "node/n02", 1.0), 1.0)
    assert r.status == "done" and "already cordoned by someone else" in r.detail
    assert OWNER_ANNOTATION not in KubeApi.nodes["n02"]["metadata"]["annotations"]
    r = k.apply(act("resume_node", "node/n02", 2.0, state="healthy"), 2.0)
    node = KubeApi.nodes["n02"]
    assert r.status == "refused" and "cordoned by someone else" in r.detail and "left cordoned" in r.detail
    assert node["spec"]["unschedulable"] is True and node["metadata"]["annotations"] == {"ops": "rma"}
    assert all(t["key"] != STATE_KEY for t in node["spec"]["taints"])  # seamguard's own marks are gone


def test_restrict_admission_taints_without_cordoning_and_conflicts_fail(kube: str) -> None:
    k = _actuator(kube)
    r = k.apply(act("restrict_admission", "node/n01", 1.0, state="degraded"), 1.0)
    node = KubeApi.nodes["n01"]
    assert r.status == "done" and node["spec"]["unschedulable"] is False
    assert {"key": STATE_KEY, "value": "degraded", "effect": "NoSchedule"} in node["spec"]["taints"]
    assert k.apply(act("restrict_admission", "node/n01", 2.0, state="degraded"), 2.0).status == "already"
    assert k.apply(act("drain_node", "node/n99", 3.0), 3.0).status == "failed"  # 404 from the API
    assert (
        k.apply(act("drain_node", "job/train", 3.0), 3.0).status == "skipped"
    )  # not a node: nothing for Kubernetes to do


# -- optimistic concurrency: another writer between seamguard's read and its patch -----------
OPS_TAINT = {"key": "ops.example.com/maintenance", "value": "rma", "effect": "NoExecute"}
OURS = {"key": STATE_KEY, "value": "quarantine", "effect": "NoSchedule"}
GPU_TAINT = {"key": "gpu", "value": "h100", "effect": "NoSchedule"}


def _operator_taints(node: dict[str, Any]) -> None:
    node["spec"]["taints"].append(dict(OPS_TAINT))


def _operator_cordons(node: dict[str, Any]) -> None:
    node["spec"]["unschedulable"] = True
    node["metadata"]["annotations"]["ops"] = "rma"


def _guarded(url: str) -> Dispatcher:
    return Dispatcher([Route(_actuator(url), Mode.ENFORCE, GuardConfig(backoff_base_s=1.0))])


def _assert_conflict_reported(r: Any) -> None:
    assert r.status == "failed" and r.attempt == 1
    assert "node n01 was changed by someone else since seamguard read it (resourceVersion" in r.detail
    assert "nothing written; will retry against the new state" in r.detail
    assert "HTTP 409" in r.detail and "Conflict" in r.detail


def test_a_taint_added_between_read_and_patch_is_a_409_and_the_retry_keeps_it(kube: str) -> None:
    KubeApi.interleave["n01"] = _operator_taints
    d = _guarded(kube)
    (first,) = d.dispatch([act("cordon_node", "node/n01", 10.0)], 10.0)
    node = KubeApi.nodes["n01"]
    assert node["spec"]["taints"] == [GPU_TAINT, OPS_TAINT]  # the other writer's taint stands ...
    assert node["spec"]["unschedulable"] is False and STATE_KEY not in node["metadata"]["labels"]  # ... alone
    _assert_conflict_reported(first)
    # The guard's retry re-reads the node and patches the new state, with the new resourceVersion.
    (second,) = d.due(d.guards["kubernetes"].pending()[0][2])
    assert second.status == "done" and second.attempt == 2 and "cordoned" in second.detail
    node = KubeApi.nodes["n01"]
    assert node["spec"]["taints"] == [GPU_TAINT, OPS_TAINT, OURS]
    assert node["spec"]["unschedulable"] is True
    assert node["metadata"]["annotations"][OWNER_ANNOTATION] == "seamguard"
    assert [p["metadata"]["resourceVersion"] for p in KubeApi.patches] == ["1", "2"]


def test_a_cordon_by_an_operator_between_read_and_patch_is_never_claimed_as_seamguards(kube: str) -> None:
    KubeApi.interleave["n01"] = _operator_cordons
    d = _guarded(kube)
    (first,) = d.dispatch([act("cordon_node", "node/n01", 10.0)], 10.0)
    assert OWNER_ANNOTATION not in KubeApi.nodes["n01"]["metadata"]["annotations"]
    _assert_conflict_reported(first)
    (second,) = d.due(d.guards["kubernetes"].pending()[0][2])
    assert second.status == "done" and "already cordoned by someone else" in second.detail
    node = KubeApi.nodes["n01"]
    assert node["metadata"]["annotations"] == {"ops": "rma"} and OURS in node["spec"]["taints"]
    assert [p["metadata"]["resourceVersion"] for p in KubeApi.patches] == ["1", "2"]
    # Had seamguard's blind patch claimed the cordon, resuming would now uncordon the operator's.
    r = _actuator(kube).apply(act("resume_node", "node/n01", 20.0, state="healthy"), 20.0)
    assert r.status == "refused" and KubeApi.nodes["n01"]["spec"]["unschedulable"] is True


def test_a_taint_added_between_the_resume_read_and_patch_survives_the_resume(kube: str) -> None:
    assert _actuator(kube).apply(act("cordon_node", "node/n01", 1.0), 1.0).status == "done"
    KubeApi.interleave["n01"] = _operator_taints
    d = _guarded(kube)
    (first,) = d.dispatch([act("resume_node", "node/n01", 10.0, state="healthy")], 10.0)
    node = KubeApi.nodes["n01"]
    assert node["spec"]["taints"] == [GPU_TAINT, OURS, OPS_TAINT] and node["spec"]["unschedulable"] is True
    _assert_conflict_reported(first)
    (second,) = d.due(d.guards["kubernetes"].pending()[0][2])
    assert second.status == "done" and "uncordoned" in second.detail and second.attempt == 2
    node = KubeApi.nodes["n01"]
    assert node["spec"]["taints"] == [GPU_TAINT, OPS_TAINT] and node["spec"]["unschedulable"] is False
    assert [p["metadata"]["resourceVersion"] for p in KubeApi.patches] == ["1", "2", "3"]
