"""Per job and fleet-wide: how much of what is paid for survives, what is at stake, and the risk
of missing a deadline, from the live hazard, the checkpoint plan and each job's settings.

The vocabulary follows Google's ml-goodput-measurement: time a job blocks to save is badput, a
background persist is not; work done since the last copy that survives a failure is at risk.

* expected waste ``W``: the planner's expected share of wall time lost to saving, restoring and
  redoing work at the job's live failure rate (``economics.checkpoint_planner``); expected ETTR is
  ``1 - W``.
* useful throughput: GPU-hours of work that survive per reserved GPU-hour, ``1 - W`` at the
  job's pace; failure-adjusted throughput ``raw x (1 - W)`` in GPU-equivalents.
* rollback exposure: GPU-hours (and money, at ``cost_per_gpu_hour``) since the last durable
  copy: what the next failure would take.
* schedule-slip risk: with a ``deadline`` and the ``remaining_work_h`` (hours at full pace), the
  probability that failures (Poisson at the live rate, each costing a restart, a restore and
  half an interval of redone work) push the finish past the deadline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt
from scipy.stats import poisson

from seamguard.config import Config, JobCheckpointConfig
from seamguard.economics.checkpoint_modes import CostTable
from seamguard.economics.checkpoint_planner import PlanArrays
from seamguard.model.topology import Topology
from seamguard.model.world import carry

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class JobEconomics:
    """Per job (topology order); NaN where a figure does not apply (a job not running)."""

    gpus: FloatArray
    expected_waste: FloatArray
    useful_throughput: FloatArray  # surviving GPU-hours per reserved GPU-hour
    failure_adjusted_gpus: FloatArray  # raw GPU-equivalents x (1 - W)
    since_durable_s: FloatArray  # age of the last durable copy
    rollback_gpu_h: FloatArray
    rollback_cost: FloatArray
    slip_probability: FloatArray  # NaN without a deadline and remaining work
    loss_per_failure_s: FloatArray  # wall time one failure costs: restart, restore, half an interval
    weight: FloatArray  # criticality x (1 + slip_penalty x slip): how fast its losses pay for escalation
    restore_s: FloatArray  # reading back its chosen save (NaN: no plan): part of a restart's cost
    restart_s: FloatArray  # a planned restart: re-initialising (``job_restart_s``) and its restore

    def fleet(self) -> dict[str, float]:
        on = self.gpus > 0
        total = float(self.gpus[on].sum())
        return {
            "gpus": total,
            "useful_throughput": float(np.nansum(self.useful_throughput[on] * self.gpus[on]) / total) if total else math.nan,
            "failure_adjusted_gpus": float(np.nansum(self.failure_adjusted_gpus[on])),
            "rollback_gpu_h": float(np.nansum(self.rollback_gpu_h[on])),
            "rollback_cost": float(np.nansum(self.rollback_cost[on])),
        }  # fmt: skip


def job_economics(
    config: Config,
    topology: Topology,
    job_gpus: FloatArray,
    plans: PlanArrays,
    table: CostTable,
    rate_per_s: FloatArray,
    since_durable_s: FloatArray,
    now: float,
    pace: FloatArray | None = None,
) -> JobEconomics:
    n = len(topology.jobs)
    gpus = job_gpus[:n].astype(np.float64)
    pace = np.ones(n) if pace is None else pace
    specs = [config.checkpoint.for_job(j.job) for j in topology.jobs]
    cost = np.array([s.cost_per_gpu_hour for s in specs])
    rows = np.arange(n)
    has = plans.choice >= 0
    pick = np.where(has, plans.choice, 0)
    restore = (
        np.where(has, table.restore_s[rows, pick], np.nan) if table.restore_s.shape[1] else np.full(n, np.nan)
    )
    blocking = (
        np.where(has, table.blocking_s[rows, pick], np.nan)
        if table.blocking_s.shape[1]
        else np.full(n, np.nan)
    )
    tau = np.where(has, plans.interval_s, np.nan)
    restart = _restart_s(specs, config.economics.restart_cost_s) + np.nan_to_num(restore)
    loss = restart + np.where(np.isfinite(tau), tau / 2, 0.0)
    w = np.where(has, plans.expected_waste, np.nan)
    since = np.where(np.isfinite(since_durable_s), since_durable_s, np.nan)
    exposure = gpus * since / 3600.0
    slip = np.full(n, np.nan)
    for j, spec in enumerate(specs):
        if spec.deadline is not None and spec.remaining_work_h is not None and gpus[j] > 0:
            steady = float(blocking[j] / tau[j]) if np.isfinite(tau[j]) and tau[j] > 0 else 0.0
            slip[j] = slip_probability(
                spec.remaining_work_h * 3600.0 / max(float(pace[j]), 1e-9) / max(1.0 - steady, 1e-9),
                spec.deadline.timestamp() - now,
                float(rate_per_s[j]),
                float(loss[j]),
            )
    crit = np.array([config.economics.criticality_weight[s.criticality] for s in specs])
    weight = crit * (1.0 + config.economics.slip_penalty * np.nan_to_num(slip))
    running = gpus > 0
    return JobEconomics(
        gpus=gpus,
        expected_waste=np.where(running, w, np.nan),
        useful_throughput=np.where(running, pace * (1.0 - w), np.nan),
        failure_adjusted_gpus=np.where(running, gpus * pace * (1.0 - w), np.nan),
        since_durable_s=np.where(running, since, np.nan),
        rollback_gpu_h=np.where(running, exposure, np.nan),
        rollback_cost=np.where(running, exposure * cost, np.nan),
        slip_probability=slip,
        loss_per_failure_s=loss,
        weight=weight,
        restore_s=restore,
        restart_s=restart,
    )


def job_restart_s(config: Config, topology: Topology) -> FloatArray:
    """Per job (topology order): re-initialising it after a restart, its restore excluded: its own
    ``checkpoint.jobs.<name>.restart_s``, else the fleet's ``economics.restart_cost_s``. A cluster
    whose restarts take 20 minutes prices every swap, drain and failure at 20 minutes, not at the default."""
    return _restart_s(
        [config.checkpoint.for_job(j.job) for j in topology.jobs], config.economics.restart_cost_s
    )


def _restart_s(specs: list[JobCheckpointConfig], default: float) -> FloatArray:
    return np.array([default if s.restart_s is None else s.restart_s for s in specs], dtype=np.float64)


def slip_probability(
    needed_s: float, available_s: float, rate_per_s: float, loss_per_failure_s: float
) -> float:
    """P(the work does not fit before the deadline): failures ~ Poisson(rate x available), each
    costing ``loss_per_failure_s`` of wall time on top of the ``needed_s`` without failures."""
    if available_s <= needed_s:
        return 1.0
    if rate_per_s <= 0:
        return 0.0
    room = int((available_s - needed_s) // max(loss_per_failure_s, 1e-9))
    return float(poisson.sf(room, rate_per_s * available_s))


def carry_economics(econ: JobEconomics, jobs: npt.NDArray[np.int64], criticality: FloatArray) -> JobEconomics:
    """Per job: the figures of jobs that stay; a new job weighs its criticality until it is planned."""
    out = {f.name: carry(getattr(econ, f.name), jobs, np.nan) for f in fields(econ)}
    out["gpus"] = np.nan_to_num(out["gpus"])
    out["weight"] = np.where(jobs >= 0, out["weight"], criticality)
    return JobEconomics(**out)


def criticality_weights(config: Config, topology: Topology) -> FloatArray:
    weights = config.economics.criticality_weight
    return np.array(
        [weights[config.checkpoint.for_job(j.job).criticality] for j in topology.jobs], dtype=float
    )
