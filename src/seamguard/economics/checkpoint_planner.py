"""The checkpoint planner: which mode, where, and when, from the job's hazard now.

For every mode the job could use now (``economics.checkpoint_modes``), the expected waste per
unit of wall time at interval ``tau`` is the first-order model extended by what the mode's copy
is worth against the failure now most likely:

    W(tau) = delta / tau + (tau x (1/2 + (1 - v)) + lag x (1 - v0) + R) / M

with blocking time ``delta``, restore time ``R``, validity ``v`` (a failure the copy does not
survive rolls back one interval further, to the copy before), ``lag`` the time between the save
returning and the copy being durable, during which only its memory copy (validity ``v0``; none
for a save written straight to storage) stands in for it, and the job's live MTBF ``M`` (``economics.hazard``). Its minimum is at
``tau* = sqrt(delta M / (1/2 + 1 - v))``: Young's ``sqrt(2 delta M)`` for a copy that always
survives. The planner takes the mode with the least ``W(tau*)`` among those whose copy can
survive at all and whose blocking time fits under the job's collective timeout (a longer stall
would be taken for a hang and kill the job).

Plans are computed for all jobs at once over a ``CostTable`` (``plan_table``), so a fleet's
thousand jobs re-plan in one vectorised pass every tick; ``plan_checkpoint`` is one job's plan
with its reason, for the journal and the training-side agent.

Re-planning is the control loop: when the hazard rises, ``tau*`` shrinks, and once the time since
the last durable copy already exceeds it the planner orders "checkpoint now", since waiting any
longer is expected to lose more than the save costs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.economics.checkpoint_modes import CostTable, Mode, ModeCost

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Num = FloatArray | np.float64  # the formulas serve one job (scalars) and a fleet (arrays) alike


@dataclass(frozen=True)
class CheckpointPlan:
    choice: ModeCost | None  # None: no mode can protect the job now
    interval_s: float
    expected_waste: float  # share of wall time, at the chosen interval
    save_now: bool
    reason: str


@dataclass(frozen=True)
class PlanArrays:
    """Per job: the chosen column of the cost table (-1: none can protect it), its interval,
    expected waste, and whether to save now."""

    choice: IntArray
    interval_s: FloatArray
    expected_waste: FloatArray
    save_now: BoolArray


def waste(cost: ModeCost, interval_s: float, mtbf_s: float) -> float:
    """Expected waste per unit of wall time of saving with ``cost`` every ``interval_s``."""
    return float(
        _waste(
            np.float64(cost.blocking_s), np.float64(cost.durable_s), np.float64(cost.restore_s),
            np.float64(cost.validity), np.float64(cost.early_validity), np.float64(interval_s),
            np.float64(mtbf_s),
        )
    )  # fmt: skip


def best_interval(cost: ModeCost, mtbf_s: float) -> float:
    return float(_best_interval(np.float64(cost.blocking_s), np.float64(cost.validity), np.float64(mtbf_s)))


def plan_table(
    table: CostTable, mtbf_s: FloatArray, since_durable_s: FloatArray, timeout_s: FloatArray
) -> PlanArrays:
    """Every job's plan of least expected waste among the copies that can survive and whose
    blocking fits under its collective timeout."""
    if not np.all(mtbf_s > 0):
        raise ValueError(f"MTBF must be positive, got {float(np.min(mtbf_s))}")
    m = mtbf_s[:, None]
    tau = _best_interval(table.blocking_s, table.validity, m)
    w = _waste(
        table.blocking_s, table.durable_s, table.restore_s, table.validity, table.early_validity, tau, m
    )
    usable = (table.validity > 0) & (table.blocking_s <= timeout_s[:, None])
    w = np.where(usable, w, np.inf)
    # Least waste; ties (e.g. nothing ever fails) go to the least blocking.
    order = np.lexsort((table.blocking_s, w), axis=1)
    choice = order[:, 0] if order.shape[1] else np.zeros(w.shape[0], dtype=np.int64)
    rows = np.arange(w.shape[0])
    has = usable[rows, choice] if w.shape[1] else np.zeros(w.shape[0], dtype=bool)
    interval = np.where(has, tau[rows, choice] if w.shape[1] else np.inf, np.inf)
    best_w = np.where(has, w[rows, choice] if w.shape[1] else np.inf, np.inf)
    return PlanArrays(
        choice=np.where(has, choice, -1).astype(np.int64),
        interval_s=interval,
        expected_waste=best_w,
        save_now=has & (since_durable_s >= interval),
    )


def plan_checkpoint(
    costs: list[ModeCost], mtbf_s: float, since_durable_s: float, timeout_s: float
) -> CheckpointPlan:
    """The mode, target and interval of least expected waste, and whether to save now."""
    table = CostTable(
        modes=tuple(c.mode for c in costs),
        targets=tuple(c.target for c in costs),
        blocking_s=np.array([[c.blocking_s for c in costs]]).reshape(1, len(costs)),
        durable_s=np.array([[c.durable_s for c in costs]]).reshape(1, len(costs)),
        restore_s=np.array([[c.restore_s for c in costs]]).reshape(1, len(costs)),
        validity=np.array([[c.validity for c in costs]]).reshape(1, len(costs)),
        early_validity=np.array([[c.early_validity for c in costs]]).reshape(1, len(costs)),
    )
    plans = plan_table(table, np.array([mtbf_s]), np.array([since_durable_s]), np.array([timeout_s]))
    return explain_plan(costs, plans, 0, mtbf_s, since_durable_s, timeout_s)


def explain_plan(
    costs: list[ModeCost],
    plans: PlanArrays,
    job: int,
    mtbf_s: float,
    since_durable_s: float,
    timeout_s: float,
) -> CheckpointPlan:
    """One job's plan as a record with the sentence an operator reads."""
    c = int(plans.choice[job])
    if c < 0:
        surviving = [x for x in costs if x.validity > 0]
        if surviving:
            why = f"every surviving copy blocks longer than the {timeout_s:.0f} s collective timeout"
        else:
            why = "every copy would be lost to the likely failure" if costs else "no checkpoint target"
        return CheckpointPlan(None, math.inf, math.inf, False, why)
    best, tau = costs[c], float(plans.interval_s[job])
    best_w, save_now = float(plans.expected_waste[job]), bool(plans.save_now[job])
    where = "memory" if best.mode is Mode.IN_MEMORY else best.target
    why = (
        f"{best.mode.value} to {where}: blocks {best.blocking_s:.0f} s, durable after "
        f"{best.durable_s:.0f} s, every {_minutes(tau)} at MTBF {_minutes(mtbf_s)}; expected waste "
        f"{100 * best_w:.1f}%"
    )
    if save_now:
        why = (
            f"save now: {_minutes(since_durable_s)} since the last durable copy, past the "
            f"{_minutes(tau)} the hazard now calls for; " + why
        )
    return CheckpointPlan(best, tau, best_w, save_now, why)


def _best_interval(blocking: Num, validity: Num, mtbf: Num) -> FloatArray:
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = np.sqrt(blocking * mtbf / (0.5 + (1.0 - validity)))
    return np.where(np.isfinite(mtbf), tau, np.inf)


def _waste(
    blocking: Num, durable: Num, restore: Num, validity: Num, early: Num, interval: Num, mtbf: Num,
) -> FloatArray:  # fmt: skip
    lag = np.maximum(durable - blocking, 0.0) * (1.0 - early)
    rework = interval * (0.5 + (1.0 - validity)) + lag + restore
    with np.errstate(divide="ignore", invalid="ignore"):
        per_fail = np.where(np.isfinite(mtbf), rework / mtbf, 0.0)
        return np.where(np.isfinite(interval), blocking / interval, 0.0) + per_fail


def _minutes(seconds: float) -> str:
    return "never" if not math.isfinite(seconds) else f"{seconds / 60:.1f} min"
