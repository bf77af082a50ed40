"""The twin's verbs carried out on its fleet and jobs: drain, evict, swap, checkpoint, reroute,
switch storage, island. Whatever decided them (a baseline policy, or seamguard through its
actuator), this is where they take effect."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from seamguard.model.entities import EntityKind
from seamguard.model.topology import node_of, nodes_below
from seamguard.twin.actions import Action, Verb
from seamguard.twin.fleet import FREE, Actor
from seamguard.twin.jobs import InferenceJob, Phase, TrainingJob

if TYPE_CHECKING:
    from seamguard.twin.sim import Twin

IntArray = npt.NDArray[np.int64]


def node_index(twin: Twin, eid: str) -> int | None:
    """The node a node, link or GPU id names (None: not one of the twin's)."""
    gidx = twin.topology.lookup(eid)
    return None if gidx is None else node_of(twin.topology, gidx)


def apply_actions(twin: Twin, t: float, actions: list[Action]) -> None:
    """Carry out the policy's verbs in order, counting each."""
    for a in actions:
        twin.actions[a.verb.value] += 1
        if a.verb in (Verb.DRAIN, Verb.EVICT, Verb.SWAP):
            node = node_index(twin, a.target)
            if node is not None:
                remove(twin, t, node, a)
        elif a.verb is Verb.CHECKPOINT:
            gidx = twin.topology.lookup(a.target)
            if gidx is not None:
                job = twin.jobs[int(twin.topology.local[gidx])]
                if isinstance(job, TrainingJob):
                    job.checkpoint_now(t, twin.env, twin.world.scenario.operations.min_checkpoint_gap_s)
        elif a.verb in (Verb.REROUTE, Verb.RESTORE_ROUTE):
            node = node_index(twin, a.target)
            if node is not None:
                twin.rerouted[node] = a.verb is Verb.REROUTE
        elif a.verb in (Verb.SWITCH_STORAGE, Verb.RESTORE_STORAGE):
            switch_storage(twin, a)
        elif a.verb in (Verb.ISLAND, Verb.ISLAND_STOP):
            island(twin, t, a, stop=a.verb is Verb.ISLAND_STOP)


def remove(twin: Twin, t: float, node: int, a: Action) -> None:
    """Drain (no new work), evict (drain and move the job off) or swap (move it off, node kept)."""
    if a.verb is not Verb.SWAP:
        twin.fleet.drain(t, node, Actor.POLICY, not twin.affected(node, t), a.reason)
    if a.verb is Verb.DRAIN:
        return
    j = int(twin.fleet.node_job[node])
    if j < 0:
        return
    job = twin.jobs[j]
    if isinstance(job, TrainingJob):
        if job.phase is not Phase.DONE:
            job.restart_elsewhere(t, {node}, twin.env)
    else:
        release_replicas(twin, job, node, t, graceful=True)


def release_replicas(twin: Twin, job: InferenceJob, node: int, t: float, *, graceful: bool) -> None:
    """Free the node of the job's replicas on it: an eviction moves them off with nothing lost,
    a failure loses the batch in flight."""
    for slot in np.flatnonzero(job.slot_node == node).tolist():
        if graceful:
            job.vacate(slot)
        else:
            job.lose(slot, t)
    twin.fleet.node_job[node] = FREE
    twin.placed()


def switch_storage(twin: Twin, a: Action) -> None:
    """Jobs saving to the backend move to their fallback, or back to their primary."""
    gidx = twin.topology.lookup(a.target)
    if gidx is None:
        return
    sto = int(twin.topology.local[gidx])
    for j in twin.jobs:
        if not isinstance(j, TrainingJob):
            continue
        primary, fallback = int(twin.world.job_storage[j.index]), int(twin.world.job_fallback[j.index])
        if a.verb is Verb.SWITCH_STORAGE and j.storage == sto and fallback >= 0 and fallback != sto:
            j.storage = fallback
        elif a.verb is Verb.RESTORE_STORAGE and primary == sto and j.storage != sto:
            j.storage = primary


def island(twin: Twin, t: float, a: Action, *, stop: bool) -> None:
    """Move jobs out of a rack, CDU or leaf: a training job restarts outside when spares fit;
    else it saves now and stays, or (``stop``) saves and waits for room (its work stops: what
    the containment stage valued against tolerating). Serving replicas move as far as room allows."""
    gidx = twin.topology.lookup(a.target)
    if gidx is None or twin.topology.kind_of(gidx) not in (
        EntityKind.RACK,
        EntityKind.CDU,
        EntityKind.SWITCH,
    ):
        return
    dom = nodes_below(twin.topology, gidx)
    usable = twin.usable()
    for j in twin.jobs:
        if isinstance(j, InferenceJob):
            move_replicas(twin, t, j, dom, usable)
            continue
        if not j.holds_nodes:
            continue
        inside = np.intersect1d(j.nodes, dom)
        if inside.size == 0:
            continue
        adm = twin.admission(j.spec.job_class).copy()
        adm[dom] = 2
        if stop or twin.fleet.pick(int(inside.size), adm, usable) is not None:
            j.restart_elsewhere(t, set(inside.tolist()), twin.env)
        else:
            j.checkpoint_now(t, twin.env, twin.world.scenario.operations.min_checkpoint_gap_s)


def move_replicas(
    twin: Twin, t: float, j: InferenceJob, dom: IntArray, usable: npt.NDArray[np.bool_]
) -> None:
    """Move the job's replicas out of the domain, as many as free admitted nodes outside it can
    take; the scheduler restarts them there (``slot_restart_s``)."""
    if j.phase is not Phase.RUNNING:
        return
    inside = np.intersect1d(j.slot_node[j.slot_node >= 0], dom)
    adm = twin.admission(j.spec.job_class).copy()
    adm[dom] = 2
    room = int((twin.fleet.free() & usable & (adm < 2)).sum())
    for n in inside[:room].tolist():
        release_replicas(twin, j, n, t, graceful=True)
