"""What changes an engine's world between ticks: a new topology (``apply_world``) and an
operator's repair (``mark_repaired``, ``vouched_repair``). Apart from the tick so that ``controller.py`` stays the loop;
the ``Controller`` methods of the same names call these."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from seamguard.control.planner import plan
from seamguard.economics.hazard import nominal_rates
from seamguard.economics.hazard_learning import COUNTED_KINDS
from seamguard.economics.job_value import carry_economics, criticality_weights
from seamguard.journal.records import DecisionRecord, TransitionRecord
from seamguard.model.entities import EntityKind
from seamguard.model.states import State
from seamguard.model.workload import workload_from_nodes
from seamguard.model.world import WorldChange, carry
from seamguard.scoring.propagation import amplification

if TYPE_CHECKING:
    from seamguard.control.controller import Controller
    from seamguard.control.safety import SafetyLayer

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Repair:
    """What an operator's repair changed: the states it reset and the undos they call for."""

    transitions: tuple[TransitionRecord, ...]
    decisions: tuple[DecisionRecord, ...]


def apply_world(ctl: Controller, change: WorldChange) -> None:
    """Run on ``change.new`` from the next tick on (``model.world``): every per-entity memory is
    carried over, so an entity that stays keeps its state, history, scores and learnt normals,
    one that joined starts as on a fresh start, one that left is forgotten."""
    if change.old is not ctl.topology:
        raise ValueError("apply_world: the change does not start from this engine's topology")
    new, fwd = change.new, change.entities
    ctl.store.carry_over(change)
    ctl.sensors.carry_over(change, ctl.catalog)
    ctl.classifier.carry_over(change)
    ctl.lemon_memory = ctl.lemon_memory.carry_over(change)
    ctl._counted = np.concatenate([new.members[k] for k in COUNTED_KINDS])
    ctl._nominal_rate = nominal_rates(ctl.config.hazard, new)
    ctl._counted_rate = ctl._nominal_rate[ctl._counted]
    if ctl.checkpoint_loop is not None:
        ctl.checkpoint_loop.carry_over(change)
    gpus = change.kind(EntityKind.GPU)
    if not change.same(EntityKind.GPU):
        ctl._gpu_slowdown = carry(ctl._gpu_slowdown, gpus, 0.0)
        ctl.pace.carry_over(gpus)
        ctl.xid_memory = ctl.xid_memory.carry_over(change)
    ctl.escalation.carry_over(change)
    ctl._criticality = criticality_weights(ctl.config, new)
    jobs = change.kind(EntityKind.JOB)
    ctl._save_s = carry(ctl._save_s, jobs, np.nan)
    ctl.failures.carry_over(jobs)
    if ctl.economics is not None:
        ctl.economics = carry_economics(ctl.economics, jobs, ctl._criticality)
    ctl._last_known = carry(ctl._last_known, fwd, int(State.HEALTHY))
    ctl._last_observed = carry(ctl._last_observed, fwd, -np.inf)
    ctl.gfs, ctl.prs = carry(ctl.gfs, fwd, 0.0), carry(ctl.prs, fwd, 0.0)
    ctl.gfs_precursor, ctl.prs_precursor = (
        carry(ctl.gfs_precursor, fwd, 0.0),
        carry(ctl.prs_precursor, fwd, 0.0),
    )
    ctl._tolerated = carry(ctl._tolerated, fwd, False)
    ctl.islands.carry_over(change)
    ctl.fabric_pace.carry_over(change)
    ctl.fae = carry(ctl.fae, fwd, 1.0)
    ctl._harm_ratio = carry(ctl._harm_ratio, fwd, 0.0)
    back = change.back()
    ctl._harm_text = {int(back[g]): t for g, t in ctl._harm_text.items() if back[g] >= 0}
    ctl.usual_levels.carry_over(change)
    ctl.peer_memory.carry_over(change, {n: r.cohort for n, r in ctl.config.detectors.peer.items()})
    ctl.frame = None  # this tick's evidence: the next tick scores on the new world
    ctl._pairs, ctl._hazard, ctl._unit_hazard, ctl._exposure = None, None, None, None
    old_workload = ctl._workload
    ctl.topology = new
    ctl._workload_key, ctl._workload, ctl._amp = None, None, None
    if ctl._live_placement and old_workload is not None:
        node_job = carry(old_workload.node_job, change.kind(EntityKind.NODE), -1)
        back_jobs = np.append(change.back(EntityKind.JOB), -1)  # -1 (no job) stays -1
        ctl._workload = workload_from_nodes(new, back_jobs[node_job])
        ctl._amp = amplification(new, ctl._workload)


