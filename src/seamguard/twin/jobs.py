"""The job runtime of the twin: training jobs that checkpoint, fail, roll back and restart, and
inference jobs whose replicas come and go.

Time is exact within a step: a job passes through as many phases as fit between ``t0`` and
``t1`` (a 10 s save inside a 30 s step is 10 s of ``checkpoint_save``), and every second of a
job's reservation lands in exactly one bucket (``twin.accounting``), so the buckets sum to the
reserved time with no remainder. The environment (``JobEnv``) supplies what depends on the rest
of the cluster: how long a save or a restore takes on the storage path right now, the policy's
checkpoint interval and the scheduler's placement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

import numpy as np
import numpy.typing as npt

from seamguard.twin.accounting import Bucket, new_buckets
from seamguard.twin.scenario import ONLINE, Job

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
ONLINE_HEADROOM = 1.4  # an online replica can take this much over its fair share of the load


class Phase(IntEnum):
    PENDING = 0  # not started yet (before its start time)
    RUNNING = 1
    SAVING = 2
    DOWN = 3  # failed, not yet detected (a hang waits for the watchdog)
    RECOVERING = 4  # waiting for the bad node to go and for placement
    STARTING = 5
    RESTORING = 6
    DONE = 7


class Failure(IntEnum):
    CRASH = 0
    HANG = 1
    SDC = 2  # silent corruption found: roll back past it


class Memory(IntEnum):
    """Where a checkpoint's memory copy lives, if it has one."""

    NONE = 0
    HOST = 1  # the job's own host memory: lost with a host crash
    PEER = 2  # also on buddy nodes in another failure domain: survives one


@dataclass(frozen=True)
class JobEvent:
    t: float
    failure: Failure
    since: float = math.nan  # SDC: when the corruption began
    host_lost: bool = False  # the failure took a host (and the memory copies on it) down


@dataclass(frozen=True)
class SavePlan:
    """How the next save is made, as the environment prices the policy's choice now."""

    blocking_s: float
    persist_s: float  # after blocking, until the copy is on storage (0: written there; inf: never)
    memory: Memory
    storage: int  # the backend written to (-1: memory only)
    restore_gb: float = math.nan  # what a restore from storage reads (an incremental chain: more)


class JobEnv(Protocol):
    def save_plan(self, job: TrainingJob, t: float) -> SavePlan: ...
    def restore_seconds(self, job: TrainingJob, t: float) -> float: ...
    def interval_s(self, job: TrainingJob) -> float: ...
    @property
    def hang_timeout_s(self) -> float: ...


@dataclass
class _Checkpoint:
    t: float  # the save returned
    productive: float  # committed productive GPU-seconds at this checkpoint
    slowdown: float
    durable_at: float = -math.inf  # on storage from then on (inf: never)
    memory: Memory = Memory.NONE  # the memory copy, while it is the newest one
    storage: int = -1
    restore_gb: float = math.nan  # NaN: the whole state

    def survives(self, ev: JobEvent) -> bool:
        in_memory = self.memory is Memory.PEER or (self.memory is Memory.HOST and not ev.host_lost)
        return in_memory or self.durable_at <= ev.t


