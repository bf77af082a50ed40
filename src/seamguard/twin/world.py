"""The fixed part of one run: layout, topology, cells and the faults, shared by every policy.

Everything here is a function of (scenario, seed): two policies run on the same seed meet the
same cluster, the same per-GPU spread and the very same faults at the very same times, so their
difference is the policy's doing. Random streams are keyed, never shared: faults draw from
``[seed, 1]``, static hardware properties from ``[seed, 2]``, telemetry noise from
``[seed, 3, tick]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.errors import InputError
from seamguard.model.entities import KIND_BY_PREFIX, EntityKind
from seamguard.model.inventory import Inventory, JobRecord
from seamguard.model.topology import Topology, build_topology
from seamguard.twin.cluster import EPOCH, ClusterSpec, generate_cluster
from seamguard.twin.faults import FAULT_KINDS, Fault, hard_default, poisson_onsets, sort_faults
from seamguard.twin.scenario import Scenario

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
FAULT_STREAM, STATIC_STREAM, NOISE_STREAM = 1, 2, 3
DAY_S = 86400.0


@dataclass(frozen=True)
class World:
    scenario: Scenario
    seed: int
    start: float
    end: float
    inventory: Inventory
    topology: Topology
    initial_nodes: tuple[IntArray, ...]  # per job: the nodes it starts on (contiguous blocks, in order)
    job_storage: IntArray  # per job: storage local index
    job_fallback: IntArray  # per job: fallback storage local index, -1 if none
    job_start: npt.NDArray[np.float64]
    job_end: npt.NDArray[np.float64]
    faults: tuple[Fault, ...]
    lemons: IntArray  # node indices
    node_cell: IntArray  # cell of every node (windows mode), all 0 in full mode
    n_cells: int

    @property
    def tick_s(self) -> float:
        return self.scenario.tick_s


def build_world(scenario: Scenario, seed: int) -> World:
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    c = scenario.cluster
    spec = ClusterSpec(
        cdus=c.cdus, racks_per_cdu=c.racks_per_cdu, nodes_per_rack=c.nodes_per_rack, gpus_per_node=c.gpus_per_node,
        nodes_per_leaf=c.nodes_per_leaf, storage=c.storage[0], gpu_model=c.gpu_model,
    )  # fmt: skip
    inventory = generate_cluster(spec)
    start = math.floor(EPOCH / scenario.tick_s) * scenario.tick_s
    end = start + scenario.duration_s
    names = [n.node for n in inventory.nodes]
    job_start = np.array([start + j.start_h * 3600.0 for j in scenario.jobs])
    job_end = np.array([end if j.end_h is None else start + j.end_h * 3600.0 for j in scenario.jobs])
    records: list[JobRecord] = []
    initial: list[IntArray] = []
    at = 0
    for i_job, j in enumerate(scenario.jobs):
        block = np.arange(at, at + j.nodes, dtype=np.int64)
        at += j.nodes
        initial.append(block)
        # Each job's start and time limit, as a scheduler reports them: what a swap or a move has
        # left to pay for itself (``economics.harm``, ``economics.containment``).
        records.append(
            JobRecord(j.name, j.job_class, tuple(names[i] for i in block.tolist()), float(job_start[i_job]),
                      float(job_end[i_job]) + scenario.tick_s, scenario.storage_of(j))
        )  # fmt: skip
    topology = build_topology(inventory, records, storage=c.storage)
    sto = {name: i for i, name in enumerate(topology.names[EntityKind.STORAGE])}
    job_storage = np.array([sto[scenario.storage_of(j)] for j in scenario.jobs], dtype=np.int64)
    job_fallback = np.array(
        [sto[j.fallback_storage] if j.fallback_storage else -1 for j in scenario.jobs], np.int64
    )

    rng = np.random.default_rng([seed, FAULT_STREAM])
    lemons = np.sort(rng.choice(len(names), size=scenario.lemons.nodes, replace=False)).astype(np.int64)
    faults = sort_faults(
        _declared(scenario, topology, start, end) + _sampled(scenario, topology, lemons, start, end, rng)
    )

    if scenario.observation.mode == "windows":
        node_cell = topology.node_rack // scenario.observation.cell_racks
        n_cells = int(node_cell.max()) + 1 if node_cell.size else 0
    else:
        node_cell = np.zeros(len(names), dtype=np.int64)
        n_cells = 1
    return World(
        scenario=scenario, seed=seed, start=start, end=end, inventory=inventory, topology=topology,
        initial_nodes=tuple(initial), job_storage=job_storage, job_fallback=job_fallback, job_start=job_start,
        job_end=job_end, faults=faults, lemons=lemons, node_cell=node_cell.astype(np.int64), n_cells=n_cells,
    )  # fmt: skip


def _repair_s(scenario: Scenario, repair_h: float | None) -> float:
    return (scenario.operations.repair_h if repair_h is None else repair_h) * 3600.0


def _duration(kind: str, duration_h: float | None, onset: float, end: float) -> float:
    if not FAULT_KINDS[kind].facility:
        return math.inf
    return (end - onset + 1.0) if duration_h is None else duration_h * 3600.0


def _declared(scenario: Scenario, topology: Topology, start: float, end: float) -> list[Fault]:
    out: list[Fault] = []
    for i, f in enumerate(scenario.faults):
        gidx = topology.lookup(f.target)
        if gidx is None:
            kind = f.target.partition("/")[0]
            ek = KIND_BY_PREFIX.get(kind)
            names = topology.names[ek] if ek is not None else ()
            hint = f" (it has {kind}/{names[0]} … {kind}/{names[-1]})" if names else ""
            raise InputError(
                f"scenario {scenario.name}: faults.{i}.target", f"{f.target!r} is not in the cluster{hint}"
            )
        onset = start + f.onset_h * 3600.0
        out.append(
            Fault(
                fid=-1, kind=f.kind, target=f.target, local=int(topology.local[gidx]), onset=onset,
                ramp=f.ramp_h * 3600.0, severity=f.severity, duration=_duration(f.kind, f.duration_h, onset, end),
                hard=hard_default(f.kind, f.hard), xid=f.xid if f.xid is not None else FAULT_KINDS[f.kind].xid,
                source="declared", repair_s=_repair_s(scenario, f.repair_h),
            )
        )  # fmt: skip
    return out


def _components(topology: Topology, kind: str, scenario: Scenario) -> IntArray:
    target = FAULT_KINDS[kind].target
    if target is EntityKind.JOB:  # software faults stop training jobs; inference replicas restart alone
        return np.array([i for i, j in enumerate(scenario.jobs) if j.training], dtype=np.int64)
    return np.arange(topology.count(target), dtype=np.int64)


def _lemon_weight(
    topology: Topology, kind: str, lemons: IntArray, multiplier: float
) -> npt.NDArray[np.float64]:
    target = FAULT_KINDS[kind].target
    n = topology.count(target)
    weight = np.ones(n)
    if lemons.size == 0:
        return weight
    if target in (EntityKind.NODE, EntityKind.LINK):
        weight[lemons] = multiplier
    elif target is EntityKind.GPU:
        weight[np.isin(topology.gpu_node, lemons)] = multiplier
    return weight


def _drifting_onsets(
    rng: np.random.Generator, rate: FloatArray, scenario: Scenario, start: float, end: float
) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """Poisson onsets at ``rate``, scaled piecewise by the scenario's ``hazard_drift``."""
    steps = sorted(scenario.hazard_drift, key=lambda s: s.at_h)
    cuts = [start] + [min(max(start + s.at_h * 3600.0, start), end) for s in steps] + [end]
    scales = [1.0] + [s.scale for s in steps]
    parts = [
        poisson_onsets(rng, rate * m, a, b)
        for a, b, m in zip(cuts[:-1], cuts[1:], scales, strict=True)
        if b > a
    ]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _sampled(
    scenario: Scenario,
    topology: Topology,
    lemons: IntArray,
    start: float,
    end: float,
    rng: np.random.Generator,
) -> list[Fault]:
    """Background failures. The sampled time is the *hard* failure (what published failure
    counts count); a precursor, when the draw gives one, starts ``ramp`` before it."""
    out: list[Fault] = []
    for h in scenario.hazards:
        comps = _components(topology, h.kind, scenario)
        if comps.size == 0 or h.per_component_day <= 0:
            continue
        weight = _lemon_weight(topology, h.kind, lemons, scenario.lemons.multiplier)
        per_s = h.per_component_day * scenario.hazard_scale / DAY_S
        if FAULT_KINDS[h.kind].target is EntityKind.JOB:  # per GPU of the job
            size = np.array([scenario.jobs[j].nodes * scenario.cluster.gpus_per_node for j in comps.tolist()])
            rate = per_s * size.astype(np.float64)
        else:
            rate = np.full(comps.size, per_s) * weight[comps]
        which, when = _drifting_onsets(rng, rate, scenario, start, end)
        spec = FAULT_KINDS[h.kind]
        hard = hard_default(h.kind, h.hard)
        lo, hi = h.precursor_h
        for comp, t in zip(comps[which].tolist(), when.tolist(), strict=True):
            gray = rng.random() < h.precursor_probability
            ramp = math.exp(rng.uniform(math.log(lo), math.log(hi))) * 3600.0 if gray else 0.0
            severity = float(rng.uniform(*h.severity))
            onset = t - ramp if hard else t
            if onset < start:
                ramp, onset = max(ramp - (start - onset), 0.0), start
            name = topology.names[spec.target][comp]
            out.append(
                Fault(
                    fid=-1, kind=h.kind, target=f"{spec.target.value}/{name}", local=comp, onset=onset, ramp=ramp,
                    severity=severity, duration=_duration(h.kind, h.duration_h, onset, end), hard=hard,
                    xid=spec.xid, source=h.name, repair_s=_repair_s(scenario, h.repair_h),
                )
            )  # fmt: skip
    return out
