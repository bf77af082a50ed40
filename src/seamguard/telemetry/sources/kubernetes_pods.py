"""Pods as the API server lists them (``PodList`` JSON) into seamguard's job records.

Plain functions over the JSON, so the rules are tested without a client: which pods count (they
ask for GPUs and are bound to a node in a counted phase), which job a pod belongs to (the first
of ``job_labels`` it carries, else its controlling owner, else itself), and the job's class,
storage, start and end. The API server says how many GPUs a pod asked for, never which: that
is the kubelet's (see docs/kubernetes.md), so a job is placed at node granularity, as Slurm's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from seamguard.model.inventory import JobRecord
from seamguard.model.states import JobClass
from seamguard.telemetry.sources.kubernetes_config import KubernetesSourceConfig


@dataclass(frozen=True)
class GpuPod:
    """What seamguard keeps of one pod that holds GPUs on a node."""

    namespace: str
    name: str
    node: str  # spec.nodeName, as Kubernetes names the node
    job: str  # seamguard's job name (``job_id`` over the namespace and the group's name)
    group: str  # what grouped it: a job label, "owner <Kind>" or "pod"
    gpus: int
    job_class: str  # the class label/annotation as written ("" when absent)
    storage: str  # the storage annotation ("" when absent)
    start: float | None  # status.startTime
    deadline_s: float | None  # spec.activeDeadlineSeconds


def _map(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}.{key} is not an object")
    return value


def _list(obj: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{where}.{key} is not a list")
    return value


def gpu_quantity(text: Any, where: str) -> int:
    """A device plugin's extended resource is a whole number ("8"); other quantity spellings
    ("1k") are read with the client's own ``parse_quantity``; ValueError naming ``where``."""
    if isinstance(text, int) and not isinstance(text, bool):
        value: Any = text
    elif isinstance(text, str) and text.isascii() and text.isdecimal():
        value = int(text)
    else:
        from kubernetes.utils import parse_quantity

        try:
            value = parse_quantity(text)  # type: ignore[no-untyped-call]
        except (ValueError, TypeError):
            raise ValueError(f"{where} is not a quantity: {text!r}") from None
    if value < 0 or value != int(value):
        raise ValueError(f"{where} must be a whole number of devices, got {text!r}")
    return int(value)


def _container_gpus(container: Any, resource: str, where: str) -> int:
    if not isinstance(container, Mapping):
        raise ValueError(f"{where} is not an object")
    res = _map(container, "resources", where)
    asked = [
        gpu_quantity(_map(res, part, f"{where}.resources")[resource], f"{where}.resources.{part}[{resource}]")
        for part in ("limits", "requests")
        if resource in _map(res, part, f"{where}.resources")
    ]
    return max(asked, default=0)


def pod_gpus(spec: Mapping[str, Any], resource: str, where: str) -> int:
    """The pod's effective request, as the scheduler counts it: the sum over its containers, or
    the largest init container's if larger (init containers run one at a time)."""
    app = sum(
        _container_gpus(c, resource, f"{where}.containers[{i}]")
        for i, c in enumerate(_list(spec, "containers", where))
    )
    init = (
        _container_gpus(c, resource, f"{where}.initContainers[{i}]")
        for i, c in enumerate(_list(spec, "initContainers", where))
    )
    return max(app, max(init, default=0))


def _time(text: Any, where: str) -> float | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        raise ValueError(f"{where} is not an RFC 3339 time: {text!r}") from None


def _group(
    meta: Mapping[str, Any], labels: Mapping[str, Any], config: KubernetesSourceConfig
) -> tuple[str, str]:
    """(group, name): the first job label present, else the controlling owner, else the pod."""
    for key in config.job_labels:
        value = labels.get(key)
        if isinstance(value, str) and value:
            return key, value
    for owner in _list(meta, "ownerReferences", "metadata"):
        if isinstance(owner, Mapping) and owner.get("controller") and owner.get("name"):
            return f"owner {owner.get('kind', '')}", str(owner["name"])
    return "pod", str(meta.get("name", ""))


def read_pod(item: Any, config: KubernetesSourceConfig) -> GpuPod | None:
    """The pod if it holds GPUs on a node now, None if it does not; ValueError naming the pod
    and the field when its JSON is not a pod's."""
    if not isinstance(item, Mapping):
        raise ValueError("an item of the list is not an object")
    meta = _map(item, "metadata", "pod")
    ns, name = meta.get("namespace"), meta.get("name")
    if not isinstance(ns, str) or not isinstance(name, str) or not ns or not name:
        raise ValueError("a pod without metadata.namespace and metadata.name")
    where = f"pod {ns}/{name}"
    spec, status = _map(item, "spec", where), _map(item, "status", where)
    node = spec.get("nodeName")
    if not node or status.get("phase") not in config.phases:
        return None  # not bound yet, or finished: it holds no GPUs
    gpus = pod_gpus(spec, config.gpu_resource, f"{where} spec")
    if gpus == 0:
        return None
    labels, notes = _map(meta, "labels", where), _map(meta, "annotations", where)
    group, value = _group(meta, labels, config)
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and (
        not isinstance(deadline, int) or isinstance(deadline, bool) or deadline <= 0
    ):
        raise ValueError(f"{where} spec.activeDeadlineSeconds is not a positive integer: {deadline!r}")
    return GpuPod(
        namespace=ns,
        name=name,
        node=str(node),
        job=config.job_id.format(namespace=ns, name=value),
        group=group,
        gpus=gpus,
        job_class=str(labels.get(config.class_key) or notes.get(config.class_key) or ""),
        storage=str(notes.get(config.storage_annotation) or ""),
        start=_time(status.get("startTime"), f"{where} status.startTime"),
        deadline_s=float(deadline) if deadline is not None else None,
    )


