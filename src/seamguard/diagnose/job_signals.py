"""What a job's diagnosis reads at one tick, per running job, from the engine: its pace, its ranks'
spread, its GPUs' use and throttling, its checkpoints, and the unwell parts it depends on, by the
seam they sit on (fabric, storage, facilities, its own GPUs and nodes).

Per-GPU readings are reduced to per-job figures with one ``bincount`` each; the dependencies are
walked once per tick over the GPUs that run jobs. Nothing here judges: ``diagnose.modes`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.control.controller import Controller
from seamguard.model.catalog import THROTTLE_BITS
from seamguard.model.entities import EntityKind
from seamguard.model.states import State

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
CALM = (int(State.HEALTHY), int(State.UNKNOWN))
_BIT = {name: bit for bit, name in THROTTLE_BITS.items()}
THERMAL_BITS = _BIT["sw_thermal"] | _BIT["hw_thermal"] | _BIT["hw_slowdown"]
POWER_BITS = _BIT["sw_power_cap"] | _BIT["hw_power_brake"]
SEAMS = ("fabric", "storage", "facilities", "compute")
MAX_UNWELL_GPUS = 65_536  # GPUs whose unwell parents are walked a tick (a storm of every GPU: bounded)


@dataclass(frozen=True)
class JobSignals:
    now: float
    jobs: tuple[str, ...]  # running jobs' names
    index: IntArray  # each one's local job index
    gpus: FloatArray  # GPUs per job
    sync: npt.NDArray[np.bool_]  # synchronous (its ranks wait for each other)
    step_s: FloatArray  # job.step_time_s now (NaN: none fresh)
    step_seen: (
        FloatArray  # when a step last ended: job.step_time_s or any rank's gpu.step_time_s (-inf: never)
    )
    ckpt_s: FloatArray  # job.checkpoint_duration_s now (NaN: none fresh)
    util: FloatArray  # mean gpu.util_pct of its GPUs (NaN: none reported)
    rank_spread: FloatArray  # slowest rank's step time over the job's median, minus 1 (NaN: unknown)
    read_ms: FloatArray  # storage.read_latency_ms of the job's own backend now (NaN: none)
    slow_ranks: tuple[tuple[str, ...], ...]  # its ranks well over the median (pace), GPU ids
    throttled: tuple[tuple[str, ...], ...]  # its GPUs with a thermal or power throttle bit set
    unwell: dict[str, tuple[tuple[str, ...], ...]]  # seam -> per job, the unwell entities it depends on


def job_signals(controller: Controller, now: float, slow_rank: float = 0.05) -> JobSignals:
    topo, store = controller.topology, controller.store
    wl = controller.workload_at(now)
    active = np.array([j for j in wl.active if wl.job_gpus[j] > 0], dtype=np.int64)
    n_jobs = len(topo.jobs)
    gpu_job = wl.gpu_job
    on = gpu_job >= 0
    states = controller.classifier.state

    def per_job_mean(values: FloatArray) -> FloatArray:
        ok = on & np.isfinite(values)
        total = np.bincount(gpu_job[ok], weights=values[ok], minlength=n_jobs)
        count = np.bincount(gpu_job[ok], minlength=n_jobs)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def job_value(name: str) -> tuple[FloatArray, FloatArray]:
        if controller.catalog.get(name) is None:
            return np.full(n_jobs, np.nan), np.full(n_jobs, -np.inf)
        return store.current(name)[:n_jobs].astype(float), store.last_seen(name)[:n_jobs].astype(float)

    step_s, step_seen = job_value("job.step_time_s")
    ckpt_s, _ = job_value("job.checkpoint_duration_s")
    util = per_job_mean(_gpu("gpu.util_pct", controller))
    gpu_step = _gpu("gpu.step_time_s", controller)
    gpu_step_seen = _gpu_seen("gpu.step_time_s", controller)
    gpu_ids = [topo.ids[g] for g in topo.members[EntityKind.GPU].tolist()]
    bits = np.nan_to_num(_gpu("gpu.throttle_reasons", controller), nan=0.0).astype(np.int64)
    hot = ((bits & (THERMAL_BITS | POWER_BITS)) != 0) & on

    spread = np.full(n_jobs, np.nan)
    slow: list[tuple[str, ...]] = []
    throttled: list[tuple[str, ...]] = []
    # Each job's GPUs as one slice of the GPUs sorted by job: one sort a tick, not a scan per job.
    order = np.argsort(gpu_job, kind="stable")
    bounds = np.searchsorted(gpu_job[order], np.arange(n_jobs + 1))
    for j in active.tolist():
        mine = order[bounds[j] : bounds[j + 1]]
        steps = gpu_step[mine]
        if mine.size:  # a rank's report is a step too: a job-level report lost is no silence
            step_seen[j] = max(float(step_seen[j]), float(gpu_step_seen[mine].max()))
        ok = np.isfinite(steps)
        if ok.sum() >= 2:
            med = float(np.median(steps[ok]))
            spread[j] = float(steps[ok].max()) / med - 1.0 if med > 0 else np.nan
            slow.append(tuple(gpu_ids[g] for g in mine[ok][steps[ok] >= med * (1 + slow_rank)].tolist()))
        else:
            slow.append(())
        throttled.append(tuple(gpu_ids[g] for g in mine[hot[mine]].tolist()))
    unwell = _unwell_dependencies(controller, active, gpu_job, states)
    read_ms = np.full(active.size, np.nan)
    if controller.catalog.get("storage.read_latency_ms") is not None:
        reads = store.current("storage.read_latency_ms")
        backends = topo.names[EntityKind.STORAGE]
        for i, j in enumerate(active.tolist()):
            name = topo.jobs[j].storage
            if name in backends:
                read_ms[i] = float(reads[backends.index(name)])
    return JobSignals(
        now, tuple(topo.jobs[j].job for j in active.tolist()), active, wl.job_gpus[active].astype(float),
        wl.job_sync[active], step_s[active], step_seen[active], ckpt_s[active], util[active], spread[active], read_ms,
        tuple(slow), tuple(throttled), unwell,
    )  # fmt: skip


def _gpu(name: str, controller: Controller) -> FloatArray:
    n = controller.topology.count(EntityKind.GPU)
    if controller.catalog.get(name) is None:
        return np.full(n, np.nan)
    return controller.store.current(name)[:n].astype(float)


def _gpu_seen(name: str, controller: Controller) -> FloatArray:
    n = controller.topology.count(EntityKind.GPU)
    if controller.catalog.get(name) is None:
        return np.full(n, -np.inf)
    return controller.store.last_seen(name)[:n].astype(float)


def _unwell_dependencies(
    controller: Controller, active: IntArray, gpu_job: IntArray, states: IntArray
) -> dict[str, tuple[tuple[str, ...], ...]]:
    """Per seam, per running job: the unwell entities of that seam its GPUs depend on."""
    topo = controller.topology
    node = topo.gpu_node
    rack = topo.node_rack[node]
    parents: dict[str, list[tuple[EntityKind, IntArray]]] = {
        "fabric": [(EntityKind.LINK, node), (EntityKind.SWITCH, topo.node_leaf[node])],
        "storage": [(EntityKind.STORAGE, topo.node_storage[node])],
        "facilities": [(EntityKind.RACK, rack), (EntityKind.CDU, topo.rack_cdu[rack]), (EntityKind.PDU, topo.node_pdu[node])],
        "compute": [(EntityKind.GPU, np.arange(node.size)), (EntityKind.NODE, node)],
    }  # fmt: skip
    out: dict[str, tuple[tuple[str, ...], ...]] = {}
    position = {j: i for i, j in enumerate(active.tolist())}
    backends = topo.names[EntityKind.STORAGE]
    for seam, pairs in parents.items():
        rows: list[set[str]] = [set() for _ in active.tolist()]
        for kind, local in pairs:
            members = topo.members[kind]
            if members.size == 0:
                continue
            ok = (local >= 0) & (gpu_job >= 0)
            g = members[np.where(ok, local, 0)]
            bad = np.flatnonzero(ok & ~np.isin(states[g], CALM))  # few, but for a storm: bounded below
            for k in bad[:MAX_UNWELL_GPUS].tolist():
                i = position.get(int(gpu_job[k]))
                if i is not None:
                    rows[i].add(topo.ids[int(g[k])])
        if seam == "storage":  # a job's own backend (the jobs file's ``storage``) is a dependency too
            for j, i in position.items():
                name = topo.jobs[j].storage
                if name in backends and int(states[topo.index[f"storage/{name}"]]) not in CALM:
                    rows[i].add(f"storage/{name}")
        out[seam] = tuple(tuple(sorted(r)) for r in rows)
    return out
