"""People and schedulers: jobs start and end, repairs come back, operators triage what is found
broken by hand, and the scheduler places training jobs and serving replicas on what the prolog
check passes and the policy admits."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from seamguard.model.states import JobClass
from seamguard.twin import verbs
from seamguard.twin.accounting import Bucket
from seamguard.twin.fleet import FREE, Actor
from seamguard.twin.jobs import InferenceJob, Phase, TrainingJob

if TYPE_CHECKING:
    from seamguard.twin.sim import Twin

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def fleet_ops(twin: Twin, t: float) -> None:
    """Jobs start and end on time, repaired nodes come back (and the policy hears of it),
    and what has been broken for ``triage_h`` unnoticed is drained by hand."""
    for j in twin.jobs:
        if j.phase is not Phase.DONE and t >= j.end:
            twin.finish_job(j, t)
        elif j.phase is Phase.PENDING and t >= j.start:
            if isinstance(j, TrainingJob):
                j.phase = Phase.RECOVERING
                j.nodes = np.zeros(0, np.int64)
            else:
                j.phase = Phase.RUNNING
    back = twin.fleet.returns(t)
    if back.size:
        repair(twin, t, back)
        twin.now = t
        verbs.apply_actions(twin, t, twin.policy.returned(t, back, twin))
        if twin.windowed:  # a node the policy still holds keeps its cell watched until released
            for cell in np.unique(twin.world.node_cell[back]).tolist():
                twin.held[cell] = twin.held[cell] or bool(twin.policy.unsettled_nodes(cell).size)
    triage = twin.world.scenario.operations.triage_h * 3600.0
    late = np.flatnonzero((t - twin.broken_since >= triage) & ~twin.fleet.drained & ~twin.fleet.in_repair)
    for n in late.tolist():
        twin.fleet.drain(t, n, Actor.OPERATOR, False, "found broken by hand")


def repair_seconds(twin: Twin, t: float) -> FloatArray:
    """Per drained node not yet in repair: how long its repair takes (its longest fault's, or
    ``repair_h`` for a node broken by nothing on record; 0: nothing to repair).

    A fault due within the twin's lead (a save ahead, which is how early the oracle acts) counts
    as found: else a node drained just before its fault's onset would come back from a short
    diagnosis with the fault cleared, a repair no site gives."""
    out = np.zeros(twin.n_nodes)
    for n in np.flatnonzero(twin.fleet.drained & ~twin.fleet.in_repair).tolist():
        faults = [
            twin.faults[fid]
            for fid in twin.on_node[n]
            if fid not in twin.cleared and twin.faults[fid].onset <= t + twin.lead
        ]
        broken = bool(twin.broken()[n])
        if faults:
            out[n] = max(f.repair_s for f in faults)
        elif broken:
            out[n] = twin.world.scenario.operations.repair_h * 3600.0
    return out


def repair(twin: Twin, t: float, nodes: IntArray) -> None:
    """The nodes come back whole: their faults cleared, their parts and counters fresh."""
    for n in nodes.tolist():
        for fid in twin.on_node[n]:
            if twin.faults[fid].onset <= t:
                twin.cleared.add(fid)
                twin.cleared_at.setdefault(fid, t)
        gpus = twin.gpus_of(np.array([n], np.int64))
        twin.plant.gpu_dead[gpus] = False
        for counter in (twin.plant.sbe, twin.plant.dbe, twin.plant.nvlink, twin.plant.pcie):
            counter[gpus] = 0.0  # a replaced part or a reloaded driver starts its counters afresh
        twin.plant.node_down[n] = False
        twin.plant.link_down[n] = False
        twin.rerouted[n] = False
        twin.broken_since[n] = math.inf
        twin.node_down_since[n] = math.inf
    twin.active = [f for f in twin.active if f.fid not in twin.cleared]


def schedule(twin: Twin, t: float) -> None:
    """Place every job waiting for nodes on what the prolog check passes."""
    usable = twin.usable()
    for j in twin.jobs:
        if isinstance(j, TrainingJob):
            if j.phase is Phase.RECOVERING:
                place_training(twin, j, t, usable)
        elif j.phase is Phase.RUNNING:
            place_slots(twin, j, t, usable)


def place_training(twin: Twin, j: TrainingJob, t: float, usable: npt.NDArray[np.bool_]) -> None:
    """Keep the job's good nodes, replace the rest from admitted spares, and launch it when it
    fits; else it waits, charged to quarantine or to placement (``wait_bucket``)."""
    fresh = j.restarts == 0 and j.saves == 0 and j.nodes.size == 0
    old = j.nodes
    stays = ~np.isin(old, list(j.replace)) & ~twin.fleet.drained[old] & usable[old]
    for n in old[~usable[old] & ~twin.fleet.drained[old]].tolist():
        twin.fleet.drain(t, n, Actor.PROLOG, False, "failed the prolog health check")
    keep, released = old[stays], old[~stays]
    need = j.spec.nodes - keep.size
    picked = (
        twin.fleet.pick(need, twin.admission(j.spec.job_class), usable) if need > 0 else np.zeros(0, np.int64)
    )
    twin.fleet.node_job[released] = FREE
    j.nodes = keep.astype(np.int64)
    if picked is None:
        j.wait_bucket = wait_bucket(twin, need, usable, t)
        twin.fleet.node_job[j.nodes] = j.index
        if released.size:
            twin.placed()
        return
    nodes = np.sort(np.concatenate([j.nodes, picked])).astype(np.int64)
    twin.fleet.node_job[nodes] = j.index
    j.launch(t, nodes, twin.env, fresh=fresh)
    twin.placed()


def wait_bucket(twin: Twin, need: int, usable: npt.NDArray[np.bool_], t: float) -> Bucket:
    """Charge the wait to quarantine when capacity the policy holds with nothing wrong would fill it."""
    free = twin.fleet.free() & usable
    denied_fine = free & (twin.admission(JobClass.SYNC_TRAINING) >= 2)
    broken = ~usable
    for n in np.flatnonzero(denied_fine).tolist():
        denied_fine[n] = not twin.affected(n, t, broken)
    held = (twin.fleet.held_false & (twin.fleet.node_job == FREE)) | denied_fine
    available = int((free & ~denied_fine).sum())
    return Bucket.QUARANTINE_IDLE if available + int(held.sum()) >= need else Bucket.PLACEMENT_WAIT


def place_slots(twin: Twin, j: InferenceJob, t: float, usable: npt.NDArray[np.bool_]) -> None:
    """Drop replicas on nodes that fail the prolog check; fill empty slots from free admitted
    nodes, the best-admitted first."""
    changed = False
    for s in range(j.slot_node.size):
        n = int(j.slot_node[s])
        if n >= 0 and not usable[n]:
            j.lose(s, t)
            twin.fleet.node_job[n] = FREE
            changed = True
    empty = np.flatnonzero(j.slot_node < 0)
    if empty.size:
        adm = twin.admission(j.spec.job_class)
        avail = np.flatnonzero(twin.fleet.free() & usable & (adm < 2))
        avail = avail[np.lexsort((avail, adm[avail]))][: empty.size]
        if avail.size < empty.size:
            j.wait_bucket = wait_bucket(twin, int(empty.size), usable, t)
        for s, n in zip(empty.tolist(), avail.tolist(), strict=False):
            j.fill(s, n, t, fresh=False)
            twin.fleet.node_job[n] = j.index
            changed = True
    if changed:
        twin.placed()
