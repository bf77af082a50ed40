"""What each way of checkpointing costs a job right now, and whether the copy would survive.

Four modes, each with a live cost taken from the job's checkpoint size and the target's current
throughput (not its nameplate), and a *validity*: the probability the copy survives the failure
that would interrupt the job now. Blocking time (the job waits) and time-to-durable (the copy
survives) are kept apart: rollback exposure is set by the last copy that survives, not by the
last save that returned.

* ``full``: the whole state to a storage path; blocks until durable.
* ``incremental``: a full save every ``incremental_every`` saves and, between them, only what
  changed since the last one; priced as the cycle's mean, restore reading the base and half the
  chain on average.
* ``in_memory``: a copy in host memory, on the job's own nodes (``host``) or also on buddy nodes
  in another failure domain (``peer``); blocks only for the device-to-host (and peer) copy. Lost
  with the memory that holds it.
* ``tiered``: in memory now, persisted to storage in the background (Google's multi-tier
  checkpointing): blocks like ``in_memory``, durable like ``full`` later, without blocking.

A storage path the engine calls ``recovery_unsafe`` (or worse) holds no valid copy at all.

Costs are tables, one row per job and one column per (mode, target) candidate, so the engine
prices a thousand jobs in one pass (``cost_table``); ``mode_costs`` is one row as records, for
explanations and the training-side agent.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from seamguard.model.states import State

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
UNSAFE_PATH_STATES = frozenset({State.RECOVERY_UNSAFE, State.QUARANTINE, State.FAILED})


class Mode(StrEnum):
    FULL = "full"
    INCREMENTAL = "incremental"
    IN_MEMORY = "in_memory"
    TIERED = "tiered"


@dataclass(frozen=True)
class JobCheckpoint:
    """What a job saves and how fast it can copy it off its GPUs."""

    size_gb: float  # the whole state (weights, optimizer, data-loader position)
    changed_share: float  # share of the state an incremental save writes
    host_copy_gbps: float  # device-to-host copy, the whole job together (0: no room in host memory)
    peer_gbps: float  # to buddy nodes in another failure domain, the whole job together (0: no peers)
    overhead_s: float  # coordination cost of any save or restore
    incremental_every: int = 4  # a full save every this many in incremental mode


@dataclass(frozen=True)
class StoragePath:
    name: str
    write_gbps: float  # delivered now, shared with whoever else is saving
    read_gbps: float
    state: State


@dataclass(frozen=True)
class Survival:
    """Probability that each memory copy survives the failure that would interrupt the job now:
    ``host`` (on its own nodes: lost with a host crash or a rack event) and ``peer`` (lost only
    when a shard's node and its buddy both go)."""

    host: float = 1.0
    peer: float = 1.0


@dataclass(frozen=True)
class ModeCost:
    mode: Mode
    target: str  # a storage path, "host" or "peer"
    blocking_s: float
    durable_s: float  # from the start of the save until the copy survives the failure
    restore_s: float
    validity: float  # probability the copy survives the failure once durable
    early_validity: float = 0.0  # the same between the save returning and durable (its memory copy)


@dataclass(frozen=True)
class CostTable:
    """Candidates as columns, jobs as rows; a column a job cannot use has validity 0."""

    modes: tuple[Mode, ...]
    targets: tuple[str, ...]
    blocking_s: FloatArray
    durable_s: FloatArray
    restore_s: FloatArray
    validity: FloatArray
    early_validity: FloatArray

    def row(self, job: int) -> list[ModeCost]:
        return [
            ModeCost(
                mode,
                target,
                float(self.blocking_s[job, c]),
                float(self.durable_s[job, c]),
                float(self.restore_s[job, c]),
                float(self.validity[job, c]),
                float(self.early_validity[job, c]),
            )
            for c, (mode, target) in enumerate(zip(self.modes, self.targets, strict=True))
        ]


@dataclass(frozen=True)
class JobArrays:
    """``JobCheckpoint`` for many jobs at once (one entry per job)."""

    size_gb: FloatArray
    changed_share: FloatArray
    incremental_every: FloatArray
    host_copy_gbps: FloatArray
    peer_gbps: FloatArray
    overhead_s: FloatArray
    host_survival: FloatArray
    peer_survival: FloatArray
    uses_path: BoolArray  # (jobs, paths): the path is one of the job's targets


def cost_table(jobs: JobArrays, paths: list[StoragePath]) -> CostTable:
    """Every mode on every target, priced for every job from what each target delivers now."""
    modes: list[Mode] = []
    targets: list[str] = []
    cols: list[tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]] = []
    size, over = jobs.size_gb, jobs.overhead_s
    has_host = jobs.host_copy_gbps > 0
    has_peer = has_host & (jobs.peer_gbps > 0)
    to_host = size / _positive(jobs.host_copy_gbps) + over
    to_peer = size / _positive(jobs.peer_gbps)
    mem_block = np.where(has_peer, to_host + to_peer, to_host)
    mem_restore = np.where(has_peer, to_peer + over, size / _positive(jobs.host_copy_gbps) + over)
    mem_valid = np.where(has_peer, jobs.peer_survival, jobs.host_survival) * has_host
    for p, path in enumerate(paths):
        ok = jobs.uses_path[:, p].astype(np.float64) * (0.0 if path.state in UNSAFE_PATH_STATES else 1.0)
        write, read = _positive_scalar(path.write_gbps), _positive_scalar(path.read_gbps)
        full = size / write + over
        restore = size / read + over
        cycle = jobs.incremental_every
        delta = jobs.changed_share * size
        inc = (full + (cycle - 1.0) * (delta / write + over)) / cycle
        chain = restore + (cycle - 1.0) / 2.0 * delta / read
        modes += [Mode.FULL, Mode.INCREMENTAL, Mode.TIERED]
        targets += [path.name] * 3
        cols.append((full, full, restore, ok, ok))
        cols.append((inc, inc, chain, ok, ok))
        # Until persisted the copy is as good as the memory holding it; once persisted, it survives
        # if either the memory or the path does. Restore reads the memory copy when it holds. A
        # persist to a path that cannot hold it is no tiered save (``in_memory`` is that).
        tiered_valid = np.where(ok > 0, np.maximum(mem_valid, ok), 0.0) * has_host
        cols.append((mem_block, mem_block + size / write, mem_restore, tiered_valid, mem_valid))
    modes.append(Mode.IN_MEMORY)
    targets.append("memory")
    cols.append((mem_block, mem_block, mem_restore, mem_valid, mem_valid))
    stack = [np.stack([np.broadcast_to(c[i], size.shape) for c in cols], axis=1) for i in range(5)]
    return CostTable(tuple(modes), tuple(targets), *stack)


def mode_costs(job: JobCheckpoint, paths: list[StoragePath], survival: Survival) -> list[ModeCost]:
    """Every mode on every target the job can use, with its cost and validity now."""
    one = JobArrays(
        size_gb=np.array([job.size_gb]),
        changed_share=np.array([job.changed_share]),
        incremental_every=np.array([float(job.incremental_every)]),
        host_copy_gbps=np.array([job.host_copy_gbps]),
        peer_gbps=np.array([job.peer_gbps]),
        overhead_s=np.array([job.overhead_s]),
        host_survival=np.array([survival.host]),
        peer_survival=np.array([survival.peer]),
        uses_path=np.ones((1, len(paths)), dtype=bool),
    )
    return [
        cost
        for cost in cost_table(one, paths).row(0)
        # no room in host memory: storage only
        if job.host_copy_gbps > 0 or cost.mode not in (Mode.IN_MEMORY, Mode.TIERED)
    ]


def _positive(gbps: FloatArray) -> FloatArray:
    return np.where((gbps > 0) & np.isfinite(gbps), gbps, 1e-9)


def _positive_scalar(gbps: float) -> float:
    return gbps if gbps > 0 and np.isfinite(gbps) else 1e-9
