"""Cohorts for peer comparison: entities doing the same work or sharing the same plant."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology
from seamguard.model.workload import Workload

IntArray = npt.NDArray[np.int64]


def cohort_groups(
    cohort: str, kind: EntityKind, topology: Topology, workload: Workload
) -> tuple[IntArray, int] | None:
    """(group id per entity of ``kind`` (-1: none), number of groups), or None if undefined."""
    n = topology.count(kind)
    if cohort == "fleet":
        return np.zeros(n, dtype=np.int64), 1
    node_of: IntArray | None = None
    if kind is EntityKind.GPU:
        node_of = topology.gpu_node
    elif kind in (EntityKind.NODE, EntityKind.LINK):
        node_of = np.arange(n, dtype=np.int64)
    if cohort == "job":
        if node_of is None:
            return None
        return workload.node_job[node_of], len(topology.jobs)
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
