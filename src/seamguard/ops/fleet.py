"""The fleet as an operator reads it: one state per entity, rolled up the failure domains.

A node's state is the most severe of its own, its GPUs' and its uplink's, and ``quarantine`` at
least while the safety layer holds it: so a node never reads healthy while most of its GPUs are
quarantined, and ``/v1/status``, ``/v1/fleet`` and the console agree. Racks and CDUs are given
as counts of their nodes and GPUs in each state (a 131,072-GPU fleet is a few hundred rows), and
drilled into on demand (``children``). Computed whole, vectorised, once per tick, and read by
the HTTP threads without a lock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.model.entities import EntityKind
from seamguard.model.states import ROLLUP_SEVERITY, STATE_LABELS, State
from seamguard.model.topology import Topology

IntArray = npt.NDArray[np.int64]

SEVERITY = ROLLUP_SEVERITY
_RANK = np.array([SEVERITY[State(i)] for i in range(len(State))], dtype=np.int64)
_BY_RANK = np.array([s.value for s in sorted(SEVERITY, key=SEVERITY.__getitem__)], dtype=np.int64)
SUSPECTS = 8  # a job's unwell nodes named in the fleet's summary
MAX_CHILDREN = 4096  # a drill-down answers at most this many rows (a rack's nodes, a node's GPUs)


def worst(states: IntArray, groups: IntArray, n_groups: int, floor: IntArray | None = None) -> IntArray:
    """Per group, the most severe of ``states`` (State values) of its members."""
    rank = np.zeros(n_groups, dtype=np.int64) if floor is None else _RANK[floor].copy()
    np.maximum.at(rank, groups, _RANK[states])
    return _BY_RANK[rank]


def counts(states: IntArray, groups: IntArray, n_groups: int) -> IntArray:
    """Per group, how many members are in each state: shape (n_groups, len(State))."""
    flat = np.bincount(groups * len(State) + states, minlength=n_groups * len(State))
    return flat.reshape(n_groups, len(State))


@dataclass(frozen=True)
class FleetView:
    topology: Topology
    now: float
    node_state: IntArray  # rolled up, per local node
    gpu_state: IntArray  # per local GPU
    held: npt.NDArray[np.bool_]  # per local node: the safety layer holds it out of service
    entity_state: IntArray  # the engine's own state per global entity

    def summary(self) -> dict[str, object]:
        """The whole fleet, by domain: per CDU and rack, nodes and GPUs in each state."""
        topo = self.topology
        n_racks, n_cdus = topo.count(EntityKind.RACK), topo.count(EntityKind.CDU)
        rack_nodes = counts(self.node_state, topo.node_rack, n_racks)
        rack_gpus = counts(self.gpu_state, topo.node_rack[topo.gpu_node], n_racks)
        rack_state = self.rack_state
        racks_by_cdu: dict[int, list[dict[str, object]]] = {}
        for r in range(n_racks):
            racks_by_cdu.setdefault(int(topo.rack_cdu[r]), []).append(
                {"id": f"rack/{topo.names[EntityKind.RACK][r]}", "state": STATE_LABELS[rack_state[r]],
                 "nodes": _named(rack_nodes[r]), "gpus": _named(rack_gpus[r])}
            )  # fmt: skip
        cdu_state = self.cdu_state
        cdu_nodes = counts(self.node_state, topo.rack_cdu[topo.node_rack], n_cdus)
        cdu_gpus = counts(self.gpu_state, topo.rack_cdu[topo.node_rack[topo.gpu_node]], n_cdus)
        cdus = [
            {"id": f"cdu/{topo.names[EntityKind.CDU][c]}", "state": STATE_LABELS[cdu_state[c]],
             "nodes": _named(cdu_nodes[c]), "gpus": _named(cdu_gpus[c]), "racks": racks_by_cdu.get(c, [])}
            for c in range(n_cdus)
        ]  # fmt: skip
        return {
            "now": self.now,
            "totals": {"nodes": _named(np.bincount(self.node_state, minlength=len(State))),
                       "gpus": _named(np.bincount(self.gpu_state, minlength=len(State))),
                       "held": int(self.held.sum())},
            "cdus": cdus,
            "leaves": self._leaves(),
            "storage": self._plain(EntityKind.STORAGE),
            "jobs": self._jobs(),
        }  # fmt: skip

    def children(self, eid: str) -> dict[str, object] | None:
        """What is directly below ``eid`` (a CDU's racks, a rack's or leaf's nodes, a node's GPUs);
        None for an unknown id."""
        topo = self.topology
        gidx = topo.lookup(eid)
        if gidx is None:
            return None
        kind, local = topo.kind_of(gidx), int(topo.local[gidx])
        rows: list[dict[str, object]] = []
        if kind is EntityKind.NODE:
            for g in np.flatnonzero(topo.gpu_node == local)[:MAX_CHILDREN].tolist():
                rows.append(
                    {
                        "id": topo.ids[int(topo.members[EntityKind.GPU][g])],
                        "state": STATE_LABELS[self.gpu_state[g]],
                    }
                )
        elif kind in (EntityKind.RACK, EntityKind.SWITCH, EntityKind.CDU):
            if kind is EntityKind.CDU:
                below = np.flatnonzero(topo.rack_cdu[topo.node_rack] == local)
            else:
                below = np.flatnonzero(
                    (topo.node_rack if kind is EntityKind.RACK else topo.node_leaf) == local
                )
            gpus = counts(self.gpu_state, topo.gpu_node, topo.count(EntityKind.NODE))
            names = topo.names[EntityKind.NODE]
            for n in below[:MAX_CHILDREN].tolist():
                rows.append(
                    {
                        "id": f"node/{names[n]}",
                        "state": STATE_LABELS[self.node_state[n]],
                        "held": bool(self.held[n]),
                        "gpus": _named(gpus[n]),
                    }
                )
        return {"id": eid, "kind": kind.value, "state": self.state_of(eid), "children": rows,
                "truncated": len(rows) >= MAX_CHILDREN}  # fmt: skip

    def nodes(self, states: frozenset[str] | None = None, limit: int = MAX_CHILDREN) -> dict[str, object]:
        """Nodes by their one state (by default every unwell one: neither healthy nor unknown, since a
        fleet whose exporter has not answered yet would list every node), most severe first."""
        topo = self.topology
        calm = (State.HEALTHY, State.UNKNOWN)
        wanted = (
            [STATE_LABELS.index(s) for s in states] if states else [s.value for s in State if s not in calm]
        )
        picked = np.flatnonzero(np.isin(self.node_state, wanted))
        picked = picked[np.argsort(-_RANK[self.node_state[picked]], kind="stable")]
        gpus = counts(self.gpu_state, topo.gpu_node, topo.count(EntityKind.NODE))
        names, racks = topo.names[EntityKind.NODE], topo.names[EntityKind.RACK]
        rows = [{"id": f"node/{names[n]}", "state": STATE_LABELS[self.node_state[n]], "held": bool(self.held[n]),
                 "rack": f"rack/{racks[topo.node_rack[n]]}", "gpus": _named(gpus[n])}
                for n in picked[:limit].tolist()]  # fmt: skip
        return {"nodes": rows, "matched": int(picked.size), "truncated": bool(picked.size > limit)}

    @property
    def rack_state(self) -> IntArray:
        """Per rack, the most severe of its own state and its nodes' (rolled up)."""
        topo = self.topology
        return worst(self.node_state, topo.node_rack, topo.count(EntityKind.RACK), self._own(EntityKind.RACK))

    @property
    def cdu_state(self) -> IntArray:
        topo = self.topology
        return worst(self.rack_state, topo.rack_cdu, topo.count(EntityKind.CDU), self._own(EntityKind.CDU))

    def state_of(self, eid: str) -> str | None:
        """The one state an operator sees for ``eid``: a node, rack or CDU rolled up from what is
        below it; anything else the engine's own."""
        topo = self.topology
        gidx = topo.lookup(eid)
        if gidx is None:
            return None
        kind, local = topo.kind_of(gidx), int(topo.local[gidx])
        rolled = {EntityKind.NODE: lambda: self.node_state, EntityKind.RACK: lambda: self.rack_state,
                  EntityKind.CDU: lambda: self.cdu_state}.get(kind)  # fmt: skip
        state = rolled()[local] if rolled is not None else self.entity_state[gidx]
        return str(STATE_LABELS[int(state)])

    # ---- pieces --------------------------------------------------------------------------
    def _own(self, kind: EntityKind) -> IntArray:
        return self.entity_state[self.topology.members[kind]]

    def _plain(self, kind: EntityKind) -> list[dict[str, object]]:
        topo = self.topology
        own = self._own(kind)
        return [
            {"id": f"{kind.value}/{n}", "state": STATE_LABELS[own[i]]} for i, n in enumerate(topo.names[kind])
        ]

    def _leaves(self) -> list[dict[str, object]]:
        topo = self.topology
        n_leaves = topo.count(EntityKind.SWITCH)
        links = counts(self._own(EntityKind.LINK), topo.node_leaf, n_leaves)
        own = self._own(EntityKind.SWITCH)
        return [{"id": f"switch/{n}", "state": STATE_LABELS[own[i]], "links": _named(links[i])}
                for i, n in enumerate(topo.names[EntityKind.SWITCH])]  # fmt: skip

    def _jobs(self) -> list[dict[str, object]]:
        topo = self.topology
        index = {n: i for i, n in enumerate(topo.names[EntityKind.NODE])}
        own = self._own(EntityKind.JOB) if topo.count(EntityKind.JOB) else np.zeros(0, np.int64)
        out: list[dict[str, object]] = []
        for i, j in enumerate(topo.jobs):
            nodes = np.array([index[n] for n in j.nodes if n in index], dtype=np.int64)
            parts = _named(np.bincount(self.node_state[nodes], minlength=len(State))) if nodes.size else {}
            state = STATE_LABELS[own[i]] if i < own.size else "unknown"
            unwell = nodes[~np.isin(self.node_state[nodes], (int(State.HEALTHY), int(State.UNKNOWN)))]
            suspects = [f"node/{topo.names[EntityKind.NODE][n]}" for n in unwell[:SUSPECTS].tolist()]
            out.append({"id": f"job/{j.job}", "class": j.job_class.value, "state": state, "nodes": parts,
                        "suspects": suspects, "suspects_total": int(unwell.size)})  # fmt: skip
        return out


def fleet_view(topology: Topology, states: IntArray, held: IntArray, now: float) -> FleetView:
    """The roll-up of one tick's states; ``held``: local indices of the nodes the safety layer holds."""
    n_nodes = topology.count(EntityKind.NODE)
    gpu_state = states[topology.members[EntityKind.GPU]]
    node_own = states[topology.members[EntityKind.NODE]]
    floor = node_own.copy()
    link = states[topology.members[EntityKind.LINK]] if topology.count(EntityKind.LINK) == n_nodes else None
    if link is not None:
        floor = _BY_RANK[np.maximum(_RANK[floor], _RANK[link])]
    held_mask = np.zeros(n_nodes, dtype=bool)
    held_mask[held] = True
    floor[held_mask] = _BY_RANK[np.maximum(_RANK[floor[held_mask]], SEVERITY[State.QUARANTINE])]
    node_state = worst(gpu_state, topology.gpu_node, n_nodes, floor)
    return FleetView(topology, now, node_state, gpu_state, held_mask, states.copy())


def _named(row: IntArray) -> dict[str, int]:
    return {STATE_LABELS[i]: int(c) for i, c in enumerate(row.tolist()) if c}
