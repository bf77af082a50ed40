"""The checkpoint control loop: every running job's plan, re-made every tick.

Each tick the loop prices every mode on every target for every running job (``cost_table``:
the job's state size from config, each storage path's throughput from telemetry, falling back
to its nameplate), weighs them against the job's live hazard (``economics.hazard``, scaled by
the fleet's observed rate), and picks the least expected waste (``plan_table``). It journals a
plan when it changes (mode, target, or an interval that moved by ``replan_change``) and orders
"checkpoint now" once per gap between durable copies, when the hazard calls for a save the job
has not made. The age of a job's last durable copy comes from its runtime as telemetry
(``job.since_checkpoint_s``); a job that does not report it is planned but never ordered.

A copy in peer memory is taken to sit in another failure domain (what peer-checkpointing systems
arrange): it survives any single failure. A copy in the job's own host memory survives a failure
that leaves hosts up, with the probability the hazard gives (``JobHazard.host_survival``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.config import Config
from seamguard.economics.checkpoint_modes import CostTable, JobArrays, Mode, StoragePath, Survival, cost_table
from seamguard.economics.checkpoint_planner import CheckpointPlan, PlanArrays, explain_plan, plan_table
from seamguard.economics.hazard import JobHazard
from seamguard.economics.job_risk import JobRisk
from seamguard.journal.records import DecisionRecord
from seamguard.model.entities import EntityKind
from seamguard.model.states import State
from seamguard.model.topology import Topology
from seamguard.model.workload import Workload
from seamguard.model.world import WorldChange, carry
from seamguard.telemetry.store import TelemetryStore

FloatArray = npt.NDArray[np.float64]
THROUGHPUT_SIGNAL = "storage.throughput_gbps"
SINCE_SIGNAL = "job.since_checkpoint_s"


@dataclass(frozen=True)
class LoopTick:
    plans: PlanArrays  # per job (topology order); choice -1 for jobs not running
    table: CostTable
    decisions: tuple[DecisionRecord, ...]


def storage_paths(
    config: Config, topology: Topology, store: TelemetryStore, states: npt.NDArray[np.int64]
) -> list[StoragePath]:
    """Each storage path as it delivers now: telemetry's throughput, else its nameplate."""
    names = topology.names[EntityKind.STORAGE]
    members = topology.members[EntityKind.STORAGE]
    measured = (
        store.current(THROUGHPUT_SIGNAL)
        if store.catalog.get(THROUGHPUT_SIGNAL) is not None
        else np.full(len(names), np.nan)
    )
    out = []
    for i, name in enumerate(names):
        plate = config.checkpoint.path(name)
        write = float(measured[i]) if np.isfinite(measured[i]) and measured[i] > 0 else plate.write_gbps
        read = plate.read_gbps * write / plate.write_gbps  # reads degrade with writes
        out.append(StoragePath(name, write, read, State(int(states[members[i]]))))
    return out


