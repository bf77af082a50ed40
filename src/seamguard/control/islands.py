"""Islands valued again while they hold capacity idle (``economics.revalue_s``).

The containment stage values an island once, when it is entered, over the fault's expected
duration. What made it worth taking out may not last: the part whose failure risk tipped the
valuation fails or is repaired, spares appear, the job it protected ends. An island whose work
found no room elsewhere holds that work idle the whole time, so every ``revalue_s`` each such
island is valued again, with the work that left it put back where it ran (it waits, so its pace
cannot be read: it is valued at its last sustained slowdown) and the same expected duration
ahead (the valuation's horizon does not shrink as a fault ages: how long one has lasted says
little of when it ends). Where the island is no longer the cheapest option, it is released:
its domain is kept in service under restricted admission, like any quarantine the stage
tolerated, and a ``resume_node`` decision asks the safety layer to let go of the nodes it holds
for the island alone (a node also held for a cause of its own stays out).

Two islands are not valued again; they stay until their cause recovers, as before:
* one whose work restarted elsewhere: it holds nothing idle;
* one entered while its GPUs headed for their shutdown temperature: idle, they cool, and their
  heat says nothing of what the work would meet back on them.
A domain is released once per quarantine: islanded again before it recovers, it stays out (an
island and its release each restart the work, and two valuations a few minutes apart that
disagree are a sign the inputs flap, not that the world changed twice).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from seamguard.control.containment import EngineView, contain, valued
from seamguard.control.containment_view import gpu_trip_in
from seamguard.control.planner import plan
from seamguard.journal.records import DecisionRecord
from seamguard.model.action_kinds import RELEASE_KIND, ActionKind
from seamguard.model.entities import EntityKind
from seamguard.model.states import State
from seamguard.model.topology import nodes_below
from seamguard.model.workload import workload_from_nodes
from seamguard.model.world import WorldChange, carry

IntArray = npt.NDArray[np.int64]
_ISLAND = ActionKind.ISLAND_DOMAIN.value
_QUARANTINE = State.QUARANTINE.label


@dataclass(frozen=True)
class Island:
    since: float
    nodes: IntArray  # the domain's nodes (local indices)
    node_job: IntArray  # every node's job when it was islanded: where its work ran
    heated: bool  # a GPU under it headed for shutdown then: never valued again


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
            heated = bool(np.isfinite(gpu_trip_in(view)[topo.below[g].indices]).any())
            self.held[g] = Island(now, nodes_below(topo, g), view.workload.node_job.copy(), heated)

    def forget_recovered(self, states: IntArray) -> None:
        """An island whose domain left quarantine is the safety layer's to release, as any."""
        quarantined = int(State.QUARANTINE)
        self.held = {g: i for g, i in self.held.items() if states[g] == quarantined}
        self.released = {g for g in self.released if states[g] == quarantined}

    def revalue(self, view: EngineView, now: float, mode: str, epoch: int) -> list[DecisionRecord]:
        """The release decisions of every island no longer worth its idle capacity: its
        ``restrict_admission`` (the caller keeps the domain in service as tolerated) and the
        ``resume_node`` the safety layer lets its nodes go on."""
        out: list[DecisionRecord] = []
        for g in sorted(self.held):
            island = self.held[g]
            if island.heated or g in self.released:
                continue
            valued_again = _as_if_back(view, island)
            if valued_again is None:
                continue  # its work runs elsewhere now: the island holds nothing idle
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
                kept[new_g] = replace(island, nodes=nodes_below(change.new, new_g), node_job=node_job)
        self.held = kept
        self.released = {int(to_new[g]) for g in self.released if to_new[g] >= 0}


def _as_if_back(view: EngineView, island: Island) -> EngineView | None:
    """The view with the island's held-back work put back on the nodes it ran on that are free
    now; None when none is held back (every job that ran on it runs as wide as it did, or ended).
    A job held back reports no pace on the nodes put back: they are valued at its pace elsewhere
    (its other ranks' median step), or at no slowdown when it reports none."""
    topo, workload = view.topology, view.workload
    n_jobs = len(topo.jobs)
    was = island.node_job[island.nodes]
    jobs = np.unique(was[(was >= 0) & (was < n_jobs)])
    then = workload_from_nodes(topo, island.node_job).job_gpus
    short = jobs[(workload.job_gpus[jobs] < then[jobs]) & _not_ended(view, jobs)]
    node_job = workload.node_job.copy()
    back = np.isin(island.node_job, short) & (node_job < 0)
    if not back.any():
        return None
    node_job[back] = island.node_job[back]
    again = workload_from_nodes(topo, node_job)
    step = view.step_time
    if step is not None:
        step = step.copy()
        for j in np.unique(island.node_job[back]).tolist():
            ranks = again.gpu_job == j
            known = step[ranks & np.isfinite(step)]
            step[ranks & ~np.isfinite(step)] = float(np.median(known)) if known.size else 1.0
    return replace(view, workload=again, step_time=step)


def _not_ended(view: EngineView, jobs: IntArray) -> npt.NDArray[np.bool_]:
    ends = np.array([view.topology.jobs[j].end for j in jobs.tolist()], dtype=np.float64)
    ended: npt.NDArray[np.bool_] = ends > view.now
    return ended
