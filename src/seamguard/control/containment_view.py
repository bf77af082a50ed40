"""What the containment stage reads of the engine (``EngineView``), and the per-GPU and per-job
figures it values a domain with: each rank's pace now, each job's restart, save and failure costs,
each part's excess failure rate, the fault's expected duration. Apart from ``control.containment``
to keep each module small; the valuation itself is ``economics.containment``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.config import Config
from seamguard.control.spares import spares_by_class
from seamguard.economics.containment import Jobs
from seamguard.economics.hazard import part_rates
from seamguard.economics.job_value import JobEconomics, job_restart_s
from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology
from seamguard.model.workload import Workload
from seamguard.scoring.groupstats import group_median

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class EngineView:
    """What the stage reads of the engine at this tick (``Controller.tick`` builds it)."""

    config: Config
    topology: Topology
    workload: Workload
    states: IntArray  # per entity, this tick's state
    lemons: BoolArray  # per node
    gpu_slowdown: FloatArray  # per GPU: its sustained slowdown over its job's median
    gfs_precursor: FloatArray  # GFS over the failure precursors only (hazard.precursors)
    prs_precursor: FloatArray
    nominal_rate: FloatArray  # per entity, failures per second with no score
    hazard_scale: float  # the fleet's observed failure rate against nominal
    economics: JobEconomics | None
    save_s: FloatArray  # per job, the blocking time of its chosen save (NaN: none)
    criticality: FloatArray  # per job, its weight before any economics
    step_time: FloatArray | None = None  # per GPU, this tick's step time (None: not reported)
    forced: BoolArray | None = None  # per entity: hard evidence holds it at quarantine or worse (an XID)
    held_nodes: IntArray | None = None  # nodes the safety layer holds out of service: no spares
    now: float = float("-inf")  # the tick's time: a job's remaining run time is its end less this
    trip_in_s: FloatArray | None = (
        None  # per GPU, when its heat's trend reaches shutdown (inf: not heading there)
    )
    fabric_slowdown: FloatArray | None = (
        None  # per job, its pace lost to its fabric (``control.fabric_pace``)
    )


def gpu_trip_in(view: EngineView) -> FloatArray:
    """Per GPU, seconds until its heat reaches shutdown (``control.thermal_trip``; inf: none)."""
    if view.trip_in_s is None:
        return np.full(view.topology.count(EntityKind.GPU), np.inf)
    return view.trip_in_s


def paced(view: EngineView) -> BoolArray:
    """Per job, whether any of its ranks reports a step time this tick."""
    seen = np.zeros(len(view.topology.jobs), dtype=bool)
    if view.step_time is not None:
        ok = np.isfinite(view.step_time) & (view.workload.gpu_job >= 0)
        seen[np.unique(view.workload.gpu_job[ok])] = True
    return seen


def nodes_lacking(topo: Topology, workload: Workload) -> IntArray:
    """Per job, the nodes it lacks against its job record's width: a job restarting after a drain
    or an island holds the nodes it kept and waits for the rest (the scheduler's pending demand,
    as far as the engine sees it). A job absent from the placement lacks none: it may have ended,
    and a scheduler that requeues it reports no nodes for it."""
    placed_at = workload.node_job
    if not topo.jobs or not placed_at.size:
        return np.zeros(len(topo.jobs), dtype=np.int64)
    known = set(topo.names[EntityKind.NODE])
    width = np.array([sum(n in known for n in j.nodes) for j in topo.jobs], dtype=np.int64)
    placed = np.bincount(placed_at[placed_at >= 0], minlength=width.size)
    lacking: IntArray = np.where(placed > 0, np.maximum(width - placed, 0), 0).astype(np.int64)
    return lacking


def nodes_short(
    config: Config, topo: Topology, workload: Workload, states: IntArray, lemons: BoolArray | None,
    held: IntArray, now: float,
) -> int:  # fmt: skip
    """The nodes waiting jobs lack beyond the spares their class has (``control.spares``: free,
    not held, admitted for it). A job waiting while such spares are free is about to take them
    (the scheduler places on the admitted first), so nothing gray need stay in service for it."""
    lacking = nodes_lacking(topo, workload)
    if not lacking.any():
        return 0
    spares = spares_by_class(config, topo, workload, states, lemons, held, now)
    classes = np.array([j.job_class.value for j in topo.jobs])
    need = {c: int(lacking[classes == c.value].sum()) for c in spares}
    return sum(max(n - int(spares[c].sum()), 0) for c, n in need.items())


def slowdown_now(view: EngineView) -> FloatArray:
    """Per GPU, its slowdown over its job's median: the sustained one, or this tick's if larger.

    The sustained pace (``economics.smooth_s``) lags a fault that just struck, and a quarantine is
    valued once, when it is entered: the rank's pace this tick counts as soon as it is seen.
    """
    sustained = np.nan_to_num(view.gpu_slowdown)
    if view.step_time is None or not view.topology.jobs:  # no job, no pace to compare
        return sustained
    jobs = view.workload.gpu_job
    median, _ = group_median(view.step_time, jobs, len(view.topology.jobs))
    with np.errstate(divide="ignore", invalid="ignore"):
        now = view.step_time / median[np.maximum(jobs, 0)] - 1.0
    return np.maximum(sustained, np.where((jobs >= 0) & np.isfinite(now), now, 0.0))


def duration_s(cfg: Config, topo: Topology, cause: int, domain: int) -> float:
    """The cause's kind's expected fault duration, else the domain's (a GPU's fault drains its node)."""
    durations = cfg.economics.fault_duration_s
    for kind in (topo.kind_of(cause), topo.kind_of(domain)):
        if kind in durations:
            return durations[kind]
    raise ValueError(
        f"containment: economics.fault_duration_s has no {topo.kind_of(cause).value} "
        f"(quarantine of {topo.ids[cause]}): add how long its faults last"
    )


def part_excess(view: EngineView) -> FloatArray:
    """Per entity, the failures per second its scores add over nominal (``economics.hazard``)."""
    rates = part_rates(view.config.hazard, view.topology, view.gfs_precursor, view.prs_precursor)
    return np.clip((rates - view.nominal_rate) * view.hazard_scale, 0.0, None)


def job_figures(view: EngineView, columns: IntArray) -> Jobs:
    """Per job in ``columns``: what a restart, a save and a failure cost it, and its weight."""
    econ = view.economics
    restart = job_restart_s(view.config, view.topology)[columns]
    weight = view.criticality[columns]
    since = np.zeros(columns.size)
    loss = restart.copy()
    if econ is not None:
        weight = np.where(np.isfinite(econ.weight[columns]), econ.weight[columns], weight)
        restart = np.where(np.isfinite(econ.restart_s[columns]), econ.restart_s[columns], restart)
        loss = np.where(
            np.isfinite(econ.loss_per_failure_s[columns]), econ.loss_per_failure_s[columns], restart
        )
        # Unknown age of the last copy: half the planned interval, what a failure redoes on average.
        since = np.where(
            np.isfinite(econ.since_durable_s[columns]), econ.since_durable_s[columns], loss - restart
        )
    ends = np.array([view.topology.jobs[j].end for j in columns.tolist()], dtype=np.float64)
    return Jobs(
        remaining_h=np.maximum(ends - view.now, 0.0) / 3600.0,
        gpus=view.workload.job_gpus[columns].astype(np.float64),
        sync=view.workload.job_sync[columns],
        weight=weight,
        restart_h=restart / 3600.0,
        since_h=np.maximum(since, 0.0) / 3600.0,
        save_h=view.save_s[columns] / 3600.0,
        loss_h=loss / 3600.0,
    )
