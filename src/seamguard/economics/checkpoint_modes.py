"""What each way of checkpointing costs a job right now, and whether the copy would survive.

Four modes, each with a live cost taken from the job's checkpoint size and the target's current
throughput (not its nameplate), and a *validity*: the probability the copy survives the failure
now most likely. Blocking time (the job waits) and time-to-durable (the copy survives the
threat) are kept apart: rollback exposure is set by the last copy that survives, not by the last
save that returned.

* ``full``: the whole state to a storage path; blocks until durable.
* ``incremental``: only what changed since the last full save; restore replays the chain.
* ``in_memory``: a copy in host memory, on the job's own nodes or on buddy nodes in other racks
  (peer memory); blocks only for the device-to-host copy. Lost with the memory that holds it.
* ``tiered``: in memory now, persisted to storage in the background (Google's multi-tier
  checkpointing): blocks like ``in_memory``, durable like ``full`` later, without blocking.

A storage path the engine calls ``recovery_unsafe`` (or worse) holds no valid copy at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from seamguard.model.states import State

IntArray = npt.NDArray[np.int64]
UNSAFE_PATH_STATES = frozenset({State.RECOVERY_UNSAFE, State.QUARANTINE, State.FAILED})


class Mode(StrEnum):
    FULL = "full"
    INCREMENTAL = "incremental"
    IN_MEMORY = "in_memory"
    TIERED = "tiered"


@dataclass(frozen=True)
class JobCheckpoint:
    """What a job saves and where its memory copies would live."""

    size_gb: float  # the whole state (weights, optimizer, data-loader position)
    changed_share: float  # share of the state an incremental save writes
    host_copy_gbps: float  # device-to-host copy, the whole job together (0: no room in host memory)
    overhead_s: float  # coordination cost of any save or restore
    nodes: IntArray  # the job's nodes: each keeps its shard in its own host memory
    racks: IntArray  # their racks
    buddy_nodes: IntArray  # per node, the peer holding a second copy of its shard (empty: none)
    buddy_racks: IntArray
    peer_gbps: float  # network bandwidth to the peers, the whole job together


@dataclass(frozen=True)
class StoragePath:
    name: str
    write_gbps: float  # delivered now, shared with whoever else is saving
    read_gbps: float
    state: State


@dataclass(frozen=True)
class Threat:
    """The failure now most likely, as what it takes down with the host memory on it: nodes (a host
    crash), whole racks (a thermal trip, a power loss), or nothing (a GPU off the bus, a software
    crash: host memory survives), and a storage path that is itself failing."""

    nodes: frozenset[int] = frozenset()
    racks: frozenset[int] = frozenset()
    storage: str | None = None


@dataclass(frozen=True)
class ModeCost:
    mode: Mode
    target: str  # a storage path, "host" or "peer"
    blocking_s: float
    durable_s: float  # from the start of the save until the copy survives the threat
    restore_s: float
    validity: (
        float  # probability the copy survives the threat once durable (0 or 1 with today's threat model)
    )


def mode_costs(job: JobCheckpoint, paths: list[StoragePath], threat: Threat) -> list[ModeCost]:
    """Every mode on every target it can use, with its cost and validity now."""
    out: list[ModeCost] = []
    memory = _memory_copy(job, threat)
    for path in paths:
        valid = _path_valid(path, threat)
        full_s = job.size_gb / _positive(path.write_gbps) + job.overhead_s
        restore_s = job.size_gb / _positive(path.read_gbps) + job.overhead_s
        out.append(ModeCost(Mode.FULL, path.name, full_s, full_s, restore_s, valid))
        inc_s = job.changed_share * job.size_gb / _positive(path.write_gbps) + job.overhead_s
        chain_s = restore_s + job.changed_share * job.size_gb / _positive(path.read_gbps)
        out.append(ModeCost(Mode.INCREMENTAL, path.name, inc_s, inc_s, chain_s, valid))
        if memory is not None:
            blocking, _, mem_restore, mem_valid = memory
            durable = blocking + job.size_gb / _positive(path.write_gbps)
            # Until it is durable the copy is as good as the memory holding it; after, as the path.
            # Once persisted (durable_s), the copy survives if either the memory or the path does;
            # before that only the memory copy exists. Restore reads the memory copy when it holds.
            out.append(
                ModeCost(Mode.TIERED, path.name, blocking, durable, mem_restore, max(mem_valid, valid))
            )
    if memory is not None:
        blocking, target, mem_restore, mem_valid = memory
        out.append(ModeCost(Mode.IN_MEMORY, target, blocking, blocking, mem_restore, mem_valid))
    return out


def _memory_copy(job: JobCheckpoint, threat: Threat) -> tuple[float, str, float, float] | None:
    """(blocking, holder, restore, validity) of the job's memory copy; None without host room.

    The copy is whole only if every shard survives: on its own node, or with peer memory on its
    own node or its buddy."""
    if job.host_copy_gbps <= 0:
        return None
    blocking = job.size_gb / job.host_copy_gbps + job.overhead_s
    own_lost = _lost(job.nodes, job.racks, threat)
    if job.buddy_nodes.size and job.peer_gbps > 0:
        shard_lost = own_lost & _lost(job.buddy_nodes, job.buddy_racks, threat)
        restore = job.size_gb / job.peer_gbps + job.overhead_s
        return blocking + job.size_gb / job.peer_gbps, "peer", restore, 0.0 if shard_lost.any() else 1.0
    restore = job.size_gb / job.host_copy_gbps + job.overhead_s
    return blocking, "host", restore, 0.0 if own_lost.any() else 1.0


def _lost(nodes: IntArray, racks: IntArray, threat: Threat) -> npt.NDArray[np.bool_]:
    return np.isin(nodes, list(threat.nodes)) | np.isin(racks, list(threat.racks))


def _path_valid(path: StoragePath, threat: Threat) -> float:
    return 0.0 if path.state in UNSAFE_PATH_STATES or path.name == threat.storage else 1.0


def _positive(gbps: float) -> float:
    return gbps if gbps > 0 and math.isfinite(gbps) else 1e-9
