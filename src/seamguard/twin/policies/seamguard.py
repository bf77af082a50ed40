"""``seamguard``: the real engine, unmodified, reading the twin's telemetry and acting through the
twin's actuators.

The engine's own decisions (``DecisionRecord``: what the planner proposes on every state change)
are carried out as the twin's actions; nothing here second-guesses a state. The adapter only
does what a cluster integration must: it maps an action on a GPU onto its node, merges the
swaps of one job into one restart, and never pulls a node out of a running job when no
admissible replacement exists (nor drains it: the job keeps it at the degraded pace, since
stopping or shrinking a whole job for want of a spare would be the worse trade).

Checkpoints: Daly's interval from the nominal failure rate, like ``young-daly``, plus every
``checkpoint_now`` the engine orders. (The checkpoint control loop replaces this with a
hazard-driven one.)

In ``windows`` observation mode there is one engine per cell of racks, each on its cell's
sub-topology; between windows an engine sees nothing and keeps its state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from seamguard.config import Config
from seamguard.control.admissibility import node_admission
from seamguard.control.classifier import SEVERITY
from seamguard.control.controller import Controller
from seamguard.journal.records import DecisionRecord
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import Inventory, JobRecord
from seamguard.model.states import JobClass, State
from seamguard.model.topology import Topology, build_topology
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.twin.actions import Action, Detection, Verb
from seamguard.twin.jobs import TrainingJob
from seamguard.twin.policies.base import FleetView, IntArray, static_interval
from seamguard.twin.world import World

BAD = frozenset({"degraded", "recovery_unsafe", "quarantine", "harmful", "failed"})
_REMOVE = frozenset({"drain_node", "disable_link"})
_STORAGE_OFF = frozenset({"prefer_other_checkpoint_target", "switch_checkpoint_target"})


@dataclass
class _Cell:
    controller: Controller
    topology: Topology
    to_cell: IntArray  # full global index -> cell global index (-1 outside the cell)
    nodes: IntArray  # full node indices of the cell, in cell-local order
    version: int = -1


def _sub_topology(world: World, nodes: IntArray) -> Topology:
    inv = world.inventory
    keep = [inv.nodes[i] for i in nodes.tolist()]
    names = {r.node for r in keep}
    jobs = tuple(
        JobRecord(j.job, j.job_class, tuple(n for n in j.nodes if n in names), j.start, j.end, j.storage)
        for j in world.topology.jobs
    )
    return build_topology(Inventory(tuple(keep)), jobs, storage=world.topology.names[EntityKind.STORAGE])


def _worst_per_node(cell: _Cell) -> IntArray:
    """Per node of the cell (cell order), the most severe state of the node, its GPUs and uplink."""
    topo, st = cell.topology, cell.controller.states
    node_st = st[topo.members[EntityKind.NODE]]
    worst = node_st.copy()
    for kind_states, owner in (
        (st[topo.members[EntityKind.GPU]], topo.gpu_node),
        (st[topo.members[EntityKind.LINK]], np.arange(node_st.size)),
    ):
        rank = np.full(node_st.size, -2)
        np.maximum.at(rank, owner, SEVERITY[kind_states])
        pick = np.full(node_st.size, -1)
        hit = SEVERITY[kind_states] == rank[owner]
        pick[owner[hit]] = kind_states[hit]
        better = rank > SEVERITY[worst]
        worst[better] = pick[better]
    return worst


class SeamguardPolicy:
    name = "seamguard"

    def __init__(self, world: World, config: Config) -> None:
        self.world = world
        self.config = config
        self.topology = world.topology
        topo = world.topology
        self.cells: list[_Cell] = []
        for cell in range(world.n_cells):
            nodes = np.flatnonzero(world.node_cell == cell).astype(np.int64)
            if world.n_cells == 1:
                sub, to_cell = topo, np.arange(topo.n_entities, dtype=np.int64)
            else:
                sub = _sub_topology(world, nodes)
                to_cell = np.array([sub.index.get(eid, -1) for eid in topo.ids], dtype=np.int64)
            self.cells.append(_Cell(Controller(sub, config), sub, to_cell, nodes))
        self.detections: list[Detection] = []
        self.transitions: list[tuple[float, str, str, str]] = []
        self.decisions = 0
        self._admission: dict[JobClass, IntArray] = {}

    # ---- the policy protocol ----------------------------------------------------------------
    def interval_s(self, job: TrainingJob) -> float:
        return static_interval(self.world, job, self.world.scenario.policies.young_daly.mtbf_h)

    def observe(
        self, now: float, batches: Sequence[tuple[int, TelemetryBatch]], view: FleetView
    ) -> list[Action]:
        actions: list[Action] = []
        for cell_id, batch in batches:
            cell = self.cells[cell_id]
            self._place(cell, view)
            result = cell.controller.tick(now, self._translate(cell, batch))
            for t in result.transitions:
                self.transitions.append((t.ts, t.entity, t.to_state, t.reason))
                if t.to_state in BAD:
                    self.detections.append(Detection(t.ts, t.entity, t.to_state))
            self.decisions += len(result.decisions)
            actions.extend(self._act(result.decisions, view))
        self._admission.clear()
        return actions

    def admission(self, job_class: JobClass) -> IntArray:
        cached = self._admission.get(job_class)
        if cached is not None:
            return cached
        out = np.zeros(self.topology.count(EntityKind.NODE), dtype=np.int64)
        for cell in self.cells:
            ctl = cell.controller
            out[cell.nodes] = node_admission(
                self.config, cell.topology, ctl.states, job_class, ctl.lemon_memory.lemons()
            )
        self._admission[job_class] = out
        return out

    def returned(self, now: float, nodes: IntArray) -> None:
        names = self.topology.names[EntityKind.NODE]
        for cell in self.cells:
            mine = nodes[np.isin(nodes, cell.nodes)]
            if mine.size:
                for t in cell.controller.mark_repaired(
                    now, [f"node/{names[n]}" for n in mine.tolist()], "returned from repair"
                ):
                    self.transitions.append((t.ts, t.entity, t.to_state, t.reason))
        self._admission.clear()

    def node_states(self) -> IntArray:
        """Per node, the most severe state of the node, its GPUs and its uplink."""
        out = np.full(self.topology.count(EntityKind.NODE), int(State.HEALTHY), dtype=np.int64)
        for cell in self.cells:
            out[cell.nodes] = _worst_per_node(cell)
        return out

    def unsettled_nodes(self, cell_id: int) -> IntArray:
        """Nodes of the cell the engine still holds in a state other than healthy."""
        cell = self.cells[cell_id]
        unsettled: IntArray = cell.nodes[_worst_per_node(cell) != int(State.HEALTHY)]
        return unsettled

    # ---- pieces ------------------------------------------------------------------------------
    def _place(self, cell: _Cell, view: FleetView) -> None:
        version = view.placement_version()
        if cell.version == version:
            return
        placement = view.placement()
        if self.world.n_cells > 1:
            names = set(cell.topology.names[EntityKind.NODE])
            placement = {job: [n for n in nodes if n in names] for job, nodes in placement.items()}
        cell.controller.set_placement(placement)
        cell.version = version

    @staticmethod
    def _translate(cell: _Cell, batch: TelemetryBatch) -> TelemetryBatch:
        ent = cell.to_cell[batch.entity]
        keep = ent >= 0
        if keep.all():
            return TelemetryBatch(ent, batch.signal, batch.timestamp, batch.value)
        return TelemetryBatch(ent[keep], batch.signal[keep], batch.timestamp[keep], batch.value[keep])

    def _node_of(self, eid: str) -> int | None:
        kind, _, name = eid.partition("/")
        topo = self.topology
        if kind in ("node", "link"):
            gidx = topo.lookup(f"node/{name}")
            return None if gidx is None else int(topo.local[gidx])
        if kind == "gpu":
            gidx = topo.lookup(eid)
            return None if gidx is None else int(topo.gpu_node[int(topo.local[gidx])])
        return None

    def _act(self, decisions: Sequence[DecisionRecord], view: FleetView) -> list[Action]:
        out: list[Action] = []
        taken: dict[int, int] = {}  # job -> nodes already pulled out this tick
        for d in decisions:
            node = self._node_of(d.entity)
            why = f"{d.state}: {d.reason}"
            if d.action in _REMOVE or d.action == "replace_rank":
                if node is None:
                    continue
                job = view.job_of(node)
                verb = Verb.SWAP if d.action == "replace_rank" else Verb.EVICT
                if job >= 0 and view.is_running(job):
                    cls = self.world.scenario.jobs[job].job_class
                    need = taken.get(job, 0) + 1
                    if view.can_replace(job, need, self.admission(cls)):
                        taken[job] = need
                        out.append(Action(verb, f"node/{self.topology.names[EntityKind.NODE][node]}", why))
                        continue
                # No job: a Slurm drain keeps new work off it. A running job with no admissible spare
                # keeps the node: draining it would only stop the job from fitting again at its next
                # restart, a worse trade than running at the degraded pace until a spare appears.
                if verb is Verb.EVICT and not (job >= 0 and view.is_running(job)):
                    out.append(Action(Verb.DRAIN, f"node/{self.topology.names[EntityKind.NODE][node]}", why))
            elif d.action == "checkpoint_now":
                out.append(Action(Verb.CHECKPOINT, d.entity, why))
            elif d.action == "reroute" and node is not None:
                out.append(Action(Verb.REROUTE, d.entity, why))
            elif d.action == "restore_route" and node is not None:
                out.append(Action(Verb.RESTORE_ROUTE, d.entity, why))
            elif d.action in ("island_domain", "isolate_switch"):
                out.append(Action(Verb.ISLAND, d.entity, why))
            elif d.action in _STORAGE_OFF:
                out.append(Action(Verb.SWITCH_STORAGE, d.entity, why))
            elif d.action == "restore_checkpoint_target":
                out.append(Action(Verb.RESTORE_STORAGE, d.entity, why))
        return out
