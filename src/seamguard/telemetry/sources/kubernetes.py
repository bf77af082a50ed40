"""Kubernetes as a source: where GPU jobs run, from the pods that ask for GPUs.

The API server is read with the official ``kubernetes`` client (imported on first use, so
loading a config does not import it): ``list_pod_for_all_namespaces`` (or
``list_namespaced_pod`` per configured namespace) in pages of ``page_size`` with the list's
``continue`` token, the server filtering out unbound and finished pods
(``FIELD_SELECTOR``) and by the configured label selector. Each page's body is read raw
(``_preload_content=False``) and bounded by ``max_page_bytes``, then parsed as JSON by
``kubernetes_pods``: the client's own model deserialisation costs ~0.4 ms per pod (measured on
client 37), 40 s for 100,000 pods, ten times ``json.loads``.

The source emits no samples: Kubernetes' node conditions have no signal in the catalog. What
it gives is ``placements()``. A read that fails (HTTP 401/403/410/500, no answer, a timeout,
a body that is not a PodList, more than ``max_pods``) is one notice, and ``placements()`` is
None until a read succeeds, so the daemon keeps the jobs it had. Never raises from ``collect``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from seamguard.kube_connection import client_configuration, require_client
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import JobRecord
from seamguard.model.topology import Topology
from seamguard.model.world import WorldChange
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.base import Collected, SourceNotice, bug_text, read_json
from seamguard.telemetry.sources.kubernetes_config import KubernetesSourceConfig
from seamguard.telemetry.sources.kubernetes_pods import GpuPod, group_jobs, read_pod

SOURCE = "kubernetes"
# Bound to a node and not finished: the API server drops the rest before paging.
FIELD_SELECTOR = "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"
MAX_PROBLEMS = 5  # malformed pods noticed per poll; the rest are counted


class ListError(Exception):
    """A page that could not be read: ``where`` names the request, the message what went wrong."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where


class PodPages(Protocol):
    """One page of the pod list: the raw PodList JSON, or ListError."""

    def page(self, namespace: str | None, cont: str | None) -> bytes: ...


def _where(namespace: str | None) -> str:
    return "GET /api/v1/pods" if namespace is None else f"GET /api/v1/namespaces/{namespace}/pods"


class ClientPodPages:
    """``PodPages`` over the official client, configured as the Kubernetes actuator is."""

    def __init__(self, config: KubernetesSourceConfig) -> None:
        require_client("sources.kubernetes")  # an optional extra: say which, not ModuleNotFoundError
        from kubernetes import client

        # retries: 0 underneath, a failed poll is noticed and retried at the next one, not hidden
        conf = client_configuration(
            config.host, config.verify_ssl, config.in_cluster, config.kubeconfig, config.context
        )
        self._core = client.CoreV1Api(client.ApiClient(conf))
        self._config = config

    def page(self, namespace: str | None, cont: str | None) -> bytes:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        c = self._config
        kwargs: dict[str, Any] = {
            "limit": c.page_size,
            "field_selector": FIELD_SELECTOR,
            "label_selector": c.label_selector or None,
            "_continue": cont,
            "_preload_content": False,
            "_request_timeout": c.timeout_s,
        }
        where = _where(namespace)
        try:
            resp: Any  # urllib3's HTTPResponse: _preload_content=False (the stubs say V1PodList)
            if namespace is None:
                resp = self._core.list_pod_for_all_namespaces(**kwargs)
            else:
                resp = self._core.list_namespaced_pod(namespace, **kwargs)
            try:
                body: bytes = resp.read(c.max_page_bytes + 1, decode_content=True)
            finally:
                resp.close()
        except ApiException as exc:
            said = (
                str(exc.body or b"", "utf-8", "replace")
                if isinstance(exc.body, bytes)
                else str(exc.body or "")
            )
            raise ListError(where, _http_problem(int(exc.status or 0), str(exc.reason or ""), said)) from None
        except (HTTPError, OSError) as exc:
            raise ListError(where, _no_answer(exc, c.timeout_s)) from None
        if len(body) > c.max_page_bytes:
            raise ListError(
                where, f"a page is larger than max_page_bytes={c.max_page_bytes}; lower page_size"
            )
        return body


def _no_answer(exc: Exception, timeout_s: float) -> str:
    """What urllib3 says, without its wrapper (MaxRetryError holds the cause in ``reason``)."""
    from urllib3.exceptions import MaxRetryError, TimeoutError

    cause = exc.reason if isinstance(exc, MaxRetryError) and exc.reason is not None else exc
    if isinstance(cause, TimeoutError):
        return f"no answer within timeout_s={timeout_s:g} ({type(cause).__name__})"
    return f"no answer: {type(cause).__name__}: {cause}"


def _http_problem(status: int, reason: str, body: str) -> str:
    hint = {
        401: " (the credentials were refused: token or client certificate)",
        403: " (RBAC: seamguard's account needs get/list on pods, docs/kubernetes.md)",
        410: " (the list's continue token expired before the last page; read again next poll)",
    }.get(status, "")
    message = ""
    try:
        doc = read_json(body)
        if isinstance(doc, dict):
            message = str(doc.get("message", ""))
    except ValueError:
        message = body.strip()[:200]
    if status == 0:
        return f"no answer: {reason}{': ' + message if message else ''}"
    return f"HTTP {status} {reason}{hint}{': ' + message if message else ''}"


