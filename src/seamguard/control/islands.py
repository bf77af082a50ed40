"""Islands valued again while they hold capacity idle (``economics.revalue_s``).

The containment stage values an island once, when it is entered, over the fault's expected
duration. What made it worth taking out may not last: the part whose failure risk tipped the
valuation fails or is repaired, spares appear, the job it protected ends. An island whose work
found no room elsewhere holds that work idle the whole time; one whose work went to spares holds
idle any job that later loses a node and finds the spares gone. So every ``revalue_s`` each
island that holds work idle is valued again, with that work put on its free nodes (the work
waits, so its pace there cannot be read: it is valued at its pace elsewhere) and the same
expected duration ahead (the valuation's horizon does not shrink as a fault ages: how long one
has lasted says little of when it ends). Where the island is no longer the cheapest option, it
is released: its domain is kept in service under restricted admission, like any quarantine the
stage tolerated, and a ``resume_node`` decision asks the safety layer to let go of the nodes it
holds for the island alone (a node also held for a cause of its own stays out).

An island is not valued again while no job that ran at its start waits for room: it holds
nothing idle. Its heat is remembered: idle, its GPUs cool, and their readings say nothing of the
load they would meet again, so each node put back is valued with the earliest shutdown its GPUs
were heading for when the island was entered (a trip the tolerance then pays for as a failure).
The book keeps an island until its domain is healthy again, not only while it is quarantined:
the safety layer holds its nodes until then, so a domain that is merely degraded under a fault
that lasts hours would otherwise hold them unvalued. A domain is released once per episode:
islanded again before it is healthy, it stays out (an island and its release each restart the
work, and two valuations a few minutes apart that disagree are a sign the inputs flap, not that
the world changed twice).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from seamguard.control.containment import EngineView, contain, valued
from seamguard.control.containment_view import gpu_trip_in, slowdown_now
from seamguard.control.planner import plan
from seamguard.journal.records import DecisionRecord
from seamguard.model.action_kinds import RELEASE_KIND, ActionKind
from seamguard.model.entities import EntityKind
from seamguard.model.states import CALM_STATES, State
from seamguard.model.topology import nodes_below
from seamguard.model.workload import workload_from_nodes
from seamguard.model.world import WorldChange, carry

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
_CALM = tuple(int(s) for s in CALM_STATES)
_ISLAND = ActionKind.ISLAND_DOMAIN.value
_QUARANTINE = State.QUARANTINE.label


@dataclass(frozen=True)
class Island:
    since: float
    nodes: IntArray  # the domain's nodes (local indices)
    node_job: IntArray  # every node's job when it was islanded: where its work ran
    node_trip_s: FloatArray  # every node's earliest projected GPU trip then (inf: none): its heat under load
    gpu_slowdown: FloatArray  # every GPU's slowdown then: its pace under the fault, which idle it cannot show


class IslandBook:
    """The islands this engine decided, by domain (global index)."""

    def __init__(self) -> None:
        self.held: dict[int, Island] = {}
        self.released: set[int] = set()  # released in this quarantine: not again until it recovers

    def note(self, view: EngineView, decisions: list[DecisionRecord], now: float) -> None:
        """Remember the islands among this tick's decisions, with where their work ran."""
        for d in decisions:
            if d.action != _ISLAND or d.state != _QUARANTINE:
                continue
            topo = view.topology
            g = topo.lookup(d.entity)
            if g is None or g in self.held:
                continue
            node_trip = np.full(topo.count(EntityKind.NODE), np.inf)
            np.minimum.at(node_trip, topo.gpu_node, gpu_trip_in(view))
            self.held[g] = Island(now, nodes_below(topo, g), view.workload.node_job.copy(), node_trip,
                                  slowdown_now(view).copy())  # fmt: skip

    def forget_recovered(self, states: IntArray) -> None:
        """An island whose domain is healthy again is the safety layer's to release after its
        recovery delay, as any quarantine; one that is only less sick (degraded) stays held by
        the safety layer, so it stays in the book and is valued again."""
        self.held = {g: i for g, i in self.held.items() if states[g] not in _CALM}
        self.released = {g for g in self.released if states[g] not in _CALM}

    def revalue(self, view: EngineView, now: float, mode: str, epoch: int) -> list[DecisionRecord]:
        """The release decisions of every island no longer worth its idle capacity: its
        ``restrict_admission`` (the caller keeps the domain in service as tolerated) and the
        ``resume_node`` the safety layer lets its nodes go on."""
        out: list[DecisionRecord] = []
        for g in sorted(self.held):
            island = self.held[g]
            if g in self.released:
                continue
            valued_again = _as_if_back(view, island)
            if valued_again is None:
                continue  # no work waits for the room it holds: nothing idle
            topo = view.topology
            why = f"{topo.ids[g]} islanded at {island.since:.0f}, valued again with the work it holds idle"
            planned = plan(view.config, topo, valued_again.workload, now=now, gidx=g, state=State.QUARANTINE,
                           previous=State.QUARANTINE, reason=why, evidence=(), mode=mode, epoch=epoch)  # fmt: skip
            proposals = [d for d in planned if valued(d)]
            decided = contain(proposals, valued_again)
            if not proposals or any(d.action == _ISLAND for d in decided):
                continue
            restrict = [d for d in decided if d.action == ActionKind.RESTRICT_ADMISSION.value]
            if not restrict:
                continue  # moving only the critical jobs: their work is not back on it to move
            text = restrict[0].reason
            out.append(restrict[0])
            out.append(replace(restrict[0], action=RELEASE_KIND.value, reason=f"island released: {text}"))
            del self.held[g]
            self.released.add(g)
        return out

    def carry_over(self, change: WorldChange) -> None:
        """Islands of domains that stay keep their record on the new world's indices."""
        to_new = change.back()  # old global index -> new, -1 for one that left
        nodes = change.kind(EntityKind.NODE)
        jobs = np.append(change.back(EntityKind.JOB), -1)  # old job -> new; -1 (no job) stays -1
        kept: dict[int, Island] = {}
        for g, island in self.held.items():
            new_g = int(to_new[g])
            if new_g >= 0:
                node_job = jobs[carry(island.node_job, nodes, -1)]
                kept[new_g] = replace(
                    island,
                    nodes=nodes_below(change.new, new_g),
                    node_job=node_job,
                    node_trip_s=carry(island.node_trip_s, nodes, np.inf),
                    gpu_slowdown=carry(island.gpu_slowdown, change.kind(EntityKind.GPU), 0.0),
                )
        self.held = kept
        self.released = {int(to_new[g]) for g in self.released if to_new[g] >= 0}


