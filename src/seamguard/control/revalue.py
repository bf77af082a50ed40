"""Tolerated quarantines valued again as the cluster changes (``economics.revalue_s``).

The containment stage values a quarantine when it is entered. What it tolerated for want of
spares, or because the slowdown was worth less than a restart, may be worth taking out later:
spares come back when a domain cools, a job ends or the safety layer releases a node it held, and
a fault that outlasts its slowdown's worth grows costlier than the restart. The Controller calls
``revalue`` every ``economics.revalue_s`` over the quarantines it keeps in service, and at once
over those with a GPU below them heading for its shutdown temperature (``heating_under``).

A tolerated part whose node has gone idle (its job restarted elsewhere, or is waiting) is taken
out at its next valuation, since an idle node's drain forces nothing: except while a job waits
for nodes beyond their class's spares (``containment_view.nodes_short``) and no GPU under it heads
for its shutdown temperature. Tolerated, the part's admission is ``degraded``,
so a restarting job may take its node, last; taken out, the job that needs it would wait for the
fault's whole duration, idle, for a fault whose slowdown was valued cheaper than a restart. It is
valued again every period, with the job on it or once nobody waits.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from seamguard.config import Config
from seamguard.control.classifier import forced_out
from seamguard.control.containment import CONTAINING, EngineView, contain, still_weighed, valued
from seamguard.control.containment_view import gpu_trip_in, nodes_short
from seamguard.control.planner import plan
from seamguard.journal.records import DecisionRecord
from seamguard.model.action_kinds import ActionKind
from seamguard.model.entities import EntityKind
from seamguard.model.states import State
from seamguard.model.topology import Topology, node_of
from seamguard.model.workload import Workload

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
# Domains a drain can move a job's ranks off without taking the domain out.
MOVED_FROM = frozenset({EntityKind.SWITCH, EntityKind.RACK, EntityKind.CDU, EntityKind.ROW, EntityKind.PDU})


def revalue(view: EngineView, tolerated: IntArray, now: float, mode: str, epoch: int) -> list[DecisionRecord]:
    """The quarantines this stage tolerated, valued again as the cluster changes: spares come
    back when a domain cools or a job ends, and a fault that outlasts the slowdown's worth is
    taken out after all. Only what the valuation would now take out is returned (its drains or
    island, and the ``restrict_admission`` already standing); a quarantine it still tolerates, or
    cannot value now (a job down, reporting no pace), adds nothing, so a tolerated fault is not
    re-announced every period."""
    topo = view.topology
    held = set() if view.held_nodes is None else set(view.held_nodes.tolist())
    weighed = still_weighed(topo, view.states)  # in quarantine, or a leaf still gray
    kept = {g for g in tolerated.tolist() if weighed[g]}
    proposals: list[DecisionRecord] = []
    held_nodes = np.zeros(0, np.int64) if view.held_nodes is None else view.held_nodes
    wanted: int | None = None  # nodes restarting jobs wait for beyond the spares: counted when first asked
    heating = set(heating_under(topo, np.array(sorted(kept), dtype=np.int64), gpu_trip_in(view)).tolist())
    for g in sorted(kept):
        node = node_of(topo, g)
        if node in held or _wider_kept(topo, g, kept):
            continue  # its node is already out (another part's drain took it), or a wider domain decides
        if node is not None and view.workload.node_job[node] < 0 and g not in heating:
            if wanted is None:
                wanted = nodes_short(
                    view.config, topo, view.workload, view.states, view.lemons, held_nodes, now
                )
            if wanted:
                continue  # idle while a job waits for nodes: taken out, it would keep that job waiting
        state = State(int(view.states[g]))
        label = "quarantined" if state is State.QUARANTINE else state.label
        why = f"{topo.ids[g]} still {label}, its tolerance valued again"
        proposals.extend(
            d for d in plan(view.config, topo, view.workload, now=now, gidx=g, state=state, previous=state,
                            reason=why, evidence=(), mode=mode, epoch=epoch)
            if valued(d)
        )  # fmt: skip
    if not proposals:
        return []
    # What the valuation takes out (a drain it moves a job with carries its cause's state: a gray
    # leaf's is ``degraded``); its ``restrict_admission`` already stands.
    return [d for d in contain(proposals, view, value_blind=False) if d.action in CONTAINING]


def keep_for_waiting(
    config: Config, topo: Topology, workload: Workload, states: IntArray, lemons: BoolArray | None,
    held: IntArray, floor: IntArray, remembered: IntArray, trip_in_s: FloatArray, fresh: IntArray,
    tolerated: BoolArray, now: float, mode: str, epoch: int,
) -> list[DecisionRecord]:  # fmt: skip
    """The quarantined parts (a GPU, MIG instance, node or uplink) on idle nodes the safety layer
    does not hold, while jobs wait for more nodes than the free spares give
    (``containment_view.nodes_short``): kept in service (``degraded`` to admission, valued again
    every period), as a quarantine the valuation tolerates is; ``tolerated`` is marked, and each
    newly kept part journals a ``restrict_admission`` saying why. Their node was never taken out
    (its part turned gray while another hold had it, or its drain was refused), so nothing but
    admission keeps it from the waiting job, which would otherwise sit idle for the whole fault.
    (Held-out seed 18001: an uplink quarantined while its node sat in a CDU's island denied that
    node to a nine-node job restarting from the island, one node short, for the last 9.5 hours.)

    Never kept: a failed part; one hard evidence holds (an XID that asks for a reset: this tick's
    ``floor``, per entity, or the GPU's ``remembered`` one, ``XidMemory.remembered_floor``, each GPU's
    MIG instances with it); one under which a GPU heads for its shutdown temperature; one
    that changed state this tick (``fresh``: the planner and the valuation decide it now)."""
    node_of_part = np.full(topo.n_entities, -1, dtype=np.int64)
    node_of_part[topo.members[EntityKind.NODE]] = np.arange(topo.count(EntityKind.NODE))
    node_of_part[topo.members[EntityKind.LINK]] = np.arange(topo.count(EntityKind.LINK))
    node_of_part[topo.members[EntityKind.GPU]] = topo.gpu_node
    node_of_part[topo.members[EntityKind.MIG]] = topo.gpu_node[topo.mig_gpu]
    free = np.zeros(workload.node_job.size + 1, dtype=bool)  # the last: no node
    free[:-1] = workload.node_job < 0
    free[held] = False
    hard = forced_out(floor)
    held_gpu = forced_out(remembered)
    hard[topo.members[EntityKind.GPU][held_gpu]] = True
    hard[topo.members[EntityKind.MIG][held_gpu[topo.mig_gpu]]] = True
    found = (states == int(State.QUARANTINE)) & ~hard & free[node_of_part] & ~tolerated
    found[fresh] = False
    if not found.any():
        return []
    found[heating_under(topo, np.flatnonzero(found), trip_in_s)] = False
    short = nodes_short(config, topo, workload, states, lemons, held, now) if found.any() else 0
    if not short:
        return []
    kept = np.flatnonzero(found)
    tolerated[kept] = True
    why = f"kept in service while jobs wait for {short} node(s) more than the spares: taken out, it would hold them idle"
    restrict = ActionKind.RESTRICT_ADMISSION.value
    return [DecisionRecord(now, topo.ids[g], restrict, mode, why, State.QUARANTINE.label, epoch=epoch,
                           cause=topo.ids[g]) for g in kept.tolist()]  # fmt: skip


def heating_under(topo: Topology, entities: IntArray, trip_in_s: FloatArray) -> IntArray:
    """The entities with a GPU below them heading for its shutdown temperature
    (``control.thermal_trip``): valued again at once, not at the next period, since a trip
    projected now is minutes away."""
    hot = np.isfinite(trip_in_s)
    if not hot.any() or not entities.size:
        return entities[:0]
    under = np.asarray(topo.below[entities] @ hot.astype(np.float64)).ravel() > 0
    return entities[under]


def _wider_kept(topo: Topology, g: int, kept: set[int]) -> bool:
    """A rack whose CDU or row is itself a tolerated quarantine: the wider domain, valued as a
    whole, decides (islanding the rack first would restart its jobs once for the rack and again
    for the CDU)."""
    if topo.kind_of(g) is not EntityKind.RACK:
        return False
    rack = int(topo.local[g])
    for kind, parent in ((EntityKind.CDU, topo.rack_cdu), (EntityKind.ROW, topo.rack_row)):
        local = int(parent[rack])
        if 0 <= local < topo.members[kind].size and int(topo.members[kind][local]) in kept:
            return True
    return False


def causes_of(topo: Topology, decisions: list[DecisionRecord]) -> IntArray:
    """The entities (global indices) the decisions act for: the quarantines they take out. A
    domain (a gray leaf, a rack or CDU losing its cooling) whose critical jobs' ranks are moved off
    it is not taken out: it stays tolerated, in service for the work left under it, its admission
    ``degraded`` (a job restarting may still use its free nodes: denied, they would hold that job
    idle while the domain runs other work), and valued again for the jobs still under it."""
    moved = {
        d.cause
        for d in decisions
        if d.action == ActionKind.DRAIN_NODE.value
        and d.cause is not None
        and (g := topo.lookup(d.cause)) is not None
        and topo.kind_of(g) in MOVED_FROM
    }
    found = {topo.lookup(d.cause or d.entity) for d in decisions if (d.cause or d.entity) not in moved}
    return np.array(sorted(g for g in found if g is not None), dtype=np.int64)
