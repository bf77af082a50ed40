"""What containing a fault domain costs now, against tolerating it: island, move, checkpoint or wait.

Quarantining a domain (a CDU, a rack, a node) stops the fault reaching the work on it, but it is
not free: the work has to restart somewhere, and where there is nowhere to go, the domain's
capacity sits idle and the work on it stops. Every option is valued in GPU-hours over the fault's
expected remaining duration ``T`` (``economics.fault_duration_s``), or the job's remaining run
time if it ends first (its time limit: a restart that pays back over a day buys nothing to a job
that ends within the hour). As in ``valuation``, what an
action spends (a restart, a save) is plain GPU-hours, and what a job loses while it runs impaired
or stopped is weighted by its criticality ``w`` (``economics.criticality_weight``, raised by
deadline risk). ``A`` is the GPUs of a job the fault holds back: a synchronous job runs at the pace
of its slowest rank and stops when any rank fails or leaves, so all of its GPUs; any other job
only its GPUs inside the domain.

* **tolerate** (restrict admission only): ``w x A x (slowdown + excess_rate x loss_per_failure) x T``,
  plus a GPU's thermal trip ``w x A x P(trip within T) x loss_per_failure`` (a part heading for its
  shutdown temperature fails once, at a time its trend projects, not at a rate), plus, when the last
  save is older than a failure's average rework, the first failure's extra rework
  ``w x A x P(a failure or trip within T) x (since - average rework)``. A job that finds no spare
  for the failed part's node waits for its repair (``economics.repair_s``, or until the job ends):
  ``w x A x P(a failure or trip within T) x repair``. The repair outlasts the fault: a part that
  tripped is out until someone has looked at it, where an island holds the domain only while the
  fault lasts.
* **checkpoint now** (and restrict admission): tolerate without that extra rework, plus the save
  ``gpus x save``.
* **move** only the jobs for which moving pays (the critical ones) and that find spares: each
  restarts, ``A x (restart + restore + since)``; the others tolerate.
* **island**: every job leaves the domain. One that finds spares restarts on them; one that does
  not holds its capacity idle: its work stops for ``T`` (``w x A x T``), then restarts.

Spare capacity is what the scheduler could really use: free nodes outside the domain admissible
for the job's class (``control.admissibility``), handed out by weight, highest first. A spare is
idle capacity already, so running moved work on it costs nothing beyond the restart (a spare taken
now is not kept for the next failure: not valued). A domain's free GPUs are held out by every
option (a quarantined domain admits nothing new), so they are left out of every sum. Every term is
linear in GPUs, so a 16-GPU cluster and a 16,384-GPU one with the same shares decide alike. The
cheapest option wins; a tie goes to the less disruptive one (the order above). Vectorised over
(domain, job) matrices: no per-GPU loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class Option(IntEnum):
    """Least disruptive first: ties go to the lower value."""

    TOLERATE = 0
    CHECKPOINT = 1
    MOVE = 2
    ISLAND = 3

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    Option.TOLERATE: "tolerate, restrict admission",
    Option.CHECKPOINT: "tolerate, checkpoint now, restrict admission",
    Option.MOVE: "move the critical job(s) out, restrict admission",
    Option.ISLAND: "island the domain",
}


@dataclass(frozen=True)
class Jobs:
    """Per job (the J columns), in hours and GPUs."""

    gpus: FloatArray
    sync: BoolArray  # a synchronous job: paced by its slowest rank, stopped by any rank's failure
    weight: FloatArray  # criticality x deadline risk
    restart_h: FloatArray  # restart + restore of a planned move
    since_h: FloatArray  # work since the last durable copy: what a restart or failure redoes
    save_h: FloatArray  # blocking time of a save now; NaN: the job cannot save on demand
    loss_h: FloatArray  # wall time one failure costs: restart, restore, the average rework
    remaining_h: FloatArray  # time the job still runs (its time limit; inf: open-ended)


@dataclass(frozen=True)
class Domains:
    """Per domain (D rows) and per (domain, job)."""

    duration_h: FloatArray  # (D,) the fault's expected remaining duration
    in_nodes: IntArray  # (D, J) the job's nodes inside the domain
    in_gpus: FloatArray  # (D, J) the job's GPUs inside the domain
    slowdown: FloatArray  # (D, J) the share of its pace the fault costs the job
    excess_per_h: FloatArray  # (D, J) failures per hour the domain's parts add to the job
    spare_nodes: IntArray  # (D, J) free nodes outside the domain admissible for the job's class
    trip_p: FloatArray  # (D, J) probability one of the job's GPUs in the domain trips on heat within T
    repair_h: FloatArray  # (D,) how long a part that failed stays out: a job with no spare waits


@dataclass(frozen=True)
class Valuation:
    """Per domain: every option's cost (GPU-hours, inf: not available), the choice, and the parts."""

    cost: FloatArray  # (D, 4), columns in ``Option`` order
    choice: IntArray  # (D,) an ``Option`` value
    moved: BoolArray  # (D, J) jobs the chosen option moves out (island: all that find spares)
    stopped: BoolArray  # (D, J) jobs islanding would stop for want of spares
    idle_gpus: FloatArray  # (D,) GPUs islanding holds idle: the work that finds no spares stops
    island_idle_gpu_h: FloatArray  # (D,) what that idle capacity costs over T (weighted)
    island_restart_gpu_h: FloatArray  # (D,) the restarts islanding forces
    tolerate_slowdown_gpu_h: FloatArray  # (D,) of tolerating: the pace lost...
    tolerate_risk_gpu_h: FloatArray  # (D,) ...and the failures expected


