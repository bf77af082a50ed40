"""The checkpoint planner: which mode, where, and when, from the job's hazard now.

For every mode the job could use now (``economics.checkpoint_modes``), the expected waste per
unit of wall time at interval ``tau`` is the first-order model extended by what the mode's copy
is worth against the failure now most likely:

    W(tau) = delta / tau + (tau x (1/2 + (1 - v)) + lag + R) / M

with blocking time ``delta``, restore time ``R``, validity ``v`` (a failure the copy does not
survive rolls back one interval further, to the copy before), ``lag`` the time between the save
returning and the copy being durable (a failure then finds only the previous copy), and the
job's live MTBF ``M`` (``economics.hazard``). Its minimum is at
``tau* = sqrt(delta M / (1/2 + 1 - v))``: Young's ``sqrt(2 delta M)`` for a copy that always
survives. The planner takes the mode with the least ``W(tau*)`` among those whose copy can
survive at all and whose blocking time fits under the job's collective timeout (a longer stall
would be taken for a hang and kill the job).

Re-planning is the control loop: when the hazard rises, ``tau*`` shrinks, and once the time since
the last durable copy already exceeds it the planner orders "checkpoint now", since waiting any
longer is expected to lose more than the save costs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from seamguard.economics.checkpoint_modes import ModeCost


@dataclass(frozen=True)
class CheckpointPlan:
    choice: ModeCost | None  # None: no mode can protect the job now
    interval_s: float
    expected_waste: float  # share of wall time, at the chosen interval
    save_now: bool
    reason: str


def waste(cost: ModeCost, interval_s: float, mtbf_s: float) -> float:
    """Expected waste per unit of wall time of saving with ``cost`` every ``interval_s``."""
    lag = max(cost.durable_s - cost.blocking_s, 0.0)
    rework = interval_s * (0.5 + (1.0 - cost.validity)) + lag + cost.restore_s
    return cost.blocking_s / interval_s + (rework / mtbf_s if math.isfinite(mtbf_s) else 0.0)


def best_interval(cost: ModeCost, mtbf_s: float) -> float:
    if not math.isfinite(mtbf_s):
        return math.inf
    return math.sqrt(cost.blocking_s * mtbf_s / (0.5 + (1.0 - cost.validity)))


def plan_checkpoint(
    costs: list[ModeCost], mtbf_s: float, since_durable_s: float, timeout_s: float
) -> CheckpointPlan:
    """The mode, target and interval of least expected waste, and whether to save now."""
    if not mtbf_s > 0:
        raise ValueError(f"MTBF must be positive, got {mtbf_s}")
    usable = [c for c in costs if c.validity > 0 and c.blocking_s <= timeout_s]
    if not usable:
        surviving = [c for c in costs if c.validity > 0]
        if surviving:
            why = f"every surviving copy blocks longer than the {timeout_s:.0f} s collective timeout"
        else:
            why = "every copy would be lost to the likely failure" if costs else "no checkpoint target"
        return CheckpointPlan(None, math.inf, math.inf, False, why)
    scored = [(waste(c, best_interval(c, mtbf_s), mtbf_s), c) for c in usable]
    best_w, best = min(scored, key=lambda wc: (wc[0], wc[1].blocking_s))
    tau = best_interval(best, mtbf_s)
    save_now = since_durable_s >= tau
    why = (
        f"{best.mode.value} to {best.target}: blocks {best.blocking_s:.0f} s, durable after "
        f"{best.durable_s:.0f} s, every {_minutes(tau)} at MTBF {_minutes(mtbf_s)}; expected waste "
        f"{100 * best_w:.1f}%"
    )
    if save_now:
        why = (
            f"save now: {_minutes(since_durable_s)} since the last durable copy, past the {_minutes(tau)} the hazard now calls for; "
            + why
        )
    return CheckpointPlan(best, tau, best_w, save_now, why)


def _minutes(seconds: float) -> str:
    return "never" if not math.isfinite(seconds) else f"{seconds / 60:.1f} min"
