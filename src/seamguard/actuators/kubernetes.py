"""The Kubernetes actuator: cordon, taint, label and evict through the official ``kubernetes`` client.

The actuator's logic talks to ``NodeApi``, the project's own four-call interface; ``ClientNodeApi``
implements it with ``kubernetes.client.CoreV1Api``. What it does per kind:

- ``drain_node``: cordon (``spec.unschedulable``) and mark the cordon as seamguard's
  (annotation ``seamguard.io/cordoned-by: seamguard``), taint ``seamguard.io/state=<state>:NoSchedule``,
  label ``seamguard.io/state=<state>``, then evict every pod on the node through the Eviction API
  (DaemonSet and mirror pods excepted, as ``kubectl drain`` does). A PodDisruptionBudget refusal
  (HTTP 429) is a ``failed`` result naming the pod: the guard retries with backoff and the repeat
  finds the cordon in place and evicts what is left.
- ``cordon_node``: the same without evictions; ``restrict_admission``: the taint and label only.
- ``resume_node`` / ``restore_admission``: remove seamguard's taint and label, and uncordon only if
  seamguard's annotation is there. A node cordoned by someone else stays cordoned (``refused``).

Patches are strategic-merge patches carrying the node's ``resourceVersion``: a node changed by
someone else between the read and the write is a 409, retried by the guard against the new state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import Field

from seamguard.actuators.base import before_side_effect
from seamguard.kube_connection import client_configuration
from seamguard.model.actions import Action, ActionResult, ActionStatus
from seamguard.strict_model import StrictModel

OWNER_ANNOTATION = "seamguard.io/cordoned-by"
OWNER = "seamguard"
STATE_KEY = "seamguard.io/state"
KINDS = frozenset({"drain_node", "cordon_node", "restrict_admission", "resume_node", "restore_admission"})
_QUARANTINE = frozenset({"drain_node", "cordon_node"})
_UNDO = frozenset({"resume_node", "restore_admission"})


class KubernetesConfig(StrictModel):
    host: str | None = Field(default=None, description="API server URL; unset: kubeconfig or in-cluster")
    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool = False
    verify_ssl: bool = True
    node_name: str = Field(
        default="{name}", description="the Kubernetes node name from seamguard's node name"
    )
    evict: bool = True
    grace_period_s: int | None = Field(default=None, ge=0)
    timeout_s: float = Field(default=10.0, gt=0)


_Result = Callable[[ActionStatus, str], ActionResult]


class KubeError(Exception):
    """An API call that did not succeed: ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str


class NodeApi(Protocol):
    """What the actuator needs from Kubernetes; nodes and patches are plain JSON-shaped dicts."""

    def get_node(self, name: str) -> dict[str, Any]: ...

    def patch_node(self, name: str, patch: dict[str, Any]) -> None: ...

    def pods_on(self, node: str) -> list[Pod]:
        """Pods to evict: not DaemonSet-owned, not mirror pods, not already terminating."""
        ...

    def evict(self, pod: Pod, grace_period_s: int | None) -> None: ...


