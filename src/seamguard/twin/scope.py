"""Which entities a fault may legitimately put in a policy's sights (for detection and lead times).

A detection counts for a fault when the policy flags any entity in the fault's scope: the target,
the node carrying it with its GPUs and uplink, the domain a facility fault covers, and the jobs
that run there or save to the affected backend.
"""

from __future__ import annotations

import numpy as np

from seamguard.model.entities import EntityKind
from seamguard.twin.faults import Fault
from seamguard.twin.fleet import domain_nodes
from seamguard.twin.world import World


def fault_scope(world: World, fault: Fault) -> frozenset[str]:
    topo = world.topology
    names = topo.names
    out = {fault.target}
    nodes = domain_nodes(topo, fault)
    kind = fault.spec.target
    if kind is EntityKind.STORAGE:
        users = np.flatnonzero((world.job_storage == fault.local) | (world.job_fallback == fault.local))
        out.update(f"job/{names[EntityKind.JOB][j]}" for j in users.tolist())
        return frozenset(out)
    if kind is EntityKind.JOB:
        nodes = world.initial_nodes[fault.local]
    for n in nodes.tolist():
        node = names[EntityKind.NODE][n]
        out.update((f"node/{node}", f"link/{node}"))
        out.update(f"gpu/{node}/{s}" for s in range(int((topo.gpu_node == n).sum())))
    if kind in (EntityKind.CDU, EntityKind.RACK, EntityKind.SWITCH):
        racks = np.unique(topo.node_rack[nodes])
        out.update(f"rack/{names[EntityKind.RACK][r]}" for r in racks.tolist())
        if kind is EntityKind.CDU:
            out.update(
                f"pdu/{names[EntityKind.PDU][p]}" for p in np.unique(topo.node_pdu[nodes]).tolist() if p >= 0
            )
    for j, placed in enumerate(world.initial_nodes):
        if np.intersect1d(placed, nodes).size:
            out.add(f"job/{names[EntityKind.JOB][j]}")
    return frozenset(out)
