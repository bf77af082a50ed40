"""``oracle``: knows every fault in advance and acts at the ideal moment; the ceiling.

* A component fault (a GPU, a host, an uplink) is swapped out before it costs anything when a
  spare can take the node's work: the node is evicted with a planned checkpoint-and-restart at
  the fault's onset, or, for a sudden failure, one save-and-a-tick before it strikes. Without a
  spare, taking the node would stop its job until the repair, so a gray fault is tolerated
  until a spare frees up, and one that will end hard is evicted a save ahead of its failure
  (nothing rolled back). A faulty node nobody uses goes to repair at once.
* A software crash or hang is preceded by a save, so nothing is rolled back.
* A facility fault (CDU, rack power, leaf) islands its domain at onset; a degrading storage
  backend is left for the fallback; a marginal link is rerouted.
* A benign slow GPU is swapped only where the job it slows would lose more than a restart costs.
* Periodic saves only as insurance against what nobody knows in advance (a thermal trip that
  emerges from physics), every six hours, plus a save whenever a job's GPU nears the trip point.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from seamguard.economics.checkpoint_modes import Mode
from seamguard.model.entities import EntityKind
from seamguard.model.states import JobClass
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.twin.actions import Action, Detection, Verb
from seamguard.twin.faults import Fault, HardEffect
from seamguard.twin.fleet import domain_nodes
from seamguard.twin.jobs import TrainingJob
from seamguard.twin.plant import Plant
from seamguard.twin.policies.base import (
    FleetView,
    IntArray,
    all_healthy,
    no_nodes,
    nominal_save_s,
    save_ahead_s,
)
from seamguard.twin.world import World

INSURANCE_INTERVAL_S = 6 * 3600.0
TRIP_MARGIN_C = 2.0


class OraclePolicy:
    name = "oracle"

    def __init__(self, world: World, plant: Plant) -> None:
        self.world = world
        self.topology = world.topology
        self.plant = plant
        self._todo = list(world.faults)
        self._ends: list[Fault] = []
        self._waiting: list[Fault] = []  # component faults tolerated until a spare frees up
        self._admitted: IntArray | None = None  # this tick's admission, once asked
        self.detections: list[Detection] = []
        self._lookahead = save_ahead_s(world)
        self._now = world.start
        self._returned = np.full(self.topology.count(EntityKind.NODE), -np.inf)
        self._component = [f for f in world.faults if not f.benign and not f.spec.facility]
        self._facility = [
            (f, domain_nodes(self.topology, f))
            for f in world.faults
            if not f.benign
            and f.spec.facility
            and f.spec.target is not EntityKind.STORAGE
            and not f.spec.serving
        ]

    def checkpoint_choice(self, job: TrainingJob) -> tuple[Mode, int]:
        """The cheapest copy that survives any one failure: host (and peer) memory now, storage
        in the background."""
        return Mode.TIERED, job.storage

    def interval_s(self, job: TrainingJob) -> float:
        return INSURANCE_INTERVAL_S

    def observe(
        self, now: float, batches: Sequence[tuple[int, TelemetryBatch]], view: FleetView
    ) -> list[Action]:
        out: list[Action] = []
        self._now = now
        names = self.topology.names
        self._admitted = None
        due = [f for f in self._todo if self._act_at(f) <= now + self._lookahead]
        for f in due:
            self._todo.remove(f)
            acts = self._handle(f, view)
            out.extend(acts)
            if f.kind == "storage_tail":
                self._ends.append(f)
            if acts:  # credited only for the faults it acted on, not for sharing a tick with one
                self.detections.append(Detection(now, f.target, "foreseen"))
        out.extend(self._revisit(now, view, {f.fid for f in due}))
        for f in list(self._ends):
            if f.end <= now:
                self._ends.remove(f)
                if f.kind == "storage_tail":
                    out.append(Action(Verb.RESTORE_STORAGE, f.target, "backend healthy again"))
        # Insurance: a job GPU close to the trip point saves now.
        hot = np.flatnonzero(
            self.plant.gpu_temp >= self.world.scenario.physics.compute.trip_c - TRIP_MARGIN_C
        )
        for node in np.unique(self.topology.gpu_node[hot]).tolist():
            job = view.job_of(node)
            if job >= 0 and view.is_training(job):
                out.append(
                    Action(Verb.CHECKPOINT, f"job/{names[EntityKind.JOB][job]}", "GPU near thermal trip")
                )
        return out

    def _act_at(self, f: Fault) -> float:
        return f.onset

    def _handle(self, f: Fault, view: FleetView) -> list[Action]:
        names = self.topology.names
        kind = f.spec.target
        if f.benign:
            return self._maybe_swap_slow(f, view) if f.kind == "slow_gpu" else []
        if f.spec.serving:  # a serving path's fault is the router's to weigh: no node or job to move
            return []
        if f.spec.hard in (HardEffect.JOB_CRASH, HardEffect.JOB_HANG):
            return [Action(Verb.CHECKPOINT, f.target, f"{f.kind} foreseen")]
        if kind in (EntityKind.GPU, EntityKind.NODE, EntityKind.LINK):
            node = self._node(f)
            if f.kind == "link_gray" and not f.hard:
                return [
                    Action(Verb.REROUTE, f"link/{names[EntityKind.NODE][node]}", "marginal link foreseen")
                ]
            self._waiting.append(f)
            return self._take_or_wait(f, node, view)
        if kind is EntityKind.STORAGE and f.kind == "storage_tail":
            return [Action(Verb.SWITCH_STORAGE, f.target, "backend degradation foreseen")]
        if kind in (EntityKind.CDU, EntityKind.RACK, EntityKind.SWITCH):
            return [Action(Verb.ISLAND, f.target, f"{f.kind} foreseen")]
        return []

    def _take_or_wait(self, f: Fault, node: int, view: FleetView) -> list[Action]:
        """Take the faulty node out when that stops nothing: it is idle, a spare can take its
        work, or it is about to fail anyway; else leave ``f`` waiting for a spare."""
        name = f"node/{self.topology.names[EntityKind.NODE][node]}"
        job = view.job_of(node)
        if job < 0:
            reason = f"{f.kind} foreseen on an idle node"
        elif view.can_replace(job, 1, self._spare_admission()):
            reason = f"{f.kind} foreseen"
        elif f.hard_at <= self._now + self._lookahead:
            reason = f"{f.kind} foreseen, no spare: save before it fails"
        else:
            return []
        self._waiting.remove(f)
        return [Action(Verb.EVICT, name, reason)]

    def _revisit(self, now: float, view: FleetView, fresh: set[int]) -> list[Action]:
        """The faults left waiting on an earlier tick (``fresh``: this tick's, judged already)."""
        out: list[Action] = []
        for f in [f for f in self._waiting if f.fid not in fresh]:
            node = self._node(f)
            if self._returned[node] >= f.onset:  # repaired meanwhile (found broken by hand)
                self._waiting.remove(f)
                continue
            acts = self._take_or_wait(f, node, view)
            if acts:
                self.detections.append(Detection(now, f.target, "foreseen"))
            out.extend(acts)
        return out

    def _node(self, f: Fault) -> int:
        """The node a component fault (on a GPU, a node or its uplink) sits on."""
        return int(self.topology.gpu_node[f.local]) if f.spec.target is EntityKind.GPU else f.local

    def _spare_admission(self) -> IntArray:
        """This tick's admission for a synchronous job: what a spare must pass (once per tick)."""
        if self._admitted is None:
            self._admitted = self.admission(JobClass.SYNC_TRAINING)
        return self._admitted

    def _maybe_swap_slow(self, f: Fault, view: FleetView) -> list[Action]:
        node = int(self.topology.gpu_node[f.local])
        job = view.job_of(node)
        if job < 0 or not view.is_training(job):
            return []
        if not view.can_replace(job, 1, self._spare_admission()):
            return []
        spec = self.world.scenario.jobs[job]
        remaining = self.world.end - f.onset
        loss = 0.08 * f.severity * remaining  # the job runs at its slowest rank
        if loss <= spec.restart_s + 2 * nominal_save_s(self.world, spec):
            return []
        return [
            Action(
                Verb.SWAP,
                f"node/{self.topology.names[EntityKind.NODE][node]}",
                "slow GPU costs more than a swap",
            )
        ]

    def admission(self, job_class: JobClass) -> IntArray:
        """Deny nodes carrying a fault that has begun or is about to, until they are repaired;
        avoid the domain of a facility fault while it lasts (better a slow node than none)."""
        out = np.zeros(self.topology.count(EntityKind.NODE), dtype=np.int64)
        soon = self._now + self._lookahead
        for f, nodes in self._facility:
            if f.onset <= soon and self._now < f.end:
                out[nodes] = np.maximum(out[nodes], 1)
        for f in self._component:
            if f.onset > soon:
                break
            node = self._node(f)
            if self._returned[node] < f.onset:
                out[node] = 2
        return out

    def returned(self, now: float, nodes: IntArray, view: FleetView) -> list[Action]:
        self._returned[nodes] = now
        return []

    def node_states(self) -> IntArray:
        return all_healthy(self.topology.count(EntityKind.NODE))

    def unsettled_nodes(self, cell_id: int) -> IntArray:
        return no_nodes()