def mark_repaired(ctl: Controller, now: float, entities: Sequence[str], note: str) -> Repair:
    """An operator (or the repair workflow) vouches that these entities were repaired.

    A node takes its GPUs and uplink with it, a GPU its MIG instances. Their state returns to
    ``healthy``, their XID memory and telemetry history are cleared (a counter that moved during
    the repair is the repair's doing), but their repeat-offence and lemon counts are kept: a part
    that fails again soon escalates faster. The transitions are journaled like any other, with
    ``note`` as reason, and so are the undos the planner proposes for them. The caller tells the
    safety layer too (``SafetyLayer.vouch``): a repaired node on its first quarantine in the
    window leaves at once, a repeat offender after its recovery delay.
    """
    if not now >= ctl.now:
        raise ValueError(f"repair time must not go back: got {now} after {ctl.now}")
    topo = ctl.topology
    idx: list[int] = []
    for eid in entities:
        gidx = topo.lookup(eid)
        if gidx is None:
            raise ValueError(f"mark_repaired: unknown entity {eid!r}")
        idx.append(gidx)
        if topo.kind_of(gidx) is EntityKind.NODE:
            local = int(topo.local[gidx])
            idx.extend(topo.members[EntityKind.GPU][topo.gpu_node == local].tolist())
            idx.append(int(topo.members[EntityKind.LINK][local]))
    gpus = topo.local[[g for g in idx if topo.kind_of(g) is EntityKind.GPU]]
    idx.extend(topo.members[EntityKind.MIG][np.isin(topo.mig_gpu, gpus)].tolist())  # and their instances
    forgotten = np.array(idx, dtype=np.int64)
    ctl.store.forget(forgotten)
    ctl.pace.forget(gpus)
    ctl.peer_memory.forget(topo, forgotten)
    if ctl.store.clock is not None:
        ctl.store.clock.forget(np.unique(ctl.store.clock.domain[forgotten]))
    ctl.usual_levels.forget(topo, forgotten)
    records: list[TransitionRecord] = []
    decisions: list[DecisionRecord] = []
    workload = ctl.workload_at(now)
    for gidx in dict.fromkeys(idx):
        if topo.kind_of(gidx) is EntityKind.GPU:
            ctl.xid_memory.forget(int(topo.local[gidx]))
        before = State(int(ctl.classifier.state[gidx]))
        if before in (State.HEALTHY, State.UNKNOWN) or not ctl.classifier.classified[gidx]:
            continue
        ctl.classifier.reset(gidx, now)
        ctl._last_known[gidx] = int(State.HEALTHY)
        reason = f"operator: {note}"
        records.append(
            TransitionRecord(
                ts=now,
                entity=topo.ids[gidx],
                from_state=before.label,
                to_state=State.HEALTHY.label,
                gfs=0.0,
                prs=0.0,
                fae=float(ctl.fae[gidx]),
                reason=reason,
                epoch=ctl.epoch,
            )
        )
        decisions.extend(plan(ctl.config, topo, workload, now=now, gidx=gidx, state=State.HEALTHY,
                              previous=before, reason=reason, evidence=(), mode=ctl.mode, epoch=ctl.epoch))  # fmt: skip
    ctl._hazard, ctl._unit_hazard = None, None  # failed parts came back
    ctl._exposure = None
    if ctl.journal is not None and records:
        ctl.journal.append(records, decisions, [])
    return Repair(tuple(records), tuple(decisions))


def vouched_repair(
    ctl: Controller, safety: SafetyLayer, now: float, nodes: Sequence[str], note: str
) -> Repair:
    """Nodes repaired, as the daemon (``seamguard ctl repaired``) and the twin (a node back from
    repair) both apply it: the engine resets them (``mark_repaired``), and the safety layer is told,
    so that a first offender leaves quarantine as soon as its causes are well (``SafetyLayer.vouch``)."""
    repair = mark_repaired(ctl, now, nodes, note)
    for node in nodes:
        safety.vouch(safety.nodes_of(node), now)
    return repair
