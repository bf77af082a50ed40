"""What the jobs do over time: who runs where, how busy the GPUs are, when jobs checkpoint.

Training jobs step at a model-dependent pace and save periodically (an async save: the ranks
block only while state is snapshotted to host memory, the write to storage continues behind);
a save's duration depends on the backend's health when it starts. Inference jobs follow a
traffic curve. Idle GPUs idle. A job whose node suffers a hard failure hangs from that moment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.fieldsim.effects import Effects
from seamguard.fieldsim.fleet import Fleet
from seamguard.model.states import TRAINING_CLASSES

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
THERMAL_TAU_S = 120.0  # how fast a cold plate follows a change of load
SAVE_OVERHEAD_S = 6.0  # barriers and metadata of one save
BACKGROUND_WRITE_GBPS = 1.0  # logs, metrics, small files: always there


@dataclass(frozen=True)
class JobRuntime:
    """One job record's pace and checkpoint schedule."""

    index: int
    training: bool
    start: float
    end: float
    nodes: IntArray
    gpus: IntArray
    storage: int
    step_s: float
    traffic_phase: float  # inference: where in its traffic cycle the run starts
    ckpt_start: FloatArray
    ckpt_end: FloatArray  # durable from here
    ckpt_block_s: FloatArray  # the part of each save during which ranks wait
    ckpt_rate_gbps: FloatArray  # write rate while the save is in flight
    nominal_save_s: float  # a save's duration on a healthy backend
    hang_at: float  # a member node's first hard failure (inf: none)


def _hill(x: FloatArray) -> FloatArray:
    """Thermal step response: 0 before the change, rising to 1."""
    return np.asarray(
        np.where(x > 0, 1.0 - np.exp(-np.maximum(x, 0.0) / THERMAL_TAU_S), 0.0), dtype=np.float64
    )


class Workload:
    def __init__(
        self, fleet: Fleet, effects: Effects, capacity_gbps: FloatArray, rng: np.random.Generator
    ) -> None:
        self.fleet = fleet
        self.capacity_gbps = capacity_gbps
        n_nodes = fleet.n_nodes
        self.node_in_job = np.zeros((len(fleet.jobs), n_nodes), dtype=bool)
        runtimes: list[JobRuntime] = []
        for j, rec in enumerate(fleet.jobs):
            nodes, gpus = fleet.job_nodes[j], fleet.job_gpus[j]
            self.node_in_job[j, nodes] = True
            model = fleet.node_model[int(nodes[0])]
            training = rec.job_class in TRAINING_CLASSES
            sto = int(fleet.storage_of_job[j])
            step = float(rng.uniform(*model.step_s))
            size_gb = model.ckpt_gb_per_gpu * gpus.size
            rate0 = min(model.node_write_gbps * nodes.size, 0.8 * float(capacity_gbps[sto]))
            interval = float(rng.uniform(15 * 60, 30 * 60))
            starts: FloatArray = np.zeros(0)
            if training:
                k = np.arange(math.ceil((rec.end - rec.start) / interval), dtype=np.float64)
                starts = rec.start + interval * (float(rng.uniform(0.3, 1.0)) + k)
                starts = starts[starts + 120.0 < rec.end]
            health = effects.storage_health(np.full(starts.size, sto), starts)
            jitter = np.exp(rng.normal(0.0, 0.06, starts.size))
            write_s = size_gb / (rate0 * health) * jitter
            runtimes.append(
                JobRuntime(
                    index=j, training=training, start=rec.start, end=rec.end, nodes=nodes, gpus=gpus,
                    storage=sto, step_s=step, traffic_phase=float(rng.uniform(0, 2 * math.pi)),
                    ckpt_start=starts, ckpt_end=starts + SAVE_OVERHEAD_S + write_s,
                    ckpt_block_s=3.0 + 0.2 * write_s, ckpt_rate_gbps=size_gb / write_s,
                    nominal_save_s=SAVE_OVERHEAD_S + size_gb / rate0,
                    hang_at=float(effects.node_hard_fail[nodes].min()),
                )
            )  # fmt: skip
        self.jobs: tuple[JobRuntime, ...] = tuple(runtimes)
        self._level = np.array([0.97 if r.training else 0.6 for r in runtimes])

    def job_at(self, node: IntArray, t: FloatArray) -> IntArray:
        """The job record running on each node at each time, -1 when idle."""
        out = np.full(node.size, -1, dtype=np.int64)
        for r in self.jobs:
            out[self.node_in_job[r.index, node] & (t >= r.start) & (t < r.end)] = r.index
        return out

    def smooth_load(self, node: IntArray, t: FloatArray) -> FloatArray:
        """Load as the cold plates feel it: each job's start and end, lagged thermally."""
        out = np.zeros(node.size)
        for r in self.jobs:
            m = self.node_in_job[r.index, node]
            if m.any():
                out[m] += self._level[r.index] * (_hill(t[m] - r.start) - _hill(t[m] - r.end))
        return out

    def util(self, node: IntArray, t: FloatArray, job: IntArray, stall: FloatArray) -> FloatArray:
        """Instantaneous busy share 0..1: a blocking save or an input stall idles the ranks."""
        out = np.zeros(node.size)
        for r in self.jobs:
            m = job == r.index
            if not m.any():
                continue
            tm = t[m]
            if not r.training:
                out[m] = 0.55 + 0.25 * np.sin(2 * math.pi * tm / 5400.0 + r.traffic_phase)
                continue
            busy = np.full(tm.size, 0.97) / stall[m] ** 1.5
            out[m] = np.where(self.blocking(r, tm), 0.2, busy)
        return out

    @staticmethod
    def blocking(r: JobRuntime, t: FloatArray) -> npt.NDArray[np.bool_]:
        """Samples that fall in the blocking part of one of the job's saves."""
        if not r.ckpt_start.size:
            return np.zeros(t.size, dtype=bool)
        i = np.searchsorted(r.ckpt_start, t, side="right") - 1
        ic = np.maximum(i, 0)
        return np.asarray((i >= 0) & (t < r.ckpt_start[ic] + r.ckpt_block_s[ic]))

    def write_demand(self, storage: IntArray, t: FloatArray) -> FloatArray:
        """GB/s of checkpoint writes in flight per storage sample, plus the background."""
        out = np.full(storage.size, BACKGROUND_WRITE_GBPS)
        for r in self.jobs:
            if not r.ckpt_start.size:
                continue
            m = storage == r.storage
            if not m.any():
                continue
            tm = t[m]
            i = np.maximum(np.searchsorted(r.ckpt_start, tm, side="right") - 1, 0)
            live = (tm >= r.ckpt_start[i]) & (tm < r.ckpt_end[i])
            out[m] += np.where(live, r.ckpt_rate_gbps[i], 0.0)
        return out

    def last_save(self, r: JobRuntime, t: float) -> tuple[float, float] | None:
        """(end, duration) of the job's last save durable by ``t``."""
        done = np.flatnonzero(r.ckpt_end <= t)
        if not done.size:
            return None
        k = int(done[-1])
        return float(r.ckpt_end[k]), float(r.ckpt_end[k] - r.ckpt_start[k])
