"""Which entities a fault may legitimately put in a policy's sights (for detection and lead times).

The one scope function of the project: the twin's detection and lead times (``fault_scope``) and
the labelled detection suite (``labelled``, through ``scope_of``) both ask it. A detection counts
for a fault when the engine flags any entity in the fault's scope: the target, the nodes its
condition touches (``fleet.domain_nodes``) with their GPUs and uplinks, the racks, PDUs and rows a
facility fault covers, and the jobs that run there or save to the affected backend. An
input-bound fault (``input_stall``, ``dataset_starve``) puts no node or link in scope, only the
jobs it starves and their GPUs (whose utilisation falls): the target, then those jobs and ranks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology
from seamguard.twin.effects import INPUT_SLOWDOWN, input_jobs
from seamguard.twin.faults import Fault
from seamguard.twin.fleet import domain_nodes
from seamguard.twin.world import World

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def scope_of(
    topology: Topology,
    fault: Fault,
    job_nodes: Sequence[IntArray],
    job_storage: IntArray,
    job_fallback: IntArray,
    job_live: BoolArray,
) -> frozenset[str]:
    """The fault's scope on ``topology``; jobs are given by their nodes, checkpoint targets
    (storage local index, fallback or -1) and whether they still run at or after the onset."""
    names = topology.names
    jobs = names[EntityKind.JOB]
    out = {fault.target}
    kind = fault.spec.target
    if fault.kind in INPUT_SLOWDOWN:
        for j in input_jobs(fault, job_storage).tolist():
            if job_live[j]:
                out.add(f"job/{jobs[j]}")
                out.update(_gpus(topology, job_nodes[j]))
        return frozenset(out)
    if kind is EntityKind.STORAGE:
        users = np.flatnonzero(((job_storage == fault.local) | (job_fallback == fault.local)) & job_live)
        out.update(f"job/{jobs[j]}" for j in users.tolist())
        return frozenset(out)
    nodes = job_nodes[fault.local] if kind is EntityKind.JOB else domain_nodes(topology, fault)
    for n in nodes.tolist():
        node = names[EntityKind.NODE][n]
        out.update((f"node/{node}", f"link/{node}"))
    out.update(_gpus(topology, nodes))
    if kind in (EntityKind.CDU, EntityKind.RACK, EntityKind.SWITCH):
        racks = np.unique(topology.node_rack[nodes])
        out.update(f"rack/{names[EntityKind.RACK][r]}" for r in racks.tolist())
        if kind is EntityKind.CDU:
            pdus = np.unique(topology.node_pdu[nodes])
            out.update(f"pdu/{names[EntityKind.PDU][p]}" for p in pdus[pdus >= 0].tolist())
            rows = np.unique(topology.rack_row[racks])
            for row in rows[rows >= 0].tolist():  # a row cooled by this CDU alone
                if np.all(topology.rack_cdu[topology.rack_row == row] == fault.local):
                    out.add(f"row/{names[EntityKind.ROW][row]}")
    for j, placed in enumerate(job_nodes):
        if job_live[j] and np.intersect1d(placed, nodes).size:
            out.add(f"job/{jobs[j]}")
    return frozenset(out)


def _gpus(topology: Topology, nodes: IntArray) -> list[str]:
    """The ids of every GPU on ``nodes``."""
    names = topology.names[EntityKind.NODE]
    return [f"gpu/{names[n]}/{s}" for n in nodes.tolist() for s in range(int((topology.gpu_node == n).sum()))]


def fault_scope(world: World, fault: Fault) -> frozenset[str]:
    """The scope of one of the twin's faults, jobs placed where they started."""
    live = np.ones(len(world.initial_nodes), dtype=bool)
    return scope_of(world.topology, fault, world.initial_nodes, world.job_storage, world.job_fallback, live)
