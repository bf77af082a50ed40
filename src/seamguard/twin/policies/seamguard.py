"""``seamguard``: the real engine, unmodified, reading the twin's telemetry and acting through the
twin's actuators.

The engine's own decisions (``DecisionRecord``: what the planner proposes on every state change)
are carried out as the twin's actions; nothing here second-guesses a state. The adapter only
does what a cluster integration must: it maps an action on a GPU onto its node, merges the
swaps of one job into one restart, and never pulls a node out of a running job when no
admissible replacement exists (nor drains it: the job keeps it at the degraded pace, since
stopping or shrinking a whole job for want of a spare would be the worse trade).

Checkpoints: the engine's checkpoint control loop (``control.checkpoint_loop``) plans every
training job's mode, target and interval from its live hazard, summed over the cells it spans,
and orders a save when the hazard calls for one; the engine is configured as an operator would
configure it for this cluster (each job's state size, the hosts' copy bandwidth, the backends'
nameplates: ``engine_config``). ``seamguard-remote`` is the same with no room in host memory:
saves go to storage only.

In ``windows`` observation mode there is one engine per cell of racks, each on its cell's
sub-topology; between windows an engine sees nothing and keeps its state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from seamguard.config import Config, config_from_mapping, merge_mappings
from seamguard.control.admissibility import node_admission
from seamguard.control.checkpoint_loop import CheckpointLoop, LoopTick, storage_paths
from seamguard.control.classifier import SEVERITY
from seamguard.control.controller import Controller
from seamguard.economics.checkpoint_modes import Mode
from seamguard.economics.hazard import PART_KINDS, JobHazard
from seamguard.economics.hazard_learning import HazardLearner
from seamguard.economics.job_value import job_economics
from seamguard.journal.records import DecisionRecord
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import Inventory, JobRecord
from seamguard.model.states import JobClass, State
from seamguard.model.topology import Topology, build_topology
from seamguard.model.workload import Workload, placement_node_job, workload_from_nodes
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.twin.actions import Action, Detection, Verb
from seamguard.twin.faults import FAULT_KINDS
from seamguard.twin.jobs import TrainingJob
from seamguard.twin.policies.base import FleetView, IntArray, full_save, static_interval
from seamguard.twin.scenario import hard_default
from seamguard.twin.world import World

BAD = frozenset({"degraded", "recovery_unsafe", "quarantine", "harmful", "failed"})
_REMOVE = frozenset({"drain_node", "disable_link", "quarantine_node"})
_STORAGE_OFF = frozenset({"prefer_other_checkpoint_target", "switch_checkpoint_target"})


@dataclass
class _Cell:
    controller: Controller
    topology: Topology
    to_cell: IntArray  # full global index -> cell global index (-1 outside the cell)
    nodes: IntArray  # full node indices of the cell, in cell-local order
    version: int = -1


def engine_config(world: World, overrides: dict[str, Any], *, remote_only: bool = False) -> Config:
    """The engine as an operator would configure it for this cluster: each training job's state
    size, the hosts' copy bandwidth and the backends' nameplates, from the scenario; then the
    scenario's own overrides (``policies.seamguard.config``)."""
    sc = world.scenario
    sp = sc.physics.storage
    gpn = sc.cluster.gpus_per_node
    base: dict[str, Any] = {
        "hazard": _nominal_rates(world),
        "checkpoint": {
            "defaults": {
                "host_copy_gbps_per_gpu": sp.host_copy_gbps_per_gpu,
                "peer_gbps_per_node": sp.peer_gbps_per_node,
                "overhead_s": sp.overhead_s,
                "changed_share": sp.changed_share,
                "incremental_every": sp.incremental_every,
                "collective_timeout_s": sc.operations.hang_timeout_s,
            },
            "jobs": {
                j.name: {"state_gb_per_gpu": j.checkpoint_gb / (j.nodes * gpn)} for j in sc.jobs if j.training
            },
            "storage": {"default": {"write_gbps": sp.write_gbps, "read_gbps": sp.read_gbps}},
        },
    }
    merged = merge_mappings(base, overrides)
    if remote_only:
        merged = merge_mappings(merged, {"checkpoint": {"defaults": {"host_copy_gbps_per_gpu": 0.0}}})
        for job in merged["checkpoint"]["jobs"].values():
            job["host_copy_gbps_per_gpu"] = 0.0
    return config_from_mapping(merged)