@dataclass
class TrainingJob:
    """A synchronous (or pipeline) training job on ``nodes``; all its GPUs share one fate."""

    index: int
    spec: Job
    gpus_per_node: int
    start: float
    end: float
    storage: int
    nodes: IntArray
    phase: Phase = Phase.PENDING
    phase_end: float = math.inf
    next_save: float = math.inf
    last_save_end: float = -math.inf
    last_save_s: float = math.nan
    saving: SavePlan | None = None  # the save in progress
    restore_from: _Checkpoint | None = None  # the copy the next restore reads
    io_storage: int = -1  # the backend the current save or restore uses (-1: none or memory)
    chain: int = 0  # saves since the last full one (incremental mode writes a full one every so many)
    planned_restart: bool = False
    replace: set[int] = field(default_factory=set)
    wait_bucket: Bucket = Bucket.PLACEMENT_WAIT
    pending: FloatArray = field(default_factory=lambda: np.zeros(2))  # productive, slowdown since last save
    buckets: FloatArray = field(default_factory=new_buckets)
    history: list[_Checkpoint] = field(default_factory=list)
    failures: int = 0
    restarts: int = 0
    saves: int = 0
    made: float = 0.0  # GPU-seconds of progress made at healthy pace, whether later lost or not
    healthy_share: float = 1.0  # of its GPUs, the share under no fault now (the twin sets it each step)
    healthy_wait: float = 0.0  # GPU-seconds those healthy GPUs spent waiting for the slow ones

    @property
    def gpus(self) -> int:
        return self.spec.nodes * self.gpus_per_node

    @property
    def holds_nodes(self) -> bool:
        return self.phase in (Phase.RUNNING, Phase.SAVING, Phase.DOWN, Phase.STARTING, Phase.RESTORING)

    @property
    def busy(self) -> bool:
        """Its GPUs draw full power (computing, or saving from GPU memory)."""
        return self.phase in (Phase.RUNNING, Phase.SAVING)

    # ---- requests from the policy and the scheduler ---------------------------------------
    def launch(self, t: float, nodes: IntArray, env: JobEnv, *, fresh: bool) -> None:
        """Placed: a fresh job runs at once; after a failure it re-initialises and restores."""
        self.nodes = nodes
        self.replace.clear()
        if fresh:
            self._to_running(t, env)
        else:
            self.restarts += 1
            self.phase, self.phase_end = Phase.STARTING, t + self.spec.restart_s

    def checkpoint_now(self, t: float, env: JobEnv, min_gap_s: float) -> bool:
        if self.phase is not Phase.RUNNING or t - self.last_save_end < min_gap_s:
            return False
        self._start_save(t, env)
        return True

    def restart_elsewhere(self, t: float, nodes: set[int], env: JobEnv) -> None:
        """Swap ``nodes`` out: save first if running, then restart on replacements."""
        self.replace |= nodes
        if self.phase is Phase.RUNNING:
            self.planned_restart = True
            self._start_save(t, env)
        elif self.phase is Phase.SAVING:
            self.planned_restart = True
        elif self.phase in (Phase.STARTING, Phase.RESTORING):
            self.phase, self.phase_end = Phase.RECOVERING, math.inf

    # ---- time -----------------------------------------------------------------------------
    def advance(self, t0: float, t1: float, pace: float, events: list[JobEvent], env: JobEnv) -> None:
        """Account [t0, t1) at the given pace (healthy step time / actual, in (0, 1])."""
        t = t0
        queue = sorted(events, key=lambda e: e.t)
        while t < t1:
            stop = min(t1, queue[0].t) if queue else t1
            t = self._run_until(t, stop, pace, env)
            if queue and t >= queue[0].t:
                self._fail(queue.pop(0), env)

    def _run_until(self, t: float, stop: float, pace: float, env: JobEnv) -> float:
        while t < stop:
            ph = self.phase
            if ph in (Phase.PENDING, Phase.DONE):
                return stop
            if ph is Phase.RUNNING:
                nxt = min(stop, self.next_save)
                dt = (nxt - t) * self.gpus
                self.pending += (dt * pace, dt * (1.0 - pace))
                self.healthy_wait += dt * (1.0 - pace) * self.healthy_share
                self.made += dt * pace
                t = nxt
                if t >= self.next_save:
                    self._start_save(t, env)
                continue
            if ph is Phase.RECOVERING:
                self.buckets[self.wait_bucket] += (stop - t) * self.gpus
                return stop
            nxt = min(stop, self.phase_end)
            bucket = {
                Phase.SAVING: Bucket.CHECKPOINT_SAVE,
                Phase.DOWN: Bucket.RESTART,
                Phase.STARTING: Bucket.RESTART,
                Phase.RESTORING: Bucket.RESTORE,
            }[ph]
            self.buckets[bucket] += (nxt - t) * self.gpus
            t = nxt
            if t >= self.phase_end:
                self._phase_done(t, env)
        return t

    def _start_save(self, t: float, env: JobEnv) -> None:
        self.phase = Phase.SAVING
        self.saving = env.save_plan(self, t)
        self.io_storage = self.saving.storage if self.saving.persist_s == 0 else -1
        self.last_save_s = self.saving.blocking_s
        self.phase_end = t + self.last_save_s

    def persisting(self, t: float) -> int:
        """The backend a background persist is writing to at ``t`` (-1: none)."""
        for c in reversed(self.history):
            if c.t <= t < c.durable_at < math.inf:
                return c.storage
        return -1

    def durable_age(self, t: float) -> float:
        """Seconds since the newest copy that is on storage or in peer memory (or since the job
        began, when it has none: a failure now would start it over)."""
        for c in reversed(self.history):
            if c.durable_at <= t or c.memory is Memory.PEER:
                return t - c.t
        return t - self.start

    def _to_running(self, t: float, env: JobEnv) -> None:
        self.phase, self.phase_end = Phase.RUNNING, math.inf
        self.next_save = t + env.interval_s(self)

    def _phase_done(self, t: float, env: JobEnv) -> None:
        ph = self.phase
        if ph is Phase.SAVING:
            self._commit(t)
            self.saves += 1
            self.last_save_end = t
            if self.planned_restart:
                self.planned_restart = False
                self.phase, self.phase_end = Phase.RECOVERING, math.inf
            else:
                self._to_running(t, env)
        elif ph is Phase.DOWN:
            self.phase, self.phase_end = Phase.RECOVERING, math.inf
        elif ph is Phase.STARTING:
            self.phase, self.phase_end = Phase.RESTORING, t + env.restore_seconds(self, t)
            src = self.restore_from
            self.io_storage = src.storage if src is not None and src.memory is Memory.NONE else -1
        elif ph is Phase.RESTORING:
            self.io_storage = -1
            self._to_running(t, env)

    def _commit(self, t: float) -> None:
        self.buckets[Bucket.PRODUCTIVE] += self.pending[0]
        self.buckets[Bucket.SLOWDOWN] += self.pending[1]
        self.pending[:] = 0.0
        plan = self.saving or SavePlan(0.0, 0.0, Memory.NONE, self.storage)
        self.saving, self.io_storage = None, -1
        if plan.memory is not Memory.NONE:
            for old in self.history:
                old.memory = Memory.NONE  # host memory holds one copy: the newest overwrites it
        self.history.append(
            _Checkpoint(
                t,
                float(self.buckets[Bucket.PRODUCTIVE]),
                float(self.buckets[Bucket.SLOWDOWN]),
                durable_at=t + plan.persist_s,
                memory=plan.memory,
                storage=plan.storage,
                restore_gb=plan.restore_gb,
            )
        )
        if len(self.history) > 512:
            del self.history[:256]

    def _fail(self, ev: JobEvent, env: JobEnv) -> None:
        if self.phase in (Phase.PENDING, Phase.DONE):
            return
        self.failures += 1
        self.buckets[Bucket.ROLLBACK] += self.pending.sum()
        self.pending[:] = 0.0
        self.planned_restart = False
        self.saving, self.io_storage = None, -1
        if ev.host_lost:
            for c in self.history:
                if c.memory is Memory.HOST:
                    c.memory = Memory.NONE
                    if c.durable_at > ev.t:
                        c.durable_at = math.inf  # its persist was reading from the lost memory
        if ev.failure is Failure.SDC:
            self._roll_back_past(ev.since)
        else:
            self._roll_back_to_surviving(ev)
        self.restore_from = self.history[-1] if self.history else None
        if self.phase in (Phase.RUNNING, Phase.SAVING):
            delay = env.hang_timeout_s if ev.failure is Failure.HANG else 0.0
            self.phase, self.phase_end = Phase.DOWN, ev.t + delay
            if delay <= 0:
                self.phase, self.phase_end = Phase.RECOVERING, math.inf
        elif self.phase in (Phase.STARTING, Phase.RESTORING):
            self.phase, self.phase_end = Phase.RECOVERING, math.inf

    def _roll_back_to_surviving(self, ev: JobEvent) -> None:
        """Copies that did not survive (a memory copy on the lost host, a save not yet persisted)
        are no restart point: their work is lost too."""
        keep = len(self.history)
        while keep and not self.history[keep - 1].survives(ev):
            keep -= 1
        if keep < len(self.history):
            self._roll_back_to(self.history[:keep])

    def _roll_back_past(self, since: float) -> None:
        """Checkpoints written after the corruption began hold bad state: their work is lost too."""
        self._roll_back_to([c for c in self.history if c.t <= since])

    def _roll_back_to(self, good: list[_Checkpoint]) -> None:
        base_p, base_s = (good[-1].productive, good[-1].slowdown) if good else (0.0, 0.0)
        lost = (self.buckets[Bucket.PRODUCTIVE] - base_p) + (self.buckets[Bucket.SLOWDOWN] - base_s)
        self.buckets[Bucket.PRODUCTIVE] = base_p
        self.buckets[Bucket.SLOWDOWN] = base_s
        self.buckets[Bucket.ROLLBACK] += lost
        self.history = good

    def finish(self) -> None:
        """The run ends: work not yet saved is counted as saved (a final checkpoint is free)."""
        self.buckets[Bucket.PRODUCTIVE] += self.pending[0]
        self.buckets[Bucket.SLOWDOWN] += self.pending[1]
        self.pending[:] = 0.0
        self.phase = Phase.DONE


