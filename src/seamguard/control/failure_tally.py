"""The hard failures the fleet's rate is learned from, each counted once.

Two witnesses see a failure. The classifier calls a GPU or a host ``failed`` (an XID that
needs a reset, a host gone silent after failing), but many failures that end a synchronous job
never reach that state: a node that reboots and comes back, a rack that loses power for minutes,
a software crash, an NCCL hang the watchdog kills. The job's runtime sees every one of them: it
counts its failed attempts (``job.failures_total``, a counter: the launcher's restart count, as
torchrun's ``TORCHELASTIC_RESTART_COUNT`` or Slurm's ``SLURM_RESTART_COUNT`` give it, less the
restarts it was asked for). Without it the learner sees only the first witness, and a small fleet
whose jobs fail ten times a day reads as nominal.

A failure both witnesses see is counted once: within ``SAME_FAILURE_S`` of one witness counting a
job's failure, the other's count for the same job is the same event. A job counts at most one
failure per ``SAME_FAILURE_S`` by its runtime's witness: a counter that leaps (a glitch, a job
down for hours whose retries all failed) cannot set the fleet's rate on its own. A runtime's
counter is taken as it is first seen (failures before that were not watched), and one that goes
down was restarted from zero: neither is a failure.

The restarts seamguard causes are no failures either. A launcher's count may include them
(torchrun counts a membership change as a restart), and counted, each drain would raise the
learned rate, shorten every interval and value every suspect part as likelier to fail: more
drains. So within ``SAME_FAILURE_S`` after the engine, acting, took capacity out from under a
job (``moved``: a drain, a disabled uplink, an island, an isolated leaf), that job's runtime count
is its planned restart. A real failure in that window is missed: the job restarts once for both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.config import HazardConfig
from seamguard.economics.hazard import DAY_S
from seamguard.journal.records import DecisionRecord
from seamguard.model.action_kinds import QUARANTINE_KINDS
from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology, nodes_below
from seamguard.model.workload import Workload
from seamguard.model.world import carry
from seamguard.telemetry.plausibility import counter_increase

FAILURES_SIGNAL = "job.failures_total"
SAME_FAILURE_S = 900.0  # a job's restart after a failed part reaches its runtime's count within minutes

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass
class FailureTally:
    runtime_last: FloatArray  # per job: its runtime's counter as last seen (NaN: never seen)
    part_at: FloatArray  # per job: when a failed part of it was last counted
    runtime_at: FloatArray  # per job: when a failure its runtime counted was last counted
    moved_at: FloatArray  # per job: when the engine, acting, last took capacity out from under it

    @classmethod
    def create(cls, n_jobs: int) -> FailureTally:
        return cls(np.full(n_jobs, np.nan), *(np.full(n_jobs, -np.inf) for _ in range(3)))

    def count(
        self, now: float, failed_nodes: IntArray, node_job: IntArray, runtime: FloatArray | None
    ) -> int:
        """Failures to learn from at ``now``: the nodes newly failed (a node once, whatever part
        of it failed) and the increases of each job's runtime count (``runtime``, per job, NaN
        where not reported; None: no job reports one), neither counted twice."""
        jobs = node_job[failed_nodes]
        in_job = jobs >= 0
        seen_by_runtime = np.zeros(failed_nodes.size, dtype=bool)
        seen_by_runtime[in_job] = now - self.runtime_at[jobs[in_job]] <= SAME_FAILURE_S
        parts = int(np.count_nonzero(~seen_by_runtime))
        self.part_at[jobs[in_job & ~seen_by_runtime]] = now
        if runtime is None:
            return parts
        runtime = runtime[: self.runtime_last.size]  # the store's job rows, then nothing else
        increase, _reset = counter_increase(self.runtime_last, runtime)
        rose = increase > 0  # NaN: never seen, not reported now, or restarted from zero
        rose &= (now - self.part_at > SAME_FAILURE_S) & (now - self.runtime_at > SAME_FAILURE_S)
        rose &= now - self.moved_at > SAME_FAILURE_S  # a restart seamguard caused
        self.runtime_at[rose] = now
        self.runtime_last = np.where(np.isfinite(runtime), runtime, self.runtime_last)
        return parts + int(np.count_nonzero(rose))

    def carry_over(self, jobs: IntArray) -> None:
        """Re-indexed to a new job table (``jobs``: new -> old, -1 joined); a job that joined
        starts unseen."""
        self.runtime_last = carry(self.runtime_last, jobs, np.nan)
        self.part_at, self.runtime_at, self.moved_at = (
            carry(self.part_at, jobs, -np.inf),
            carry(self.runtime_at, jobs, -np.inf),
            carry(self.moved_at, jobs, -np.inf),
        )

    def moved(self, now: float, topo: Topology, node_job: IntArray, decisions: list[DecisionRecord]) -> None:
        """Mark the jobs the engine's quarantines (acted on, not advised) take capacity from: their
        runtime's next count is the restart seamguard caused."""
        for d in decisions:
            if d.mode != "act" or d.action not in QUARANTINE_KINDS:
                continue
            g = topo.lookup(d.entity)
            if g is not None:
                jobs = node_job[nodes_below(topo, g)]
                self.moved_at[jobs[jobs >= 0]] = now

    def reporting(self) -> npt.NDArray[np.bool_]:
        """Jobs whose runtime has reported its count: their software failures are watched too."""
        reported: npt.NDArray[np.bool_] = np.isfinite(self.runtime_last)
        return reported

    def exposure_per_s(self, config: HazardConfig, workload: Workload) -> float:
        """Failures per second expected at nominal rates of what only a runtime's count sees: the
        software and the uplinks (a link is no part the classifier fails) of the jobs reporting."""
        watched = np.flatnonzero(self.reporting())
        gpus = float(workload.job_gpus[watched].sum())
        nodes = float(np.isin(workload.node_job, watched).sum())
        per_day = config.software_per_gpu_day * gpus + config.base_per_day.get(EntityKind.LINK, 0.0) * nodes
        return per_day / DAY_S
