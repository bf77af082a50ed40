"""The storage path as the jobs see it (``jobs.JobEnv``): what a save or a restore costs now.

A save or restore shares its backend's bandwidth with the transfers already running there, and
slows with the backend's congestion and its latency tail; the policy picks the save's mode and
target and the checkpoint interval. The twin holds one of these and hands it to its jobs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from seamguard.economics.checkpoint_modes import Mode
from seamguard.twin.jobs import InferenceJob, Memory, SavePlan, TrainingJob
from seamguard.twin.physics import storage as storage_model
from seamguard.twin.plant import Plant
from seamguard.twin.policies.base import Policy
from seamguard.twin.world import World

LATENCY_SAVE_EXPONENT = 0.5  # a save slows with the square root of the write-latency tail


@dataclass(frozen=True)
class StorageEnv:
    """``jobs`` is the twin's own list: the other transfers on a backend are read from it live."""

    world: World
    plant: Plant
    policy: Policy
    jobs: Sequence[TrainingJob | InferenceJob]
    hang_timeout_s: float

    def _streams(self, sto: int, exclude: int, t: float) -> float:
        """Transfers on backend ``sto`` now, counting the asking job's own: saves and restores that
        block, and the background persists of tiered saves."""
        busy = 0
        for j in self.jobs:
            if isinstance(j, TrainingJob) and j.index != exclude:
                busy += (j.io_storage == sto) + (j.persisting(t) == sto)
        return float(busy + 1)

    def save_plan(self, job: TrainingJob, t: float) -> SavePlan:
        """The policy's choice of mode and target, priced on the cluster as it is now."""
        mode, target = self.policy.checkpoint_choice(job)
        sp = self.world.scenario.physics.storage
        size = job.spec.checkpoint_gb
        blocking = storage_model.memory_copy_seconds(sp, size, job.gpus, job.spec.nodes)
        if mode in (Mode.IN_MEMORY, Mode.TIERED) and math.isfinite(blocking):
            memory = Memory.PEER if sp.peer_gbps_per_node > 0 else Memory.HOST
            if mode is Mode.IN_MEMORY:
                return SavePlan(blocking, math.inf, memory, -1)
            job.chain = 1  # a full copy reaches storage: the base of any incremental save to come
            persist = (
                self._transfer_seconds(job, target, size, sp.write_gbps, write=True, t=t) - sp.overhead_s
            )
            return SavePlan(blocking, persist, memory, target, size)
        if mode in (Mode.IN_MEMORY, Mode.TIERED):
            mode = Mode.FULL  # no room in host memory: save to storage
        deltas = job.chain % sp.incremental_every if mode is Mode.INCREMENTAL else 0
        job.chain = deltas + 1
        written = size * (sp.changed_share if deltas else 1.0)
        seconds = self._transfer_seconds(job, target, written, sp.write_gbps, write=True, t=t)
        return SavePlan(seconds, 0.0, Memory.NONE, target, size * (1.0 + sp.changed_share * deltas))

    def restore_seconds(self, job: TrainingJob, t: float) -> float:
        sp = self.world.scenario.physics.storage
        src = job.restore_from
        if src is None:
            return sp.overhead_s  # nothing saved yet: start from scratch
        size = job.spec.checkpoint_gb
        if src.memory is not Memory.NONE:
            return storage_model.memory_restore_seconds(sp, size, job.gpus, job.spec.nodes,
                                                        peer=src.memory is Memory.PEER)  # fmt: skip
        read = src.restore_gb if math.isfinite(src.restore_gb) else size
        return self._transfer_seconds(job, src.storage, read, sp.read_gbps, write=False, t=t)

    def _transfer_seconds(
        self, job: TrainingJob, sto: int, size_gb: float, gbps: float, *, write: bool, t: float
    ) -> float:
        """``size_gb`` through backend ``sto``'s bandwidth, shared with the other transfers there
        now, slowed by congestion and by the latency tail."""
        sp = self.world.scenario.physics.storage
        c = self._streams(sto, job.index, t)
        latency = self.plant.storage_write[sto] if write else self.plant.storage_read[sto]
        tail = float(latency) ** LATENCY_SAVE_EXPONENT
        agg = (
            gbps
            * float(self.plant.storage_throughput[sto])
            * float(storage_model.congestion(sp, np.array(c)))
        )
        return storage_model.transfer_seconds(size_gb, agg / tail, c, sp.overhead_s)

    def interval_s(self, job: TrainingJob) -> float:
        return self.policy.interval_s(job)