def _as_if_back(view: EngineView, island: Island) -> EngineView | None:
    """The view with the work the island holds idle put on its free nodes; None when it holds none.

    Work is held idle when a job that ran at the island's start runs narrower now (it waits for
    room) and the island has free nodes. Its own former nodes take it back first, the island's
    and, for a job the island held, those outside it that stand free and unheld (a job waiting
    for room waits whole: released, it restarts on all of them, and counting them as spares would
    value the island at a restart onto its own nodes); what it still lacks, and what other short
    jobs lack (a node of theirs failed after the spares went to the island's work), is put on the
    island's other free nodes in job order: releasing the island is what would give them room. A
    job put back reports no pace there: its ranks are valued at its pace elsewhere (its other
    ranks' median step), or at none when it reports none, but never below the slowdown they had
    when the island was entered: idle, they cannot show it, and the fault that caused it stands.
    """
    topo, workload = view.topology, view.workload
    n_jobs = len(topo.jobs)
    then = np.bincount(island.node_job[(island.node_job >= 0) & (island.node_job < n_jobs)], minlength=n_jobs)
    now_on = np.bincount(workload.node_job[workload.node_job >= 0], minlength=n_jobs)[:n_jobs]
    lacking = np.maximum(then - now_on, 0)
    lacking[~_not_ended(view, np.arange(n_jobs, dtype=np.int64))] = 0
    free = island.nodes[workload.node_job[island.nodes] < 0]
    if not lacking.any() or not free.size:
        return None
    node_job = workload.node_job.copy()
    own = island.node_job[free]
    held_jobs = np.unique(own[(own >= 0) & (own < n_jobs)])
    for j in held_jobs.tolist():  # jobs on one island: a handful
        mine = free[own == j][: lacking[j]]
        node_job[mine] = j
        lacking[j] -= mine.size
    outside = np.flatnonzero((workload.node_job < 0) & np.isin(island.node_job, held_jobs))
    outside = outside[~np.isin(outside, island.nodes)]
    if view.held_nodes is not None:
        outside = outside[~np.isin(outside, view.held_nodes)]
    for j in held_jobs.tolist():
        mine = outside[island.node_job[outside] == j][: lacking[j]]
        node_job[mine] = j
        lacking[j] -= mine.size
    rest = free[node_job[free] < 0]
    for j in np.flatnonzero(lacking).tolist():
        take, rest = rest[: lacking[j]], rest[lacking[j] :]
        node_job[take] = j
    back = node_job != workload.node_job
    again = workload_from_nodes(topo, node_job)
    trip = gpu_trip_in(view).copy()
    on_back = back[topo.gpu_node]  # idle, they cooled: they heat as they did under the work
    trip[on_back] = np.minimum(trip[on_back], island.node_trip_s[topo.gpu_node[on_back]])
    step = view.step_time
    if step is not None:
        step = step.copy()
        for j in np.unique(node_job[back]).tolist():
            ranks = again.gpu_job == j
            known = step[ranks & np.isfinite(step)]
            step[ranks & ~np.isfinite(step)] = float(np.median(known)) if known.size else 1.0
    slow = np.nan_to_num(view.gpu_slowdown).copy()
    slow[on_back] = np.maximum(slow[on_back], island.gpu_slowdown[on_back])
    return replace(view, workload=again, step_time=step, trip_in_s=trip, gpu_slowdown=slow)


def _not_ended(view: EngineView, jobs: IntArray) -> npt.NDArray[np.bool_]:
    ends = np.array([view.topology.jobs[j].end for j in jobs.tolist()], dtype=np.float64)
    ended: npt.NDArray[np.bool_] = ends > view.now
    return ended
