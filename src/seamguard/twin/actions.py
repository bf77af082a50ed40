"""What a policy can ask the twin's actuators to do, and what the policy may know of the fleet."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Verb(StrEnum):
    DRAIN = "drain"  # no new work (Slurm drain): the node leaves when its job next restarts
    EVICT = "evict"  # drain and checkpoint-and-restart its job elsewhere now
    SWAP = "swap"  # take it out of its synchronous job at a planned restart, keep it in service
    CHECKPOINT = "checkpoint"  # the job saves now
    REROUTE = "reroute"  # move a node's traffic off its uplink
    RESTORE_ROUTE = "restore_route"
    SWITCH_STORAGE = "switch_storage"  # jobs saving to this backend move to their fallback
    RESTORE_STORAGE = "restore_storage"
    ISLAND = "island"  # move every job out of a rack, CDU or leaf domain, if spares allow (else it saves)
    ISLAND_STOP = "island_stop"  # the same, and a job with nowhere to go stops and waits for room


@dataclass(frozen=True)
class Action:
    verb: Verb
    target: str  # entity id: node/..., job/..., storage/..., rack/..., cdu/..., switch/...
    reason: str


@dataclass(frozen=True)
class Detection:
    """A policy's first word that something is wrong with an entity (for lead times)."""

    t: float
    entity: str
    state: str
