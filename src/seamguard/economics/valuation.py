"""What each action on a suspect part under a job is worth, and when to take the costlier one.

A part that is degraded but still working costs its job in two ways: pace (a slow rank holds a
synchronous job back) and risk (its raised failure rate brings restarts, restores and lost
work). Every candidate action is valued in GPU-hours: its one-off cost, and the loss per hour
it removes (its benefit rate). Over the amortisation horizon, an action is *worth it* when the
loss it removes exceeds its cost.

Which one to take follows ski rental: one does not buy skis on the first day. Losses are
accumulated from the moment the part turns suspect, weighted by how much the job matters
(``economics.criticality_weight``, raised further by the risk of missing its deadline), and
the engine takes the costliest worthwhile action whose cost the accumulated loss has already
paid for. Renting forever never costs more than twice buying at once (the deterministic ski
rental bound), and a part that recovers on its own is never paid for at all. A release-blocking
run accrues its loss four times faster than a standard one and so escalates sooner; an
exploratory job tolerates a degraded node far longer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt


class Step(StrEnum):
    """The escalation ladder, cheapest first."""

    IGNORE = "ignore"
    REBALANCE = "rebalance"  # shift work off the slow rank (smaller micro-batch): recovers part of the pace
    CHECKPOINT_NOW = "checkpoint_now"  # shrink what a failure would lose
    REPLACE_RANK = "replace_rank"  # save, restart with a spare in its place: pace and risk both gone
    QUARANTINE = "drain_node"  # as replace, and the node leaves service (a quarantine: budgeted)


@dataclass(frozen=True)
class Situation:
    """One suspect part under one job, in the units valuation needs."""

    job_gpus: float
    slowdown: float  # share of the job's pace this part costs (0.05: the job runs 5% slower)
    excess_rate_per_s: float  # failure rate this part adds over its nominal
    loss_per_failure_s: float  # wall time a failure costs the job: restart, restore, half an interval redone
    since_durable_s: float  # what a failure now would redo
    save_s: float  # blocking time of the job's chosen save
    rebalance_s: float  # the pause to shift work off the rank
    restart_s: float  # a planned restart with a spare: re-initialising and its restore (the save excluded)
    node_gpus: float  # the node's GPUs, out of service while diagnosed
    diagnose_s: float
    weight: float  # criticality weight, raised by the deadline risk
    waits: bool = False  # no spare node: a swap or drain leaves the job waiting diagnose_s for it back


@dataclass(frozen=True)
class Valuation:
    step: Step
    cost_gpu_h: float  # one-off
    benefit_gpu_h_per_h: float  # loss per hour it removes (weighted)
    horizon_net_gpu_h: float  # benefit over the horizon minus the cost

    @property
    def worth_it(self) -> bool:
        return self.step is Step.IGNORE or self.horizon_net_gpu_h > 0


def loss_rate_gpu_h_per_h(s: Situation) -> tuple[float, float]:
    """(pace loss, risk loss) per hour in weighted GPU-hours, if nothing is done."""
    pace = s.weight * s.slowdown * s.job_gpus
    risk = s.weight * s.excess_rate_per_s * 3600.0 * s.loss_per_failure_s * s.job_gpus / 3600.0
    return pace, risk


def value_steps(s: Situation, horizon_s: float, rebalance_recovers: float) -> list[Valuation]:
    """Every step of the ladder with its cost, the loss rate it removes, and its net over the horizon."""
    pace, risk = loss_rate_gpu_h_per_h(s)
    hours = horizon_s / 3600.0
    gpu_h = s.job_gpus / 3600.0
    # A save now shrinks the next failure's rework from since_durable to a fresh start: over the
    # horizon that is the excess failures expected times what they would no longer redo.
    saved_rework = s.weight * s.excess_rate_per_s * horizon_s * s.since_durable_s * gpu_h
    replace_cost = float(planned_swap_s(s.save_s, s.restart_s, s.waits, s.diagnose_s)) * gpu_h
    rows = [
        (Step.IGNORE, 0.0, 0.0, 0.0),
        (Step.REBALANCE, s.rebalance_s * gpu_h, rebalance_recovers * pace, None),
        (Step.CHECKPOINT_NOW, s.save_s * gpu_h, 0.0, saved_rework),
        (Step.REPLACE_RANK, replace_cost, pace + risk, None),
        (Step.QUARANTINE, replace_cost + s.node_gpus * s.diagnose_s / 3600.0, pace + risk, None),
    ]
    out = []
    for step, cost, rate, one_off in rows:
        gain = one_off if one_off is not None else rate * hours
        out.append(Valuation(step, cost, rate, gain - cost))
    return out


def planned_swap_s(
    save_s: npt.ArrayLike, restart_s: npt.ArrayLike, waits: npt.ArrayLike, diagnose_s: float
) -> npt.NDArray[np.float64]:
    """What a planned swap or drain stalls its job: the save that precedes it, the restart with
    its restore, and with no spare the wait for its node back. The one price of a swap, for the
    valuation ladder and the per-rank harm alike: the twin's swap saves, restarts and restores too."""
    return (
        np.asarray(save_s, dtype=np.float64)
        + np.asarray(restart_s, dtype=np.float64)
        + wait_for_node_s(waits, diagnose_s)
    )


def wait_for_node_s(waits: npt.ArrayLike, diagnose_s: float) -> npt.NDArray[np.float64]:
    """How long a swap or drain leaves a job without a spare waiting for its node back (the
    node's diagnosis); nothing for a job with a spare. The one price of a missing spare, for the
    valuation ladder and the per-rank harm alike."""
    return np.where(waits, diagnose_s, 0.0)


def amortised_over_s(left_s: npt.ArrayLike, horizon_s: float) -> npt.NDArray[np.float64]:
    """What a one-off step is amortised over: ``horizon_s``, never past its job's end (``left_s``
    seconds away; NaN: no end known). A swap an hour before the end has an hour to pay for itself."""
    return np.clip(np.nan_to_num(np.asarray(left_s, dtype=np.float64), nan=horizon_s), 1.0, horizon_s)


def escalate(valuations: list[Valuation], paid_gpu_h: float) -> Valuation:
    """Ski rental: the costliest worthwhile step whose cost the accumulated loss has paid for.
    A step that buys the same as a cheaper one (quarantine over replace, for the job) is taken
    only when it is worth it on its own."""
    affordable = [v for v in valuations if v.worth_it and v.cost_gpu_h <= paid_gpu_h]
    return max(affordable, key=lambda v: (v.cost_gpu_h, v.benefit_gpu_h_per_h))
