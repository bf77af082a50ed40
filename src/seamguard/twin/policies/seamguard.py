"""``seamguard``: the daemon's decision path, unmodified, reading the twin's telemetry.

Each tick runs what ``seamguard run`` runs: the engine (``Controller``), then the one post-engine
stage (``actuators.dispatch.actuate``): the daemon's safety layer (budgets per fleet, domain and
hour, minimum capacity, the storm brake, recovery delays that double for repeat offenders) and a
dispatcher whose one enforcing actuator is the twin itself (``twin.actuator``). Nothing here
second-guesses a decision: what the safety layer refuses, queues or holds waits here as it would
on a live cluster, and a node the safety layer holds in quarantine is admitted to no job until it
releases it, whatever the repair crew did meanwhile (a drained Slurm node stays drained until
resumed).

Checkpoints: the engine's checkpoint control loop (``control.checkpoint_loop``) plans every
training job's mode, target and interval from its live hazard and the age of its last durable copy
(which the job's runtime reports as telemetry), and orders a save when the hazard calls for one;
the engine is configured as an operator would configure it for this cluster (each job's state
size, the hosts' copy bandwidth, the backends' nameplates: ``engine_config``). ``seamguard-remote``
is the same with no room in host memory: saves go to storage only.

In ``windows`` observation mode there is one engine per cell of racks, each on its cell's
sub-topology (a shard); between windows an engine sees nothing and keeps its state. A job spans
shards, so its checkpoints are planned over every shard's hazard here, and each shard values its
suspect parts against that plan (``Controller.set_job_economics``). The safety layer stays one,
fleet-wide.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from seamguard.actuators.dispatch import Dispatcher, Route, actuate
from seamguard.actuators.guard import GuardConfig
from seamguard.actuators.sections import Mode as ActuatorMode
from seamguard.config import Config, config_from_mapping
from seamguard.control.admissibility import node_admission
from seamguard.control.checkpoint_loop import CheckpointLoop, LoopTick, storage_paths
from seamguard.control.classifier import SEVERITY
from seamguard.control.controller import Controller
from seamguard.control.engine_world import vouched_repair
from seamguard.control.safety import SafetyLayer
from seamguard.control.safety_config import SafetyConfig, safety_from_mapping
from seamguard.economics.checkpoint_modes import Mode
from seamguard.economics.hazard import PART_KINDS, JobHazard
from seamguard.economics.hazard_learning import learner_for
from seamguard.economics.job_value import job_economics
from seamguard.journal.records import DecisionRecord, TransitionRecord
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import Inventory, JobRecord
from seamguard.model.states import JobClass, State
from seamguard.model.topology import Topology, build_topology
from seamguard.model.workload import Workload, placement_node_job, workload_from_nodes
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.twin.actions import Action, Detection
from seamguard.twin.actuator import TwinActuator
from seamguard.twin.faults import FAULT_KINDS
from seamguard.twin.jobs import TrainingJob
from seamguard.twin.policies.base import FleetView, IntArray, full_save, lemon_boost, static_interval
from seamguard.twin.scenario import hard_default
from seamguard.twin.world import World
from seamguard.yaml_input import merge_mappings

BAD = frozenset({"degraded", "recovery_unsafe", "quarantine", "harmful", "failed"})


MAX_ACTED = 20_000  # actions carried out kept per run for the report's timeline
# ``seamguard-nofirewall``: a gray leaf is never contained (rerouted, saved, admission restricted),
# what the engine did before its leaf was valued: the firewall's worth is the difference.
NO_FIREWALL: dict[str, Any] = {
    "actions": {"switch": {"degraded": ["reroute"], "quarantine": ["checkpoint_now"]}}
}


@dataclass
class _Cell:
    controller: Controller
    topology: Topology
    to_cell: IntArray  # full global index -> cell global index (-1 outside the cell)
    nodes: IntArray  # full node indices of the cell, in cell-local order
    version: int = -1


def engine_config(world: World, overrides: dict[str, Any], *, remote_only: bool = False) -> Config:
    """The engine as an operator would configure it for this cluster: each training job's state
    size and restart time, the hosts' copy bandwidth, the backends' nameplates, the GPUs' shutdown temperature and
    the repair turnaround, from the scenario; then the scenario's own overrides (``policies.seamguard.config``)."""
    sc = world.scenario
    sp = sc.physics.storage
    gpn = sc.cluster.gpus_per_node
    base: dict[str, Any] = {
        # The GPUs' shutdown temperature, as nvidia-smi reports it to the operator.
        "hazard": {**_nominal_rates(world), "thermal_trip": {"shutdown_c": sc.physics.compute.trip_c}},
        # The site's repair turnaround for a part that failed: what a job with no spare waits.
        **(
            {"economics": {"repair_s": sc.operations.repair_h * 3600.0}} if sc.operations.repair_h > 0 else {}
        ),
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
                # Each job's restart time, as its operator knows it from its own restarts.
                j.name: {"state_gb_per_gpu": j.checkpoint_gb / (j.nodes * gpn), "restart_s": j.restart_s}
                for j in sc.jobs
                if j.training
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


def site_safety(world: World, overrides: dict[str, Any]) -> SafetyConfig:
    """The safety layer as a site sizes it for its cluster (``site_budgets``), then the scenario's
    own ``safety`` overrides (``policies.seamguard.config.safety``)."""
    return safety_from_mapping(merge_mappings(site_budgets(world), overrides.get("safety") or {}))


def site_budgets(world: World) -> dict[str, Any]:
    """The safety layer's budgets as a site sizes them for its cluster: the shipped defaults (made
    for fleets of thousands of nodes, where 5 % is a rack or two), widened only as far as containing
    one whole CDU needs, which a small cluster's percentages would otherwise forbid outright."""
    sc = world.scenario.cluster
    nodes = sc.cdus * sc.racks_per_cdu * sc.nodes_per_rack
    cdu = sc.racks_per_cdu * sc.nodes_per_rack
    share = 100.0 * cdu / nodes
    return {
        "budgets": {
            "max_nodes": max(16, cdu),
            "max_fleet_pct": max(5.0, share),
            "per_hour_pct": 100.0,  # ``per_hour`` (8) bounds a small cluster; 2 % of 64 nodes is one
            "partitions": {"fleet": {"min_in_service_pct": min(80.0, 100.0 - share)}},
        }
    }


def _nominal_rates(world: World) -> dict[str, Any]:
    """The fleet's failure rates as its operator knows them from history: the scenario's hazard
    table at its ``hazard_scale``, hardware raised by its lemons' share (``lemon_boost``): what
    ``young-daly`` is told too, not the drift to come."""
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
    boost = lemon_boost(world)  # the fleet's lemons, as young-daly is told them (not which nodes)
    hardware = {EntityKind.GPU.value, EntityKind.NODE.value, EntityKind.LINK.value}
    rates = {
        k.value: per_kind.get(k.value, 0.0) * (boost if k.value in hardware else 1.0) for k in PART_KINDS
    }
    return {
        "base_per_day": rates,
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

    def __init__(
        self, world: World, overrides: dict[str, Any], *, remote_only: bool = False, name: str = "seamguard"
    ) -> None:
        self.world = world
        config = engine_config(world, overrides, remote_only=remote_only)
        self.config = config
        self.name = name
        self.topology = world.topology
        topo = world.topology
        self.sharded = world.n_cells > 1
        self.cells: list[_Cell] = []
        for cell in range(world.n_cells):
            nodes = np.flatnonzero(world.node_cell == cell).astype(np.int64)
            if not self.sharded:  # exactly the daemon's engine, enforcing through its one actuator
                engine = Controller(topo, config, mode="act")
                self.cells.append(_Cell(engine, topo, np.arange(topo.n_entities), nodes))
                continue
            sub = _sub_topology(world, nodes)
            to_cell = np.array([sub.index.get(eid, -1) for eid in topo.ids], dtype=np.int64)
            self.cells.append(
                _Cell(Controller(sub, config, mode="act", plan_checkpoints=False), sub, to_cell, nodes)
            )
        self.detections: list[Detection] = []
        self.transitions: list[tuple[float, str, str, str]] = []
        self.decisions = 0
        self.outcomes: Counter[str] = Counter()  # "kind status" -> action results, safety's included
        self.acted: list[tuple[float, str, str]] = []  # (time, kind, target) carried out, at most MAX_ACTED
        self._admission: dict[JobClass, IntArray] = {}
        self.safety_config = site_safety(world, overrides)
        self.safety = SafetyLayer(topo, self.safety_config)
        jobs = [(j.name, j.job_class) for j in world.scenario.jobs]
        self.actuator = TwinActuator(topo, None, jobs, self.admission)
        self.dispatcher = Dispatcher([Route(self.actuator, ActuatorMode.ENFORCE, GuardConfig())])
        self.checkpoints = CheckpointLoop(config, topo) if self.sharded else None
        # One learner for the whole fleet: a cell's engine ticks only in its windows, but the
        # fleet is exposed all the time, and every failure opens a window where it is seen.
        self.learner = learner_for(config.hazard)
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
        decisions: list[DecisionRecord] = []
        transitions: list[TransitionRecord] = []
        for cell_id, batch in batches:
            cell = self.cells[cell_id]
            self._place(cell, view)
            held = self.safety.held_nodes()
            cell.controller.held_nodes = np.flatnonzero(np.isin(cell.nodes, held)).astype(np.int64)
            result = cell.controller.tick(now, self._translate(cell, batch))
            self._note(result.transitions)
            transitions.extend(result.transitions)
            decisions.extend(result.decisions)
        if not batches:
            return []
        if self.sharded:
            failures = sum(self.cells[cell_id].controller.new_failures for cell_id, _ in batches)
            self.learner.record(now, sum(c.controller.exposure_per_s() for c in self.cells), failures)
            decisions.extend(self._plan_checkpoints(now, view, batches[-1][0]))
        else:
            self._plans = self.cells[0].controller.checkpoint_loop.last  # type: ignore[union-attr]
        return self._actuate(now, decisions, transitions, view)

    def admission(self, job_class: JobClass) -> IntArray:
        """The engine's admissibility per node, and nothing on a node the safety layer holds."""
        cached = self._admission.get(job_class)
        if cached is not None:
            return cached
        out = np.zeros(self.topology.count(EntityKind.NODE), dtype=np.int64)
        for cell in self.cells:
            ctl = cell.controller
            out[cell.nodes] = node_admission(
                self.config, cell.topology, ctl.admission_states(), job_class, ctl.lemon_memory.lemons()
            )
        out[self.safety.held_nodes()] = 2
        self._admission[job_class] = out
        return out

    def returned(self, now: float, nodes: IntArray, view: FleetView) -> list[Action]:
        """The site repaired these nodes: the engine resets them, and the safety layer, told they
        were repaired (``SafetyLayer.vouch``), releases each at once on its first quarantine in
        the window, a repeat offender once its recovery delay has passed."""
        names = self.topology.names[EntityKind.NODE]
        decisions: list[DecisionRecord] = []
        transitions: list[TransitionRecord] = []
        for cell in self.cells:
            mine = nodes[np.isin(nodes, cell.nodes)]
            if mine.size:
                repair = vouched_repair(cell.controller, self.safety, now,
                                        [f"node/{names[n]}" for n in mine.tolist()], "returned from repair")  # fmt: skip
                self._note(repair.transitions)
                transitions.extend(repair.transitions)
                decisions.extend(repair.decisions)
        return self._actuate(now, decisions, transitions, view)

    def node_states(self) -> IntArray:
        """Per node, the most severe state of the node, its GPUs and its uplink."""
        out = np.full(self.topology.count(EntityKind.NODE), int(State.HEALTHY), dtype=np.int64)
        for cell in self.cells:
            out[cell.nodes] = _worst_per_node(cell)
        return out

    def unsettled_nodes(self, cell_id: int) -> IntArray:
        """Nodes of the cell the engine holds in a state other than healthy, or the safety layer
        in quarantine (their release needs ticks)."""
        cell = self.cells[cell_id]
        unsettled = cell.nodes[_worst_per_node(cell) != int(State.HEALTHY)]
        held = self.safety.held_nodes()
        out: IntArray = np.union1d(unsettled, held[np.isin(held, cell.nodes)]).astype(np.int64)
        return out

    # ---- pieces ------------------------------------------------------------------------------
    def _actuate(
        self,
        now: float,
        decisions: Sequence[DecisionRecord],
        transitions: Sequence[TransitionRecord],
        view: FleetView,
    ) -> list[Action]:
        """The daemon's post-engine stage, with the twin as its actuator."""
        self.decisions += len(decisions)
        self.actuator.view = view
        results, _ = actuate(self.safety, self.dispatcher, now, decisions, transitions)
        self.outcomes.update(f"{r.kind} {r.status}" for r in results)
        room = MAX_ACTED - len(self.acted)  # the report's timeline marks what was carried out
        self.acted.extend([(r.ts, r.kind, r.target) for r in results if r.status == "done"][: max(room, 0)])
        self._admission.clear()  # the ledger may have moved
        return self.actuator.take()

    def _note(self, transitions: Sequence[TransitionRecord]) -> None:
        for t in transitions:
            self.transitions.append((t.ts, t.entity, t.to_state, t.reason))
            if t.to_state in BAD:
                self.detections.append(Detection(t.ts, t.entity, t.to_state))

    def _plan_checkpoints(self, now: float, view: FleetView, fresh_cell: int) -> list[DecisionRecord]:
        """One checkpoint plan per job over the hazard of every shard it spans; a save ordered when
        the hazard calls for one the job has not made."""
        assert self.checkpoints is not None
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
        return list(tick.decisions)

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
