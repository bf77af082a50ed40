"""The run's record: goodput and ETTR over time, the states of a focus domain's nodes, and the
result (per-job buckets, drains, actions, what each fault cost and when it was detected)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from seamguard.model.entities import EntityKind
from seamguard.twin.fleet import domain_nodes
from seamguard.twin.jobs import TrainingJob
from seamguard.twin.results import DrainRecord, FaultOutcome, JobResult, RunResult
from seamguard.twin.scope import fault_scope
from seamguard.twin.world import World

if TYPE_CHECKING:
    from seamguard.twin.sim import Twin

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
TIMELINE_BINS = 240
FOCUS_MAX_NODES = 48
DRAINED_CODE, REPAIR_CODE = 7, 8


@dataclass(frozen=True)
class Timeline:
    """Per time bin: progress and reserved GPU-seconds, useful work so far at the bin's end, and
    the focus nodes' states (the arrays fill in place as the run goes)."""

    bins: int
    progress: FloatArray
    reserved: FloatArray
    kept: FloatArray  # useful work so far, all jobs, at each bin's end
    focus_title: str
    focus: IntArray
    focus_states: npt.NDArray[np.int8]


def new_timeline(world: World) -> Timeline:
    n_steps = max(math.ceil((world.end - world.start) / world.tick_s), 1)
    bins = min(TIMELINE_BINS, n_steps)
    title, focus = focus_domain(world)
    return Timeline(
        bins, np.zeros(bins), np.zeros(bins), np.full(bins, np.nan), title, focus,
        np.zeros((focus.size, bins), dtype=np.int8),
    )  # fmt: skip


def sample(twin: Twin, t0: float, t1: float, dt: float) -> None:
    """Charge the step to its bin; at a bin's end, record the work kept and the focus states."""
    w, tl = twin.world, twin.timeline
    b = min(int((t0 - w.start) / (w.end - w.start) * tl.bins), tl.bins - 1)
    reserved = sum(j.gpus for j in twin.jobs if j.start <= t0 < j.end)
    tl.reserved[b] += reserved * dt
    tl.progress[b] += twin.made
    nb = min(int((t1 - w.start) / (w.end - w.start) * tl.bins), tl.bins - 1)
    if nb != b or t1 >= w.end:
        tl.kept[b] = twin.kept()
    if tl.focus.size and (nb != b or t1 >= w.end):
        st = twin.policy.node_states()[tl.focus].astype(np.int8)
        st[twin.fleet.drained[tl.focus]] = DRAINED_CODE
        st[twin.fleet.in_repair[tl.focus]] = REPAIR_CODE
        tl.focus_states[:, b] = st


def focus_domain(world: World) -> tuple[str, IntArray]:
    """The nodes the state timeline shows: the first harmful declared fault's domain, else the
    first job's nodes."""
    for f in world.faults:
        if f.source == "declared" and not f.benign:
            nodes = domain_nodes(world.topology, f)
            if nodes.size:
                return f"{f.kind} on {f.target}", nodes[:FOCUS_MAX_NODES]
    first = world.initial_nodes[0]
    return f"job {world.scenario.jobs[0].name}", first[:FOCUS_MAX_NODES]


def result(twin: Twin, wall_s: float) -> RunResult:
    w, tl = twin.world, twin.timeline
    jobs = []
    for j in twin.jobs:
        span = max(min(j.end, w.end) - j.start, 0.0)
        jobs.append(
            JobResult(
                name=j.spec.name, job_class=j.spec.job_class.value, gpus=j.gpus, reserved_gpu_s=span * j.gpus,
                buckets=tuple(float(x) for x in j.buckets), failures=j.failures, restarts=j.restarts,
                saves=j.saves if isinstance(j, TrainingJob) else 0,
                healthy_wait_gpu_s=j.healthy_wait if isinstance(j, TrainingJob) else 0.0,
            )
        )  # fmt: skip
    names = twin.topology.names[EntityKind.NODE]
    drains = [
        DrainRecord(d.t, f"node/{names[d.node]}", d.actor, d.false, d.reason) for d in twin.fleet.drains
    ]
    prog = np.where(tl.reserved > 0, tl.progress / np.maximum(tl.reserved, 1e-9), np.nan)
    reserved = np.cumsum(tl.reserved)
    kept = np.where(reserved > 0, tl.kept / np.maximum(reserved, 1e-9), np.nan)
    edges = np.linspace(w.start, w.end, tl.bins + 1)
    return RunResult(
        scenario=w.scenario.name, policy=twin.policy_name, seed=w.seed, start=w.start, end=w.end,
        node_days=twin.n_nodes * (w.end - w.start) / 86400.0, jobs=jobs, faults=outcomes(twin),
        drains=drains, actions=dict(twin.actions), timeline_t=(edges[:-1] + edges[1:]) / 2,
        timeline_goodput=prog, timeline_ettr=kept, focus_nodes=[f"node/{names[n]}" for n in tl.focus.tolist()],
        focus_states=tl.focus_states, focus_title=tl.focus_title,
        transitions=len(getattr(twin.policy, "transitions", [])), wall_s=wall_s, engine_ticks=twin.engine_ticks,
        observed_node_days=twin.observed_node_s / 86400.0, outcomes=dict(getattr(twin.policy, "outcomes", {})),
        acted=list(getattr(twin.policy, "acted", [])),
        serving=twin.serving.summary() if twin.serving is not None else None,
    )  # fmt: skip


def outcomes(twin: Twin) -> list[FaultOutcome]:
    """Per fault: when it first cost something, and when (whether) the policy flagged it."""
    dets = sorted(twin.policy.detections, key=lambda d: d.t)
    out = []
    for f in twin.faults:
        scope = fault_scope(twin.world, f)
        early = f.onset - (twin.lead if twin.policy_name == "oracle" else 0.0)
        hit = next((d.t for d in dets if d.t >= early and d.entity in scope), math.inf)
        impact = min(f.hard_at, twin.impact.get(f.fid, math.inf))
        deadline = f.hard_at if f.hard else f.end
        missed = f.gray and not hit < deadline
        out.append(FaultOutcome(f.fid, f.kind, f.target, f.source, f.benign, f.gray, f.onset, impact, f.hard_at,
                                hit, missed))  # fmt: skip
    return out
