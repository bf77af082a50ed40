"""Each job's pace lost to its fabric: what a gray leaf switch costs the jobs under it.

A congested leaf slows a synchronous job's collectives, not its ranks' compute: every rank waits
alike, so no rank stands out from its job's median (``gpu.step_time_s`` reads the rank's own
step, ``job.step_time_s`` the job's, collectives included). What the fabric costs a job shows as
its step against its slowest rank's: that ratio is steady while the fabric is well (the job's
usual share of exposed communication), and rises when a leaf or an uplink under it turns gray.

The usual ratio is learnt per job (``scoring.learnt_average``: a warm-up mean, then a six-hour
half-life) only while no leaf and no uplink of its nodes is gray, so a fault does not teach its
own slowdown as normal. The slowdown now is the ratio over the usual one, less one (0 until
learnt). The containment stage reads it for a leaf's valuation (``control.containment``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from seamguard.model.entities import EntityKind
from seamguard.model.states import State
from seamguard.model.topology import Topology
from seamguard.model.workload import Workload
from seamguard.model.world import WorldChange, carry
from seamguard.scoring.learnt_average import average_in, decay_since, learnt
from seamguard.telemetry.store import TelemetryStore

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

JOB_STEP = "job.step_time_s"
RANK_STEP = "gpu.step_time_s"
HALFLIFE_S = 6 * 3600.0
_WELL = (int(State.HEALTHY), int(State.UNKNOWN), int(State.FAILED))


def gray_fabric(topo: Topology, states: IntArray) -> BoolArray:
    """Per node: its leaf or its uplink is gray (degraded or worse, not failed: a failed part is
    out, not slowing anyone)."""
    n = topo.count(EntityKind.NODE)
    out = np.zeros(n, dtype=bool)
    for kind, of_node in ((EntityKind.SWITCH, topo.node_leaf), (EntityKind.LINK, np.arange(n))):
        members = topo.members[kind]
        if not members.size:
            continue
        gray = ~np.isin(states[members], _WELL)
        ok = (of_node >= 0) & (of_node < members.size)
        out[ok] |= gray[of_node[ok]]
    return out


class FabricPace:
    """Per job (topology order): its usual step over its slowest rank's, and its slowdown now."""

    def __init__(self, n_jobs: int) -> None:
        self._log = np.zeros(n_jobs)
        self._seen = np.zeros(n_jobs, dtype=np.int64)
        self._at = -np.inf
        self.slowdown = np.zeros(n_jobs)  # the last update's: 0 where unknown

    def carry_over(self, change: WorldChange) -> None:
        """Jobs that stay keep what was learnt; new ones learn from nothing."""
        if change.same(EntityKind.JOB):
            return
        index = change.kind(EntityKind.JOB)
        self._log, self._seen = carry(self._log, index, 0.0), carry(self._seen, index, 0)
        self.slowdown = carry(self.slowdown, index, 0.0)

    def update(
        self, now: float, topo: Topology, workload: Workload, states: IntArray, store: TelemetryStore
    ) -> FloatArray:
        """Learn from this tick where the job's fabric is well; return each job's slowdown now."""
        n = self._log.size
        self.slowdown = np.zeros(n)
        if n == 0 or store.catalog.get(JOB_STEP) is None or store.catalog.get(RANK_STEP) is None:
            return self.slowdown
        job_step = store.current(JOB_STEP)[:n]
        rank = store.current(RANK_STEP)
        gpu_job = workload.gpu_job
        ok = (gpu_job >= 0) & np.isfinite(rank) & (rank > 0)
        slowest = np.zeros(n)
        np.maximum.at(slowest, gpu_job[ok], rank[ok])
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.log(job_step / slowest)
        node_job = workload.node_job
        on = node_job >= 0
        dirty = np.bincount(node_job[on], weights=gray_fabric(topo, states)[on], minlength=n)[:n] > 0
        average_in(
            self._seen, np.isfinite(y) & ~dirty, decay_since(self._at, now, HALFLIFE_S), (self._log, y)
        )
        self._at = now
        known = learnt(self._seen) & np.isfinite(y)
        self.slowdown = np.where(
            known, np.maximum(np.exp(np.where(known, y - self._log, 0.0)) - 1.0, 0.0), 0.0
        )
        return self.slowdown