def _check(jobs: Jobs, domains: Domains) -> tuple[int, int]:
    """Shapes and values, named: a wrong input would silently decide the wrong thing."""
    n_jobs = jobs.gpus.shape[0]
    for name in ("sync", "weight", "restart_h", "since_h", "save_h", "loss_h", "remaining_h"):
        if getattr(jobs, name).shape != (n_jobs,):
            raise ValueError(
                f"containment: jobs.{name} has shape {getattr(jobs, name).shape}, expected ({n_jobs},)"
            )
    n_dom = domains.duration_h.shape[0]
    if domains.repair_h.shape != (n_dom,):
        raise ValueError(
            f"containment: domains.repair_h has shape {domains.repair_h.shape}, expected ({n_dom},)"
        )
    for name in ("in_nodes", "in_gpus", "slowdown", "excess_per_h", "spare_nodes", "trip_p"):
        if getattr(domains, name).shape != (n_dom, n_jobs):
            raise ValueError(
                f"containment: domains.{name} has shape {getattr(domains, name).shape}, expected ({n_dom}, {n_jobs})"
            )
    for where, values in (
        ("domains.duration_h", domains.duration_h),
        ("domains.in_gpus", domains.in_gpus),
        ("domains.excess_per_h", domains.excess_per_h),
        ("domains.repair_h", domains.repair_h),
        ("jobs.gpus", jobs.gpus),
        ("jobs.weight", jobs.weight),
        ("jobs.restart_h", jobs.restart_h),
        ("jobs.since_h", jobs.since_h),
        ("jobs.loss_h", jobs.loss_h),
        (
            "jobs.remaining_h",
            np.where(np.isposinf(jobs.remaining_h), 0.0, jobs.remaining_h),
        ),  # inf: open-ended
    ):
        bad = ~(np.isfinite(values) & (values >= 0))
        if bad.any():
            at = np.argwhere(bad)[0].tolist()
            raise ValueError(f"containment: {where}{at} must be finite and >= 0, got {values[tuple(at)]}")
    bad = ~((domains.trip_p >= 0) & (domains.trip_p <= 1))
    if bad.any():
        at = np.argwhere(bad)[0].tolist()
        raise ValueError(
            f"containment: domains.trip_p{at} must be a probability, got {domains.trip_p[tuple(at)]}"
        )
    return n_dom, n_jobs