class ClientNodeApi:
    """``NodeApi`` over the official client (``kubernetes.client.CoreV1Api``)."""

    def __init__(self, config: KubernetesConfig) -> None:
        from kubernetes import client

        # retries: 0 underneath, the guard retries, with backoff and a budget
        conf = client_configuration(
            config.host, config.verify_ssl, config.in_cluster, config.kubeconfig, config.context
        )
        self._client = client
        self._api_client = client.ApiClient(conf)
        self._core = client.CoreV1Api(self._api_client)
        self._timeout = config.timeout_s

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, _request_timeout=self._timeout, **kwargs)
        except ApiException as exc:
            raise KubeError(
                int(exc.status or 0), f"{what}: {exc.reason} {str(exc.body or '')[:200]}"
            ) from exc
        except HTTPError as exc:
            raise KubeError(0, f"{what}: {exc!r}") from exc

    def get_node(self, name: str) -> dict[str, Any]:
        node = self._call(f"GET node {name}", self._core.read_node, name)
        out: dict[str, Any] = self._api_client.sanitize_for_serialization(node)  # type: ignore[no-untyped-call]
        return out

    def patch_node(self, name: str, patch: dict[str, Any]) -> None:
        # A dict body is sent as application/strategic-merge-patch+json by the client.
        self._call(f"PATCH node {name}", self._core.patch_node, name, patch)

    def pods_on(self, node: str) -> list[Pod]:
        pods = self._call(
            f"list pods on {node}",
            self._core.list_pod_for_all_namespaces,
            field_selector=f"spec.nodeName={node}",
        )
        out: list[Pod] = []
        for p in pods.items:
            meta = p.metadata
            owners = meta.owner_references or []
            if any(o.kind == "DaemonSet" for o in owners) or "kubernetes.io/config.mirror" in (
                meta.annotations or {}
            ):
                continue
            if meta.deletion_timestamp is not None:
                continue
            out.append(Pod(meta.namespace, meta.name))
        return out

    def evict(self, pod: Pod, grace_period_s: int | None) -> None:
        c = self._client
        body = c.V1Eviction(
            api_version="policy/v1",
            kind="Eviction",
            metadata=c.V1ObjectMeta(name=pod.name, namespace=pod.namespace),
            delete_options=None
            if grace_period_s is None
            else c.V1DeleteOptions(grace_period_seconds=grace_period_s),
        )
        self._call(
            f"evict {pod.namespace}/{pod.name}",
            self._core.create_namespaced_pod_eviction,
            pod.name,
            pod.namespace,
            body,
        )