def _nominal_rates(world: World) -> dict[str, Any]:
    """The fleet's failure rates as its operator knows them from history: the scenario's hazard
    table at its ``hazard_scale`` (what ``young-daly`` is told too), not the drift to come."""
    sc = world.scenario
    per_kind: dict[str, float] = {}
    software = 0.0
    for h in sc.hazards:
        if not hard_default(h.kind, h.hard):
            continue
        rate = h.per_component_day * sc.hazard_scale
        target = FAULT_KINDS[h.kind].target
        if target is EntityKind.JOB:
            software += rate
        else:
            per_kind[target.value] = per_kind.get(target.value, 0.0) + rate
    if not sc.hazards:
        return {}
    return {
        "base_per_day": {k.value: per_kind.get(k.value, 0.0) for k in PART_KINDS},
        "software_per_gpu_day": software,
    }


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

    def __init__(self, world: World, overrides: dict[str, Any], *, remote_only: bool = False) -> None:
        self.world = world
        config = engine_config(world, overrides, remote_only=remote_only)
        self.config = config
        self.name = "seamguard-remote" if remote_only else "seamguard"
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
            self.cells.append(_Cell(Controller(sub, config, plan_checkpoints=False), sub, to_cell, nodes))
        self.detections: list[Detection] = []
        self.transitions: list[tuple[float, str, str, str]] = []
        self.decisions = 0
        self._admission: dict[JobClass, IntArray] = {}
        self.checkpoints = CheckpointLoop(config, topo)
        # One learner for the whole fleet: a cell's engine ticks only in its windows, but the
        # fleet is exposed all the time, and every failure opens a window where it is seen.
        self.learner = HazardLearner(config.hazard.learn_halflife_s, config.hazard.learn_prior_failures)
        self._plans: LoopTick | None = None
        self._workload: tuple[int, Workload] | None = None
        self._storage_index = {name: i for i, name in enumerate(topo.names[EntityKind.STORAGE])}

    # ---- the policy protocol ----------------------------------------------------------------
    def interval_s(self, job: TrainingJob) -> float:
        plans = self._plans
        if plans is None or plans.plans.choice[job.index] < 0:
            return static_interval(self.world, job, self.world.scenario.policies.young_daly.mtbf_h)
        return min(float(plans.plans.interval_s[job.index]), self.world.scenario.duration_s)

    def checkpoint_choice(self, job: TrainingJob) -> tuple[Mode, int]:
        plans = self._plans
        choice = -1 if plans is None else int(plans.plans.choice[job.index])
        if plans is None or choice < 0:
            return full_save(job)
        mode, target = plans.table.modes[choice], plans.table.targets[choice]
        return mode, self._storage_index.get(target, -1)

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
        if batches:
            failures = sum(self.cells[cell_id].controller.new_failures for cell_id, _ in batches)
            self.learner.record(now, sum(c.controller.exposure_per_s() for c in self.cells), failures)
            actions.extend(self._plan_checkpoints(now, view, batches[-1][0]))
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
    def _plan_checkpoints(self, now: float, view: FleetView, fresh_cell: int) -> list[Action]:
        """One checkpoint plan per job over the hazard of every cell it spans; a save ordered when
        the hazard calls for one the job has not made."""
        topo = self.topology
        version = view.placement_version()
        if self._workload is None or self._workload[0] != version:
            node_job = placement_node_job(topo, view.placement())
            self._workload = (version, workload_from_nodes(topo, node_job))
        workload = self._workload[1]
        for c in self.cells:  # a cell not yet observed still carries its share of every job
            self._place(c, view)
        hazard = self._hazard()
        cell = self.cells[fresh_cell]
        paths = storage_paths(self.config, cell.topology, cell.controller.store, cell.controller.states)
        n = len(topo.jobs)
        since = np.array([view.durable_age(j) for j in range(n)])
        tick = self.checkpoints.step(now, workload, hazard, paths, since, np.zeros(n, dtype=np.int64))
        self._plans = tick
        # Every cell values its suspect parts against the whole job's economics.
        econ = job_economics(self.config, topo, workload.job_gpus, tick.plans, tick.table, hazard.rate_per_s,
                             since, now)  # fmt: skip
        pick = np.maximum(tick.plans.choice, 0)
        save_s = np.where(tick.plans.choice >= 0, tick.table.blocking_s[np.arange(n), pick], np.nan)
        for c in self.cells:
            c.controller.set_job_economics(econ, save_s)
        out = []
        for d in tick.decisions:
            if d.action == "checkpoint_now":
                out.append(Action(Verb.CHECKPOINT, d.entity, d.reason))
        return out

    def _hazard(self) -> JobHazard:
        """Every job's hazard, summed over the cells (each holds its share of the job's parts),
        at the failure rate the whole fleet has shown."""
        scale = self.learner.scale()
        parts = [c.controller.job_hazard(scale) for c in self.cells]
        if len(parts) == 1:
            return parts[0]
        return JobHazard(
            rate_per_s=np.sum([h.rate_per_s for h in parts], axis=0),
            nominal_per_s=np.sum([h.nominal_per_s for h in parts], axis=0),
            top_part=np.full(parts[0].top_part.size, -1, dtype=np.int64),  # cell indices: not shared
            host_loss_per_s=np.sum([h.host_loss_per_s for h in parts], axis=0),
        )

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