@dataclass(frozen=True)
class PodRead:
    pods: tuple[GpuPod, ...]
    listed: int  # pods the server returned (bound, not finished, matching the label selector)
    problems: tuple[str, ...]  # malformed pods, skipped


def _pages(pages: PodPages, namespace: str | None) -> Iterator[list[Any]]:
    """Each page's items, following ``continue`` until the server gives none."""
    where, cont, seen = _where(namespace), None, set()
    while True:
        body = pages.page(namespace, cont)
        try:
            doc = read_json(body.decode("utf-8", "replace"))
        except ValueError as exc:
            raise ListError(where, str(exc)) from None
        if (
            not isinstance(doc, dict)
            or doc.get("kind") != "PodList"
            or not isinstance(doc.get("items"), list)
        ):
            raise ListError(where, f"not a PodList: {str(doc)[:120]!r}")
        yield doc["items"]
        meta = doc.get("metadata") or {}
        cont = meta.get("continue") if isinstance(meta, dict) else None
        if not cont:
            return
        if not isinstance(cont, str) or cont in seen:
            raise ListError(where, f"the server repeated or garbled a continue token: {str(cont)[:60]!r}")
        seen.add(cont)


def list_gpu_pods(pages: PodPages, config: KubernetesSourceConfig) -> PodRead:
    """Every page of every configured namespace (all when none); ListError if any page fails."""
    pods: list[GpuPod] = []
    problems: list[str] = []
    listed = 0
    for namespace in config.namespaces or (None,):
        for items in _pages(pages, namespace):
            listed += len(items)
            if listed > config.max_pods:
                raise ListError(
                    _where(namespace), f"more than max_pods={config.max_pods} pods listed; abandoned"
                )
            for item in items:
                try:
                    pod = read_pod(item, config)
                except ValueError as exc:
                    problems.append(str(exc))
                    continue
                if pod is not None:
                    pods.append(pod)
    return PodRead(tuple(pods), listed, tuple(problems))


@dataclass
class KubernetesSource:
    """Lists GPU pods every ``poll_s`` and keeps the jobs they make for ``placements()``."""

    topology: Topology
    config: KubernetesSourceConfig
    name: str = SOURCE
    pages: PodPages | None = None  # built from the config at the first poll (tests may inject)
    read_at: float | None = None  # the last poll's time
    last: PodRead | None = None  # the last successful read
    _records: tuple[JobRecord, ...] | None = field(default=None, repr=False)
    _notices: tuple[SourceNotice, ...] = field(default=(), repr=False)
    _known: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        names = self.topology.names[EntityKind.NODE]
        self._known = {self.config.node_name.format(name=n): n for n in names}

    def collect(self, now: float) -> Collected:
        """Lists the pods when ``poll_s`` has passed; between polls, repeats the last notices
        (so they stay active rather than clearing and reappearing)."""
        if self.read_at is not None and 0 <= now - self.read_at < self.config.poll_s:
            return Collected(TelemetryBatch.empty(), self._notices)
        self.read_at = now
        self._notices = self._poll(now)
        return Collected(TelemetryBatch.empty(), self._notices)

    def _poll(self, now: float) -> tuple[SourceNotice, ...]:
        self._records = None
        try:
            if self.pages is None:
                self.pages = ClientPodPages(self.config)
            read = list_gpu_pods(self.pages, self.config)
            jobs = group_jobs(read.pods, self.config, self._known, now)
        except ListError as exc:
            return (SourceNotice(SOURCE, exc.where, str(exc)),)
        except Exception as exc:  # the boundary: a kubeconfig that cannot be loaded, or a bug
            where = "kubeconfig" if self.pages is None else "pods"
            message = (
                f"cannot set up the client: {type(exc).__name__}: {exc}"
                if self.pages is None
                else bug_text("reading pods", exc)
            )
            return (SourceNotice(SOURCE, where, message),)
        self.last = read
        self._records = jobs.records
        out = [SourceNotice(SOURCE, "pods", p) for p in jobs.problems]
        out += [SourceNotice(SOURCE, "pods", f"skipped: {p}") for p in read.problems[:MAX_PROBLEMS]]
        if len(read.problems) > MAX_PROBLEMS:
            out.append(
                SourceNotice(
                    SOURCE, "pods", f"{len(read.problems) - MAX_PROBLEMS} more malformed pods skipped"
                )
            )
        return tuple(out)

    def follow(self, change: WorldChange) -> None:
        """Nodes that joined the inventory are known from the next poll (their pods' jobs count)."""
        self.topology = change.new
        self.__post_init__()
        self.read_at = None  # list again at the next tick rather than after ``poll_s``

    def placements(self) -> tuple[JobRecord, ...] | None:
        """The jobs of the last poll; None before the first poll or when the last one failed."""
        return self._records
