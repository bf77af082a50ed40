"""Escalation of suspect parts under running training jobs, valued and audited.

A GPU, node or uplink the classifier holds in ``degraded`` while it serves a training job is
*suspect*: it still works, and whether to spend anything on it is an economic question
(``economics.valuation``). (A ``harmful`` part has already been judged worth a swap, by the same
weighted economics, and its state's actions carry that out.) Every tick each suspect accrues the loss it costs its job
(pace and risk, weighted by the job's criticality and deadline risk); when the accrued loss pays
for a costlier worthwhile step of the ladder, the step is journaled with its predicted cost and
benefit. Once the part stops being a suspect (it recovered, or left the job) or the horizon has
passed, the outcome is journaled beside it: the loss it still cost after the decision against
the loss that was predicted, and what the action was seen to cost (a save's reported duration,
a restart's silence in the job's step times).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.config import Config
from seamguard.economics.job_value import JobEconomics
from seamguard.economics.valuation import (
    Situation,
    Step,
    Valuation,
    amortised_over_s,
    escalate,
    loss_rate_gpu_h_per_h,
    value_steps,
)
from seamguard.journal.records import DecisionRecord, OutcomeRecord
from seamguard.model.entities import EntityKind
from seamguard.model.states import TRAINING_CLASSES, State
from seamguard.model.topology import Topology
from seamguard.model.workload import Workload
from seamguard.model.world import WorldChange, carry

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
SUSPECT = (int(State.DEGRADED),)
LADDER = tuple(Step)


@dataclass
class _Pending:
    decision: DecisionRecord
    gidx: int
    job: int
    job_gpus: float
    rate_before: float  # weighted GPU-h per hour the part cost when the step was taken
    loss_after: float = 0.0  # weighted GPU-h it cost since
    silent_s: float = 0.0  # seconds the job reported no step time since (a restart)
    save_s: float = math.nan  # the job's next reported save duration


@dataclass(frozen=True)
class JobSignals:
    """What the runtime reports per job this tick: its step times fresh or not, its last save."""

    stepping: npt.NDArray[np.bool_]
    checkpoint_s: FloatArray


class Escalation:
    def __init__(self, config: Config, topology: Topology) -> None:
        self.config = config
        self.topology = topology
        n = topology.n_entities
        self.paid = np.zeros(n)  # weighted GPU-hours the part has cost since it turned suspect
        self.level = np.zeros(n, dtype=np.int64)  # the ladder step last journaled
        self.pending: list[_Pending] = []
        self._last = -math.inf
        # Per job (and -1: no job), whether it is a training job.
        self._training = np.array([j.job_class in TRAINING_CLASSES for j in topology.jobs] + [False])

    def carry_over(self, change: WorldChange) -> None:
        """Parts that stay keep what they have cost and their ladder step; a pending outcome
        whose part or job left is dropped (there is nothing left to measure)."""
        self.topology = change.new
        self.paid = carry(self.paid, change.entities, 0.0)
        self.level = carry(self.level, change.entities, 0)
        self._training = np.array([j.job_class in TRAINING_CLASSES for j in change.new.jobs] + [False])
        parts, jobs = change.back(), change.back(EntityKind.JOB)
        kept: list[_Pending] = []
        for p in self.pending:
            gidx, job = int(parts[p.gidx]), int(jobs[p.job])
            if gidx >= 0 and job >= 0:
                p.gidx, p.job = gidx, job
                kept.append(p)
        self.pending = kept

    def step(
        self,
        now: float,
        states: IntArray,
        workload: Workload,
        excess_rate: FloatArray,
        gpu_slowdown: FloatArray,
        econ: JobEconomics,
        save_s: FloatArray,
        signals: JobSignals,
        spares: IntArray | None = None,
    ) -> tuple[list[DecisionRecord], list[OutcomeRecord]]:
        """``spares``: per job, the free nodes it could restart on (``control.spares``; None: plenty)."""
        dt = 0.0 if not math.isfinite(self._last) else now - self._last
        self._last = now
        topo, cfg = self.topology, self.config
        parts, jobs, slow = self._suspects(states, workload, gpu_slowdown)
        suspect = np.zeros(topo.n_entities, dtype=bool)
        suspect[parts] = True
        self.paid[~suspect] = 0.0
        self.level[~suspect] = 0
        decisions: list[DecisionRecord] = []
        rates: dict[int, float] = {}
        for gidx, job, slowdown in zip(parts.tolist(), jobs.tolist(), slow.tolist(), strict=True):
            short = spares is not None and int(spares[job]) < 1
            s = self._situation(gidx, job, slowdown, excess_rate, econ, save_s, short)
            pace, risk = loss_rate_gpu_h_per_h(s)
            rates[gidx] = pace + risk
            self.paid[gidx] += (pace + risk) * dt / 3600.0
            horizon = float(amortised_over_s(topo.jobs[job].end - now, cfg.economics.horizon_s))
            vals = value_steps(s, horizon, cfg.economics.rebalance_recovers)
            pick = escalate(vals, float(self.paid[gidx]))
            rung = LADDER.index(pick.step)
            if rung > self.level[gidx]:
                self.level[gidx] = rung
                d = self._decision(
                    now, gidx, job, pick.step, pick.cost_gpu_h, vals[rung], float(self.paid[gidx]), s, horizon
                )
                decisions.append(d)
                self.pending.append(_Pending(d, gidx, job, s.job_gpus, pace + risk))
        return decisions, self._outcomes(now, dt, suspect, rates, signals)

    # ---- pieces -------------------------------------------------------------------------------
    def _suspects(
        self, states: IntArray, workload: Workload, gpu_slowdown: FloatArray
    ) -> tuple[IntArray, IntArray, FloatArray]:
        """(part, job, slowdown) for every suspect part in a running training job."""
        topo = self.topology
        training = self._training
        slowdown = np.nan_to_num(gpu_slowdown)
        out: list[tuple[IntArray, IntArray, FloatArray]] = []
        for kind in (EntityKind.GPU, EntityKind.NODE, EntityKind.LINK):
            members = topo.members[kind]
            if members.size == 0:
                continue
            job = workload.gpu_job if kind is EntityKind.GPU else workload.node_job
            job = job[: members.size]
            hit = np.isin(states[members], SUSPECT) & (job >= 0) & training[np.where(job >= 0, job, -1)]
            local = np.flatnonzero(hit)
            if kind is EntityKind.GPU:
                slow = slowdown[local]
            else:  # a node (or its uplink) holds its job back by its slowest GPU
                per_node = np.zeros(members.size)
                np.maximum.at(per_node, topo.gpu_node, slowdown)
                slow = per_node[local]
            out.append((members[local], job[local], slow))
        if not out:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0)
        return (np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out]),
                np.concatenate([o[2] for o in out]))  # fmt: skip

    def _situation(
        self,
        gidx: int,
        job: int,
        slowdown: float,
        excess: FloatArray,
        econ: JobEconomics,
        save_s: FloatArray,
        short: bool,
    ) -> Situation:
        """``short``: no spare for the job, so a swap or drain leaves it waiting for the node back."""
        topo, eco = self.topology, self.config.economics
        kind = topo.kind_of(gidx)
        node = int(topo.gpu_node[topo.local[gidx]]) if kind is EntityKind.GPU else int(topo.local[gidx])
        return Situation(
            job_gpus=float(econ.gpus[job]),
            slowdown=max(slowdown, 0.0),
            excess_rate_per_s=max(float(excess[gidx]), 0.0),
            loss_per_failure_s=float(econ.loss_per_failure_s[job]),
            since_durable_s=float(np.nan_to_num(econ.since_durable_s[job])),
            save_s=float(np.nan_to_num(save_s[job], nan=eco.restart_cost_s)),
            rebalance_s=eco.rebalance_s,
            restart_s=float(np.nan_to_num(econ.restart_s[job], nan=eco.restart_cost_s)),
            node_gpus=float(np.count_nonzero(topo.gpu_node == node)),
            diagnose_s=eco.diagnose_s,
            weight=float(econ.weight[job]),
            waits=short,
        )

    def _decision(
        self,
        now: float,
        gidx: int,
        job: int,
        step: Step,
        cost: float,
        val: Valuation,
        paid: float,
        s: Situation,
        horizon_s: float,
    ) -> DecisionRecord:
        topo = self.topology
        kind = topo.kind_of(gidx)
        node = int(topo.gpu_node[topo.local[gidx]]) if kind is EntityKind.GPU else int(topo.local[gidx])
        job_name = topo.jobs[job].job
        target = (
            f"job/{job_name}" if step is Step.CHECKPOINT_NOW else f"node/{topo.names[EntityKind.NODE][node]}"
        )
        benefit = val.horizon_net_gpu_h + cost
        reason = (
            f"{step.value} for job {job_name}: the part has cost {paid:.1f} weighted GPU-h since it turned "
            f"suspect (slowdown {100 * s.slowdown:.1f}%, failure rate +{s.excess_rate_per_s * 86400:.2f}/day, "
            f"weight {s.weight:.2f}); this step costs {cost:.1f} GPU-h and should remove {benefit:.1f} "
            f"over {horizon_s / 3600:.3g} h"
            + (" (no spare node: a restart waits for the node back)" if s.waits else "")
        )
        return DecisionRecord(now, target, step.value, "advise", reason, State.DEGRADED.label,
                              cause=topo.ids[gidx], predicted_cost_gpu_h=cost, predicted_benefit_gpu_h=benefit)  # fmt: skip

    def _outcomes(
        self,
        now: float,
        dt: float,
        suspect: npt.NDArray[np.bool_],
        rates: dict[int, float],
        signals: JobSignals,
    ) -> list[OutcomeRecord]:
        out: list[OutcomeRecord] = []
        keep: list[_Pending] = []
        horizon = self.config.economics.horizon_s
        for p in self.pending:
            p.loss_after += rates.get(p.gidx, 0.0) * dt / 3600.0
            if not signals.stepping[p.job]:
                p.silent_s += dt
            if math.isnan(p.save_s) and np.isfinite(signals.checkpoint_s[p.job]) and now > p.decision.ts:
                p.save_s = float(signals.checkpoint_s[p.job])
            elapsed = now - p.decision.ts
            if suspect[p.gidx] and elapsed < horizon:
                keep.append(p)
                continue
            cost, note = _realised_cost(p)
            benefit = p.rate_before * elapsed / 3600.0 - p.loss_after
            why = "the part recovered or left the job" if not suspect[p.gidx] else "the horizon passed"
            out.append(OutcomeRecord(now, p.decision.entity, p.decision.action, p.decision.ts, cost, benefit,
                                     f"{why} after {elapsed / 3600:.1f} h; {note}"))  # fmt: skip
        self.pending = keep
        return out


def _realised_cost(p: _Pending) -> tuple[float, str]:
    """GPU-hours the action was seen to cost, from what the job's runtime reported."""
    step = Step(p.decision.action)
    if step is Step.CHECKPOINT_NOW:
        if math.isnan(p.save_s):
            return math.nan, "no save reported since"
        return p.save_s * p.job_gpus / 3600.0, f"the job's next save took {p.save_s:.0f} s"
    if step in (Step.REPLACE_RANK, Step.QUARANTINE):
        return p.silent_s * p.job_gpus / 3600.0, f"the job reported no step time for {p.silent_s:.0f} s"
    return math.nan, "a rebalance's pause is not visible in telemetry"