class CheckpointLoop:
    """Plans every running job's checkpoints and remembers what it last journaled."""

    def __init__(self, config: Config, topology: Topology, *, live_jobs: bool = False) -> None:
        """``live_jobs``: the job table changes while it runs (the daemon), so settings may name a
        job not running yet; otherwise a name the job table lacks is refused (a typo)."""
        self.config = config
        self.topology = topology
        unknown = sorted(set(config.checkpoint.jobs) - {j.job for j in topology.jobs})
        if unknown and not live_jobs:
            raise ValueError(f"checkpoint.jobs names job(s) not in the job table: {', '.join(unknown)}")
        n = len(topology.jobs)
        self._journaled = np.full(n, -1, dtype=np.int64)  # last journaled choice per job
        self._journaled_tau = np.full(n, np.nan)
        self._ordered_since = np.full(n, np.nan)  # the durable-copy age when save-now was last ordered
        self._arrays_key: tuple[int, ...] | None = None
        self._static: dict[str, FloatArray] = {}
        self.last: LoopTick | None = None

    def carry_over(self, change: WorldChange) -> None:
        """Jobs that stay keep what was journaled of their plan (no repeat of an unchanged plan)."""
        self.topology = change.new
        if change.same(EntityKind.JOB):
            return
        fwd = change.kind(EntityKind.JOB)
        self._journaled = carry(self._journaled, fwd, -1)
        self._journaled_tau = carry(self._journaled_tau, fwd, np.nan)
        self._ordered_since = carry(self._ordered_since, fwd, np.nan)
        self._arrays_key = None
        self._static = {}
        self.last = None

    def step(
        self,
        now: float,
        workload: Workload,
        hazard: JobHazard,
        paths: Sequence[StoragePath],
        since_durable_s: FloatArray,
        job_states: npt.NDArray[np.int64],
    ) -> LoopTick:
        """Every job's plan now, and the decisions worth journaling."""
        running = workload.job_gpus[: len(self.topology.jobs)] > 0
        arrays = self._job_arrays(workload, hazard, paths)
        table = cost_table(arrays, list(paths))
        mtbf = np.where(hazard.rate_per_s > 0, 1.0 / np.maximum(hazard.rate_per_s, 1e-300), np.inf)
        since = np.where(np.isfinite(since_durable_s), since_durable_s, 0.0)
        plans = plan_table(table, mtbf, since, self._static["timeout"])
        choice = np.where(running, plans.choice, -1)
        plans = PlanArrays(choice, plans.interval_s, plans.expected_waste, plans.save_now & running)
        decisions = self._decide(now, plans, table, mtbf, since, since_durable_s, hazard, job_states, running)
        self.last = LoopTick(plans, table, tuple(decisions))
        return self.last

    def plan(self, job: int, mtbf_s: float, since_s: float) -> CheckpointPlan:
        """The last tick's plan for one job, with its reason."""
        if self.last is None:
            raise LookupError("no plan yet: the loop has not run")
        return explain_plan(self.last.table.row(job), self.last.plans, job, mtbf_s, since_s,
                            float(self._static["timeout"][job]))  # fmt: skip

    # ---- pieces -------------------------------------------------------------------------------
    def _job_arrays(self, workload: Workload, hazard: JobHazard, paths: Sequence[StoragePath]) -> JobArrays:
        n = len(self.topology.jobs)
        gpus = workload.job_gpus[:n].astype(np.float64)
        nodes = np.bincount(workload.node_job[workload.node_job >= 0], minlength=n)[:n].astype(np.float64)
        key = (*workload.job_gpus[:n].tolist(), *nodes.tolist(), len(paths))
        if key != self._arrays_key:
            self._static = self._per_job(gpus, nodes, [p.name for p in paths])
            self._arrays_key = key
        s = self._static
        return JobArrays(
            size_gb=s["size"],
            changed_share=s["changed"],
            incremental_every=s["cycle"],
            host_copy_gbps=s["host"],
            peer_gbps=s["peer"],
            overhead_s=s["overhead"],
            host_survival=hazard.host_survival(),
            peer_survival=np.ones(n),
            uses_path=s["uses"].astype(bool),
        )

    def _per_job(self, gpus: FloatArray, nodes: FloatArray, path_names: list[str]) -> dict[str, FloatArray]:
        cfg = self.config.checkpoint
        specs = [cfg.for_job(j.job) for j in self.topology.jobs]
        uses = np.array(
            [[not s.targets or name in s.targets for name in path_names] for s in specs], dtype=np.float64
        ).reshape(len(specs), len(path_names))
        return {
            "size": np.maximum(gpus, 1.0) * np.array([s.state_gb_per_gpu for s in specs]),
            "changed": np.array([s.changed_share for s in specs]),
            "cycle": np.array([float(s.incremental_every) for s in specs]),
            "host": gpus * np.array([s.host_copy_gbps_per_gpu for s in specs]),
            "peer": nodes * np.array([s.peer_gbps_per_node for s in specs]),
            "overhead": np.array([s.overhead_s for s in specs]),
            "timeout": np.array([s.collective_timeout_s for s in specs]),
            "gpus": gpus,
            "uses": uses,
        }

    def _decide(
        self,
        now: float,
        plans: PlanArrays,
        table: CostTable,
        mtbf: FloatArray,
        since: FloatArray,
        reported_since: FloatArray,
        hazard: JobHazard,
        job_states: npt.NDArray[np.int64],
        running: npt.NDArray[np.bool_],
    ) -> list[DecisionRecord]:
        topo = self.topology
        tau = plans.interval_s
        was = self._journaled_tau
        both = np.isfinite(tau) & np.isfinite(was)
        with np.errstate(invalid="ignore"):
            moved = np.where(
                both,
                np.abs(tau - was) > self.config.checkpoint.replan_change * was,
                np.isfinite(tau) != np.isfinite(was),
            )
        # A job that stops running has no plan to journal (its last one stands until it runs again).
        changed = ((plans.choice != self._journaled) | (moved & (plans.choice >= 0))) & running
        # A new durable copy (its age went down) re-arms the save-now order.
        rearm = np.isfinite(reported_since) & (reported_since < self._ordered_since)
        self._ordered_since[rearm] = np.nan
        order = plans.save_now & np.isfinite(reported_since) & np.isnan(self._ordered_since)
        out: list[DecisionRecord] = []
        for j in np.flatnonzero(changed | order).tolist():
            plan = explain_plan(table.row(j), plans, j, float(mtbf[j]), float(since[j]),
                                float(self._static["timeout"][j]))  # fmt: skip
            top = int(hazard.top_part[j])
            entity, state = f"job/{topo.jobs[j].job}", State(int(job_states[j])).label
            cause = topo.ids[top] if top >= 0 else ""
            gpu_h = float(self._static["gpus"][j]) / 3600.0
            if changed[j]:
                # Predicted: what the plan is expected to lose over the horizon (its cost); no benefit
                # is claimed for a plan, only for the saves it orders.
                lost = float(plans.expected_waste[j]) * self.config.economics.horizon_s * gpu_h
                out.append(DecisionRecord(now, entity, "checkpoint_plan", "advise", plan.reason, state, cause=cause,
                                          predicted_cost_gpu_h=lost if math.isfinite(lost) else math.nan))  # fmt: skip
                self._journaled[j] = plans.choice[j]
                self._journaled_tau[j] = tau[j]
            if order[j] and plan.choice is not None:
                # Cost: the job blocked for the save. Benefit: the work since the last durable copy,
                # times the chance a failure comes before the next planned save.
                risk = min(float(tau[j]) / float(mtbf[j]), 1.0) if math.isfinite(float(mtbf[j])) else 0.0
                out.append(DecisionRecord(
                    now, entity, "checkpoint_now", "advise", _order_reason(plan), state, cause=cause,
                    predicted_cost_gpu_h=plan.choice.blocking_s * gpu_h,
                    predicted_benefit_gpu_h=float(since[j]) * risk * gpu_h,
                ))  # fmt: skip
                self._ordered_since[j] = since[j]
        return out


def _order_reason(plan: CheckpointPlan) -> str:
    if plan.choice is None:
        return plan.reason
    where = "memory" if plan.choice.mode is Mode.IN_MEMORY else plan.choice.target
    return f"{plan.choice.mode.value} to {where} now: {plan.reason.removeprefix('save now: ')}"


def job_risk(
    loop: CheckpointLoop, hazard: JobHazard, paths: Sequence[StoragePath], job: int, now: float
) -> JobRisk:
    topo = loop.topology
    rate, nominal = float(hazard.rate_per_s[job]), float(hazard.nominal_per_s[job])
    targets = loop.config.checkpoint.for_job(topo.jobs[job].job).targets
    top = int(hazard.top_part[job])
    return JobRisk(
        job=topo.jobs[job].job,
        ts=now,
        mtbf_s=1.0 / rate if rate > 0 else math.inf,
        nominal_mtbf_s=1.0 / nominal if nominal > 0 else math.inf,
        survival=Survival(host=float(hazard.host_survival()[job]), peer=1.0),
        storage=tuple(p for p in paths if not targets or p.name in targets),
        top_part=topo.ids[top] if top >= 0 else "",
    )