@dataclass
class InferenceJob:
    """Replicas, one per node slot; each slot comes and goes on its own.

    Async batch inference counts every completed batch at the replica's pace. Online inference
    counts a replica's requests as useful only while its latency (nominal over pace) meets
    ``slo_factor``; load spreads over the running replicas, each taking up to ``ONLINE_HEADROOM``
    times its fair share, and what nobody can take waits for placement.
    """

    index: int
    spec: Job
    gpus_per_node: int
    start: float
    end: float
    slot_node: IntArray
    slot_ready: FloatArray  # a starting replica serves from this time
    phase: Phase = Phase.PENDING
    buckets: FloatArray = field(default_factory=new_buckets)
    wait_bucket: Bucket = Bucket.PLACEMENT_WAIT
    failures: int = 0
    restarts: int = 0
    made: float = 0.0

    @property
    def gpus(self) -> int:
        return self.spec.nodes * self.gpus_per_node

    @property
    def online(self) -> bool:
        return self.spec.job_class in ONLINE

    def advance(self, t0: float, t1: float, pace: FloatArray) -> None:
        """``pace`` per slot (healthy / actual) at this step."""
        if self.phase in (Phase.PENDING, Phase.DONE) or t1 <= t0:
            return
        n, g, dt = self.slot_node.size, self.gpus_per_node, t1 - t0
        placed = self.slot_node >= 0
        # Time each slot spends starting within the step, the rest running.
        starting = np.where(placed, np.clip(self.slot_ready - t0, 0.0, dt), 0.0)
        run = np.where(placed, dt - starting, 0.0)
        empty = np.where(placed, 0.0, dt)
        if not self.online:
            self.buckets[Bucket.RESTART] += starting.sum() * g
            self.buckets[self.wait_bucket] += empty.sum() * g
            done = float((run * pace).sum()) * g
            self.buckets[Bucket.PRODUCTIVE] += done
            self.buckets[Bucket.SLOWDOWN] += float((run * (1.0 - pace)).sum()) * g
            self.made += done
            return
        # Online: demand is n slot-units, measured in requests, not replica time. Running replicas
        # serve up to ONLINE_HEADROOM x their share each; requests nobody can take are charged to
        # the starting replicas (restart) and the missing ones (waiting), in proportion.
        replicas = float(run.sum()) / dt
        served = min(float(n), ONLINE_HEADROOM * replicas)
        meets = pace >= 1.0 / self.spec.slo_factor
        good = float((run * meets).sum()) / float(run.sum()) if run.sum() > 0 else 0.0
        unserved = float(n) - served
        idle = float(starting.sum() + empty.sum())
        restart_share = float(starting.sum()) / idle if idle > 0 else 0.0
        self.buckets[Bucket.PRODUCTIVE] += served * good * dt * g
        self.made += served * good * dt * g
        self.buckets[Bucket.SLOWDOWN] += served * (1.0 - good) * dt * g
        self.buckets[Bucket.RESTART] += unserved * restart_share * dt * g
        self.buckets[self.wait_bucket] += unserved * (1.0 - restart_share) * dt * g

    def vacate(self, slot: int) -> None:
        """The replica is moved off gracefully (an eviction): nothing in flight is lost."""
        self.slot_node[slot] = -1

    def lose(self, slot: int, t: float) -> None:
        """The slot's node is gone: async loses the batch in flight on it."""
        if self.slot_node[slot] < 0:
            return
        self.failures += 1
        if not self.online and self.slot_ready[slot] <= t:
            lost = min(self.spec.batch_s, max(t - self.slot_ready[slot], 0.0)) * self.gpus_per_node
            self.buckets[Bucket.PRODUCTIVE] -= lost
            self.buckets[Bucket.ROLLBACK] += lost
        self.slot_node[slot] = -1

    def fill(self, slot: int, node: int, t: float, *, fresh: bool) -> None:
        self.slot_node[slot] = node
        self.slot_ready[slot] = t if fresh else t + self.spec.slot_restart_s
        if not fresh:
            self.restarts += 1

    def finish(self) -> None:
        self.phase = Phase.DONE
