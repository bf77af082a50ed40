"""Cohorts for peer comparison: entities doing the same work or sharing the same plant."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology
from seamguard.model.workload import Workload
from seamguard.model.world import WorldChange

IntArray = npt.NDArray[np.int64]


def by_node_type(
    groups: IntArray, n_groups: int, node_of: IntArray, topology: Topology
) -> tuple[IntArray, int]:
    """``groups`` split by node type: mixed fleets compare like with like, without configuration."""
    n_types = topology.n_node_types
    if n_types <= 1:
        return groups, n_groups
    return np.where(groups >= 0, groups * n_types + topology.node_type[node_of], -1), n_groups * n_types


def cohort_groups(
    cohort: str, kind: EntityKind, topology: Topology, workload: Workload
) -> tuple[IntArray, int] | None:
    """(group id per entity of ``kind`` (-1: none), number of groups), or None if undefined.

    Entities on nodes (GPUs, nodes, uplinks) are compared only within their node type."""
    found = _cohort_groups(cohort, kind, topology, workload)
    if found is None or cohort == "model":
        return found
    node_of = _node_of(kind, topology)
    if node_of is None:
        return found
    return by_node_type(found[0], found[1], node_of, topology)


def _node_of(kind: EntityKind, topology: Topology) -> IntArray | None:
    if kind is EntityKind.GPU:
        return topology.gpu_node
    if kind is EntityKind.MIG:
        return topology.gpu_node[topology.mig_gpu]
    if kind in (EntityKind.NODE, EntityKind.LINK):
        return np.arange(topology.count(kind), dtype=np.int64)
    return None


def _cohort_groups(
    cohort: str, kind: EntityKind, topology: Topology, workload: Workload
) -> tuple[IntArray, int] | None:
    if cohort == "fleet":
        return np.zeros(topology.count(kind), dtype=np.int64), 1
    # MIG instances have no cohort of their own but the fleet: they follow their GPU
    node_of = None if kind is EntityKind.MIG else _node_of(kind, topology)
    if cohort in ("job", "work"):
        if node_of is None:
            return None
        groups = workload.node_job[node_of]
        if cohort == "work":  # the idle are a cohort of their own: the same (no) load
            return np.where(groups >= 0, groups, len(topology.jobs)), len(topology.jobs) + 1
        return groups, len(topology.jobs)
    if cohort == "leaf":
        if node_of is None:
            return None
        return topology.node_leaf[node_of], topology.count(EntityKind.SWITCH)
    if cohort == "model":
        if node_of is None or not topology.models:
            return None
        return topology.node_model[node_of], len(topology.models)
    if cohort == "cdu":
        if kind is EntityKind.RACK:
            return topology.rack_cdu, topology.count(EntityKind.CDU)
        if node_of is None:
            return None
        return topology.rack_cdu[topology.node_rack[node_of]], topology.count(EntityKind.CDU)
    return None


# The kind whose local index numbers each cohort's groups (fleet: one group, 0).
_GROUP_KIND = {
    "job": EntityKind.JOB,
    "work": EntityKind.JOB,
    "leaf": EntityKind.SWITCH,
    "cdu": EntityKind.CDU,
}
GONE = -3  # a group whose cohort left the world: equal to no group, so its members count as moved


def translate_groups(cohort: str, kind: EntityKind, groups: IntArray, change: WorldChange) -> IntArray:
    """Group ids of ``kind``'s members (already in the new member order) from the old world's
    numbering into the new one's: a job's index moves when an earlier job ends, but its members
    have not changed cohort, so their learnt baselines must not be reset (``PeerMemory.settled``).
    Negative ids (no group, never grouped) are kept."""
    old, new = change.old, change.new
    n_types_old = old.n_node_types
    node_of = _node_of(kind, new)
    split = node_of is not None and n_types_old > 1 and cohort != "model"
    base = np.where(groups >= 0, groups // n_types_old, groups) if split else groups.copy()
    if cohort in _GROUP_KIND:
        back = change.back(_GROUP_KIND[cohort])
        back = np.where(back >= 0, back, GONE)  # a job that ended left its members idle: they moved
        table = np.append(back, len(new.jobs) if cohort == "work" else GONE)  # "work": the idle group
        base = np.where(base >= 0, table[np.clip(base, 0, back.size)], base)
    elif cohort == "model":
        where = {m: i for i, m in enumerate(new.models)}
        table = np.array([where.get(m, GONE) for m in old.models] or [GONE], dtype=np.int64)
        base = np.where(base >= 0, table[np.clip(base, 0, table.size - 1)], base)
    n_types_new = new.n_node_types
    if node_of is None or n_types_new <= 1 or cohort == "model":
        return base
    return np.where(base >= 0, base * n_types_new + new.node_type[node_of], base)