def _taints_without_ours(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [dict(t) for t in (spec.get("taints") or []) if t.get("key") != STATE_KEY]


class KubernetesActuator:
    kinds = KINDS

    def __init__(
        self, config: KubernetesConfig, api: NodeApi | None = None, *, name: str = "kubernetes"
    ) -> None:
        self.name = name
        self.config = config
        self.api = api if api is not None else ClientNodeApi(config)

    def node_name(self, target: str) -> str | None:
        kind, _, rest = target.partition("/")
        if kind not in ("node", "gpu", "link") or not rest:
            return None
        return self.config.node_name.format(name=rest.split("/")[0])

    def apply(self, action: Action, now: float) -> ActionResult:
        def result(status: ActionStatus, detail: str) -> ActionResult:
            return ActionResult(action, self.name, status, detail, now)

        name = self.node_name(action.target)
        if name is None:
            return result(
                ActionStatus.SKIPPED, f"{action.target} is not a node the Kubernetes actuator can act on"
            )
        if action.kind not in KINDS:
            return result(ActionStatus.REFUSED, f"kind {action.kind} is not a Kubernetes action")
        try:
            if action.kind in _UNDO:
                return self._undo(action, name, result)
            return self._quarantine(action, name, result)
        except KubeError as exc:
            return result(ActionStatus.FAILED, str(exc))

    def _read(self, name: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, str], dict[str, str]]:
        """The node's metadata and spec, and its annotations and labels (empty when it has none)."""
        node = self.api.get_node(name)
        meta, spec = node.get("metadata", {}), node.get("spec", {})
        return meta, spec, meta.get("annotations") or {}, meta.get("labels") or {}

    def _patch(
        self, name: str, meta: Mapping[str, Any], patch_meta: dict[str, Any], patch_spec: dict[str, Any]
    ) -> None:
        """Patch conditionally on the ``resourceVersion`` read: a list (taints) is replaced whole, so
        a blind patch would erase what another writer did since the read; the API server answers 409
        instead, and the guard's retry re-reads and patches against the new state."""
        patch: dict[str, Any] = {"metadata": {**patch_meta, "resourceVersion": meta.get("resourceVersion")}}
        if patch_spec:
            patch["spec"] = patch_spec
        before_side_effect()
        try:
            self.api.patch_node(name, patch)
        except KubeError as exc:
            if exc.status != 409:
                raise
            raise KubeError(
                409,
                f"node {name} was changed by someone else since seamguard read it (resourceVersion "
                f"{meta.get('resourceVersion')}): nothing written; will retry against the new state ({exc})",
            ) from exc

    def _quarantine(self, action: Action, name: str, result: _Result) -> ActionResult:
        meta, spec, annotations, labels = self._read(name)
        done: list[str] = []
        patch_meta: dict[str, Any] = {}
        patch_spec: dict[str, Any] = {}
        if action.kind in _QUARANTINE:
            if not spec.get("unschedulable"):
                patch_spec["unschedulable"] = True
                patch_meta["annotations"] = {OWNER_ANNOTATION: OWNER}
                done.append("cordoned")
            elif annotations.get(OWNER_ANNOTATION) != OWNER:
                done.append("already cordoned by someone else (seamguard will not uncordon it)")
        ours = {"key": STATE_KEY, "value": action.state, "effect": "NoSchedule"}
        taints = spec.get("taints") or []
        if not any(
            t.get("key") == STATE_KEY and t.get("value") == action.state and t.get("effect") == "NoSchedule"
            for t in taints
        ):
            patch_spec["taints"] = [*_taints_without_ours(spec), ours]  # the list is replaced whole
            done.append(f"tainted {STATE_KEY}={action.state}:NoSchedule")
        if labels.get(STATE_KEY) != action.state:
            patch_meta["labels"] = {STATE_KEY: action.state}
            done.append(f"labelled {STATE_KEY}={action.state}")
        if patch_meta or patch_spec:
            self._patch(name, meta, patch_meta, patch_spec)
        if action.kind == "drain_node" and self.config.evict:
            evicted: list[str] = []
            blocked: list[str] = []
            for pod in self.api.pods_on(name):
                try:
                    self.api.evict(pod, self.config.grace_period_s)
                    evicted.append(f"{pod.namespace}/{pod.name}")
                except KubeError as exc:
                    if exc.status == 404:
                        continue  # gone meanwhile
                    if exc.status == 429:
                        blocked.append(f"{pod.namespace}/{pod.name}")
                        continue
                    raise
            if evicted:
                done.append(f"evicted {', '.join(evicted)}")
            if blocked:
                return result(
                    ActionStatus.FAILED,
                    f"node {name}: " + "; ".join(done) + ("; " if done else "")
                    + f"eviction of {', '.join(blocked)} refused by a PodDisruptionBudget (429); will retry",
                )  # fmt: skip
        changed = [d for d in done if not d.startswith("already")]
        if not changed:
            return result(
                ActionStatus.ALREADY, f"node {name}: already {action.kind} ({'; '.join(done) or 'in place'})"
            )
        return result(ActionStatus.DONE, f"node {name}: " + "; ".join(done))

    def _undo(self, action: Action, name: str, result: _Result) -> ActionResult:
        meta, spec, annotations, labels = self._read(name)
        done: list[str] = []
        patch_meta: dict[str, Any] = {}
        patch_spec: dict[str, Any] = {}
        if any(t.get("key") == STATE_KEY for t in (spec.get("taints") or [])):
            patch_spec["taints"] = _taints_without_ours(spec)
            done.append("taint removed")
        if STATE_KEY in labels:
            patch_meta["labels"] = {STATE_KEY: None}  # null deletes a key in a merge patch
            done.append("label removed")
        foreign = False
        if spec.get("unschedulable"):
            if annotations.get(OWNER_ANNOTATION) == OWNER:
                patch_spec["unschedulable"] = False
                patch_meta["annotations"] = {OWNER_ANNOTATION: None}
                done.append("uncordoned")
            else:
                foreign = True
        if patch_meta or patch_spec:
            self._patch(name, meta, patch_meta, patch_spec)
        if foreign:
            return result(
                ActionStatus.REFUSED,
                f"node {name}: cordoned by someone else (no {OWNER_ANNOTATION} annotation): left cordoned"
                + (f"; {'; '.join(done)}" if done else ""),
            )
        if not done:
            return result(ActionStatus.ALREADY, f"node {name}: nothing of seamguard's on it")
        return result(ActionStatus.DONE, f"node {name}: " + "; ".join(done))
