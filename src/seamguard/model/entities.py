"""Entity kinds and the stable string ids of the telemetry contract."""

from __future__ import annotations

from enum import StrEnum


class EntityKind(StrEnum):
    SITE = "site"
    HALL = "hall"
    ROW = "row"
    RACK = "rack"
    CDU = "cdu"
    PDU = "pdu"
    NODE = "node"
    GPU = "gpu"
    MIG = "mig"  # a MIG GPU instance: gpu/<node>/<index>/mig/<instance>, under its GPU
    NIC = "nic"
    SWITCH = "switch"
    LINK = "link"
    STORAGE = "storage"
    JOB = "job"
    POOL = "pool"  # a serving pool: pool/<pool> (``model.serving``)
    REPLICA = "replica"  # a serving replica: replica/<replica>, on one or more nodes
    PATH = "path"  # a KV-transfer path between serving pools or replicas: path/<from>~<to>


KIND_BY_PREFIX: dict[str, EntityKind] = {k.value: k for k in EntityKind}


def entity_id(kind: EntityKind, *parts: str | int) -> str:
    return "/".join([kind.value, *(str(p) for p in parts)])


def gpu_id(node: str, index: int) -> str:
    return f"gpu/{node}/{index}"


MIG_SEGMENT = "/mig/"


def mig_id(node: str, index: int, instance: int) -> str:
    """A MIG instance's id names its GPU first, so a reader sees where it lives."""
    return f"gpu/{node}/{index}{MIG_SEGMENT}{instance}"


def kind_of(eid: str) -> EntityKind:
    """The kind of an entity id, or ValueError naming the id and the known prefixes."""
    prefix, sep, rest = eid.partition("/")
    kind = KIND_BY_PREFIX.get(prefix)
    if kind is EntityKind.GPU and MIG_SEGMENT in eid:
        return EntityKind.MIG
    if kind is None or not sep or not rest:
        raise ValueError(
            f"malformed entity id {eid!r}: expected '<kind>/<name>' with kind one of "
            f"{', '.join(KIND_BY_PREFIX)}"
        )
    return kind