@dataclass(frozen=True)
class Jobs:
    records: tuple[JobRecord, ...]
    problems: tuple[str, ...]  # for notices: unknown nodes, bad classes, shared nodes


def _class(pods: list[GpuPod], config: KubernetesSourceConfig, problems: list[str]) -> JobClass:
    said = sorted({p.job_class for p in pods if p.job_class})
    if len(said) > 1:
        problems.append(f"job {pods[0].job}: pods name different classes ({', '.join(said)}); {said[0]} used")
    if said:
        try:
            return JobClass.parse(said[0])
        except ValueError as exc:
            problems.append(f"job {pods[0].job} ({config.class_key}): {exc}; the default used")
    return config.label_classes.get(pods[0].group, config.default_job_class)


def _owners(by_job: Mapping[str, list[GpuPod]], known: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """Each inventory node's job. The engine places one job per node; Kubernetes packs pods of
    several jobs on one node, so a shared node goes to the job holding most of its GPUs (ties:
    the first name), and the problem says so ("" when no node is shared)."""
    gpus: dict[str, dict[str, int]] = {}
    for job, members in by_job.items():
        for p in members:
            per = gpus.setdefault(known[p.node], {})
            per[job] = per.get(job, 0) + p.gpus
    owner = {n: min(per, key=lambda j: (-per[j], j)) for n, per in gpus.items()}
    shared = sorted(n for n, per in gpus.items() if len(per) > 1)
    if not shared:
        return owner, ""
    per = gpus[shared[0]]
    said = ", ".join(f"{j} ({per[j]} GPUs)" for j in sorted(per, key=lambda j: (-per[j], j))[:4])
    return owner, (
        f"{len(shared)} node(s) hold GPU pods of several jobs; each is placed with the job holding "
        f"most of its GPUs, e.g. {shared[0]}: {said}"
    )


def group_jobs(
    pods: Iterable[GpuPod], config: KubernetesSourceConfig, known: Mapping[str, str], now: float
) -> Jobs:
    """Job records from the GPU pods. ``known`` maps a Kubernetes node name to the inventory's
    node; pods on other nodes are left out and named in a problem (never fatal), a node shared
    by jobs goes to one of them (``_owners``), and a job left with no node is no job. A job
    starts when its first pod started (``now`` if none has) and ends when its pods'
    ``activeDeadlineSeconds`` run out, the latest (no deadline: never)."""
    by_job: dict[str, list[GpuPod]] = {}
    unknown: list[GpuPod] = []
    for pod in pods:
        if pod.node in known:
            by_job.setdefault(pod.job, []).append(pod)
        else:
            unknown.append(pod)
    problems: list[str] = []
    if unknown:
        nodes = sorted({p.node for p in unknown})
        problems.append(
            f"{len(unknown)} GPU pod(s) on {len(nodes)} node(s) not in the inventory, left out: "
            + ", ".join(nodes[:5]) + (" ..." if len(nodes) > 5 else "")
            + f" (e.g. pod {unknown[0].namespace}/{unknown[0].name})"
        )  # fmt: skip
    owner, shared = _owners(by_job, known)
    if shared:
        problems.append(shared)
    records: list[JobRecord] = []
    for job, members in sorted(by_job.items()):
        nodes_of = tuple(sorted({known[p.node] for p in members if owner[known[p.node]] == job}))
        if not nodes_of:
            continue
        starts = [p.start for p in members if p.start is not None]
        start = min(starts) if starts else now
        ends = [p.start + p.deadline_s for p in members if p.start is not None and p.deadline_s is not None]
        end = max(ends) if ends and len(ends) == len(members) else math.inf
        storages = sorted({p.storage for p in members if p.storage})
        if len(storages) > 1:
            problems.append(
                f"job {job}: pods name different storage ({', '.join(storages)}); {storages[0]} used"
            )
        records.append(
            JobRecord(job, _class(members, config, problems), nodes_of, start, end if end > start else math.inf,
                      storages[0] if storages else "")
        )  # fmt: skip
    return Jobs(tuple(records), tuple(problems))
