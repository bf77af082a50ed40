"""What every policy offers the twin, and what the twin lets a policy know.

A policy sees telemetry (``observe``) and the scheduler's placement (``FleetView``), answers
with actions, says which nodes it admits per job class, and sets each training job's
checkpoint interval. Only the oracle is also handed the fault records.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from seamguard.economics.checkpoint_math import daly_interval
from seamguard.economics.checkpoint_modes import Mode
from seamguard.model.entities import EntityKind
from seamguard.model.states import JobClass, State
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.twin.actions import Action, Detection
from seamguard.twin.faults import FAULT_KINDS
from seamguard.twin.jobs import TrainingJob
from seamguard.twin.physics.storage import memory_copy_seconds, transfer_seconds
from seamguard.twin.scenario import Hazard, Job, hard_default
from seamguard.twin.world import DAY_S, World

IntArray = npt.NDArray[np.int64]
# Llama 3 405B: 419 unexpected interruptions in 54 days on 16,384 GPUs (Dubey et al. 2024, table 5).
NOMINAL_FAILURES_PER_GPU_DAY = 419 / (16384 * 54)


class FleetView(Protocol):
    """What a scheduler tells any policy: where jobs run and whether a swap can be staffed."""

    def job_of(self, node: int) -> int: ...
    def is_training(self, job: int) -> bool: ...
    def is_running(self, job: int) -> bool: ...
    def can_replace(self, job: int, count: int, admission: IntArray) -> bool: ...
    def placement(self) -> dict[str, list[str]]: ...
    def placement_version(self) -> int: ...
    def durable_age(self, job: int) -> float: ...


class Policy(Protocol):
    name: str
    detections: list[Detection]

    def interval_s(self, job: TrainingJob) -> float: ...
    def checkpoint_choice(self, job: TrainingJob) -> tuple[Mode, int]: ...
    def observe(
        self, now: float, batches: Sequence[tuple[int, TelemetryBatch]], view: FleetView
    ) -> list[Action]: ...
    def admission(self, job_class: JobClass) -> IntArray: ...
    def returned(self, now: float, nodes: IntArray, view: FleetView) -> list[Action]:
        """The site repaired these nodes and put them back; what the policy does about it."""
        ...

    def node_states(self) -> IntArray: ...
    def unsettled_nodes(self, cell_id: int) -> IntArray: ...


def full_save(job: TrainingJob) -> tuple[Mode, int]:
    """What a timer-driven policy does: a full save to the job's current backend."""
    return Mode.FULL, job.storage


def nominal_save_s(world: World, spec: Job, mode: Mode = Mode.FULL) -> float:
    """A save on an idle, healthy backend: what a static formula assumes it costs (a tiered save
    blocks only for its memory copy, when the hosts have room for one)."""
    sp = world.scenario.physics.storage
    full = transfer_seconds(spec.checkpoint_gb, sp.write_gbps, 1.0, sp.overhead_s)
    if mode is Mode.TIERED:
        gpus = spec.nodes * world.scenario.cluster.gpus_per_node
        return min(memory_copy_seconds(sp, spec.checkpoint_gb, gpus, spec.nodes), full)
    return full


def save_ahead_s(world: World) -> float:
    """How far ahead of a fault one must start to save first: the largest training job's save
    on an idle backend plus two ticks, and never less than three ticks (a counter needs two
    samples for a rate). The oracle acts this early; windows open at least this early."""
    tick = world.tick_s
    save = max((nominal_save_s(world, j) for j in world.scenario.jobs if j.training), default=0.0)
    return max(save + 2 * tick, 3 * tick)


def job_mtbf_s(world: World, job: TrainingJob, mtbf_h: float | None) -> float:
    """Mean time between interruptions of a job from the scenario's nominal hazard rates.

    Every hard hazard on the job's GPUs, nodes and uplinks (raised by ``lemon_boost``) plus the
    job's own software faults; a scenario without hazards falls back to Llama 3's published fleet
    rate per GPU.
    """
    if mtbf_h is not None:
        return mtbf_h * 3600.0
    sc = world.scenario
    nodes = job.spec.nodes
    gpus = nodes * sc.cluster.gpus_per_node
    hard = _hard(world)
    node_day = _node_day(world)
    per_day = node_day * nodes * lemon_boost(world)
    per_day += sum(h.per_component_day * sc.hazard_scale * gpus for h in hard
                   if FAULT_KINDS[h.kind].target is EntityKind.JOB)  # fmt: skip
    if not sc.hazards:
        per_day = NOMINAL_FAILURES_PER_GPU_DAY * gpus
    return DAY_S / per_day if per_day > 0 else math.inf


def _node_day(world: World) -> float:
    """Hard failures per node-day of the GPU, node and uplink hazards, at ``hazard_scale``."""
    sc = world.scenario
    per_node = _per_node(world)
    hard = _hard(world)
    return (
        sum(h.per_component_day * per_node.get(FAULT_KINDS[h.kind].target, 0.0) for h in hard)
        * sc.hazard_scale
    )


def _hard(world: World) -> list[Hazard]:
    """The scenario's hazards that end in a hard failure."""
    return [h for h in world.scenario.hazards if hard_default(h.kind, h.hard)]


def _per_node(world: World) -> dict[EntityKind, float]:
    """Components of each hazard target kind per node."""
    return {EntityKind.GPU: world.scenario.cluster.gpus_per_node, EntityKind.NODE: 1.0, EntityKind.LINK: 1.0}


def lemon_boost(world: World) -> float:
    """How much the fleet's lemon nodes raise its hardware failure rate per node-day *of service*:
    a lemon fails only while in service and spends the rest of its life in repair, so its share is
    weighted by its availability. What an operator knows of their fleet from its history; both
    ``young-daly`` and ``seamguard`` are told it (neither is told which nodes are the lemons)."""
    sc = world.scenario
    node_day = _node_day(world)
    if not sc.lemons.nodes or node_day <= 0:
        return 1.0
    per_node = _per_node(world)
    hard = _hard(world)
    repair_days = sum(
        h.per_component_day * per_node.get(FAULT_KINDS[h.kind].target, 0.0)
        * (sc.operations.repair_h if h.repair_h is None else h.repair_h) / 24.0
        for h in hard
    ) * sc.hazard_scale / node_day  # fmt: skip
    lemon_rate = node_day * sc.lemons.multiplier
    availability = 1.0 / (1.0 + lemon_rate * repair_days)
    share = sc.lemons.nodes / max(sc.cluster.nodes, 1)
    return 1.0 + share * (sc.lemons.multiplier * availability - 1.0)


def static_interval(world: World, job: TrainingJob, mtbf_h: float | None, mode: Mode = Mode.FULL) -> float:
    """Daly's interval from nominal costs and rates: the best a static timer can do."""
    interval = daly_interval(nominal_save_s(world, job.spec, mode), job_mtbf_s(world, job, mtbf_h))
    return min(interval, world.scenario.duration_s)


def no_nodes() -> IntArray:
    return np.zeros(0, dtype=np.int64)


def all_healthy(n: int) -> IntArray:
    return np.full(n, int(State.HEALTHY), dtype=np.int64)