def value_containment(jobs: Jobs, domains: Domains) -> Valuation:
    """Every option for every domain, and the cheapest (ties: the least disruptive)."""
    n_dom, _ = _check(jobs, domains)
    on = domains.in_nodes > 0
    hours = np.minimum(domains.duration_h[:, None], jobs.remaining_h[None, :])  # the fault, or the job, ends
    w = jobs.weight[None, :]
    # A: the GPUs the fault holds back (a synchronous job: all of them)
    held = np.where(jobs.sync[None, :], jobs.gpus[None, :], domains.in_gpus) * on
    slow = w * held * np.clip(np.nan_to_num(domains.slowdown), 0.0, None) * hours
    # Failures at the excess rate, each costing ``loss_h`` (restart, restore, the average rework),
    # the first one more: it redoes everything since the last save, beyond the average rework.
    p_any = 1.0 - np.exp(-domains.excess_per_h * hours) * (1.0 - domains.trip_p)  # a failure or a trip
    stale = np.maximum(jobs.since_h - np.maximum(jobs.loss_h - jobs.restart_h, 0.0), 0.0)[None, :]
    first = w * held * p_any * stale  # what a save now would spare
    failures = domains.excess_per_h * hours + domains.trip_p  # expected, each costing loss_h
    # No spare for the failed part's node: the job waits out its repair, however long the fault.
    waits = domains.spare_nodes == 0
    repair = np.where(waits, np.minimum(domains.repair_h[:, None], jobs.remaining_h[None, :]), 0.0)
    risk = w * held * (failures * jobs.loss_h[None, :] + p_any * repair) + first
    tolerate = slow + risk
    can_save = np.isfinite(jobs.save_h)[None, :] & on
    checkpoint = np.where(
        can_save, tolerate - first + jobs.gpus[None, :] * np.nan_to_num(jobs.save_h), tolerate
    )
    restart = held * (jobs.restart_h + jobs.since_h)[None, :]  # a move: restart, restore, redo since the save
    stopped_cost = restart + w * held * hours  # nowhere to go: its work stops for T, then restarts

    # Spares go to jobs by weight, highest first (stable: topology order among equals).
    order = np.argsort(-jobs.weight, kind="stable")
    back = np.argsort(order)

    def fits(demand: IntArray) -> BoolArray:
        need = np.cumsum(demand[:, order], axis=1)[:, back]
        ok: BoolArray = need <= domains.spare_nodes
        return ok

    placed_all = fits(np.where(on, domains.in_nodes, 0)) & on
    stopped = on & ~placed_all
    island_idle = np.where(stopped, stopped_cost - restart, 0.0).sum(axis=1)
    island = np.where(placed_all, restart, np.where(on, stopped_cost, 0.0)).sum(axis=1)
    wants = on & (restart < tolerate)  # a tie stays: moving is the more disruptive
    placed = fits(np.where(wants, domains.in_nodes, 0)) & wants
    move = np.where(placed, restart, tolerate).sum(axis=1)
    # Moving nothing is tolerating; moving every job is islanding.
    distinct = placed.any(axis=1) & (placed != on).any(axis=1)
    move = np.where(distinct, move, np.inf)

    cost = np.stack([tolerate.sum(axis=1), checkpoint.sum(axis=1), move, island], axis=1)
    choice = np.zeros(n_dom, dtype=np.int64)
    best = cost[:, 0].copy()
    for option in (Option.CHECKPOINT, Option.MOVE, Option.ISLAND):
        cheaper = cost[:, option] < best  # strictly: a tie keeps the less disruptive option
        choice = np.where(cheaper, int(option), choice)
        best = np.where(cheaper, cost[:, option], best)
    moved = np.where(
        (choice == Option.MOVE)[:, None],
        placed,
        np.where((choice == Option.ISLAND)[:, None], placed_all, False),
    )
    return Valuation(
        cost=cost,
        choice=choice,
        moved=moved,
        stopped=stopped,
        idle_gpus=np.where(stopped, held, 0.0).sum(axis=1),
        island_idle_gpu_h=island_idle,
        island_restart_gpu_h=island - island_idle,
        tolerate_slowdown_gpu_h=slow.sum(axis=1),
        tolerate_risk_gpu_h=risk.sum(axis=1),
    )
