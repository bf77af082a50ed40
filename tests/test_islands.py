"""Islands valued again while they hold work idle (control/islands.py), and the safety layer's
release of one (control/safety.py).

The situations are the containment tests' own (16 nodes of 4 GPUs, four CDUs of four nodes, no
spare: "train" spans c0 and c1, "batch" holds the rest); the risk that pays for the island is a
failure precursor on every GPU of c0 (GFS over the precursors at 1: each GPU ~e^10 x nominal).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from seamguard.control.containment import EngineView, contain
from seamguard.control.controller import Controller
from seamguard.control.islands import Island, IslandBook
from seamguard.journal.records import DecisionRecord
from seamguard.model.actions import ActionStatus
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import JobRecord
from seamguard.model.states import State
from seamguard.model.topology import Topology, build_topology, nodes_below
from seamguard.model.workload import Workload, workload_from_nodes
from seamguard.model.world import world_change
from seamguard.telemetry.batch import TelemetryBatch
from tests.conftest import small_inventory
from tests.test_containment import BATCH, CFG, GPU_SIDE, START, SYNC, TICK, TRAIN, acts, fleet, planned, view
from tests.test_controller import normal_batch
from tests.test_safety import by_status, island, kinds, layer
from tests.test_safety import drain as drain_decision
from tests.test_safety import fleet as safety_fleet
from tests.test_sensor_faults import WARM, flow_loss, plant_batch

JOBS = {"train": TRAIN, "batch": (BATCH, range(8, 16))}


def risky(v: EngineView, on: bool) -> EngineView:
    """c0's GPUs carry failure precursors (``on``) or none."""
    gfs = np.zeros(v.topology.n_entities)
    if on:
        topo = v.topology
        gfs[topo.members[EntityKind.GPU][np.isin(topo.gpu_node, range(4))]] = 1.0
    return replace(v, gfs_precursor=gfs)


def islanded(topo: Topology, busy: Workload, *, heated: float | None = None) -> tuple[IslandBook, EngineView]:
    """The containment stage islands c0 for its failure risk; the book notes it at t=100."""
    v = risky(view(CFG, topo, busy, "cdu/c0", [], 0.0), True)
    if heated is not None:  # c0's GPUs head for their shutdown temperature, due in ``heated`` s
        v = replace(v, trip_in_s=np.where(np.isin(topo.gpu_node, range(4)), heated, np.inf))
    decisions = contain(planned(CFG, topo, busy, "cdu/c0", State.QUARANTINE), v)
    assert ("island_domain", "cdu/c0") in acts(decisions)
    book = IslandBook()
    book.note(v, decisions, 100.0)
    return book, v


def left(topo: Topology, busy: Workload, *, to: range | None = None) -> Workload:
    """ "train" left c0 and waits for room (its nodes free), or restarted on ``to`` (batch gone)."""
    node_job = np.where(busy.node_job == 0, -1, busy.node_job)
    if to is not None:
        node_job[list(to)] = 0
    return workload_from_nodes(topo, node_job)


def test_an_island_holding_work_idle_is_released_once_its_risk_is_gone() -> None:
    topo, busy = fleet(16, 4, 4, JOBS)
    book, _ = islanded(topo, busy)
    waiting = left(topo, busy)
    assert waiting.job_gpus[0] == 0
    after = view(CFG, topo, waiting, "cdu/c0", [], 0.0)
    # The risk that paid for it stands: the island stays.
    assert book.revalue(risky(after, True), 800.0, "act", 3) == [] and list(book.held) == [
        topo.index["cdu/c0"]
    ]
    restrict, release = book.revalue(risky(after, False), 1400.0, "act", 3)
    assert (restrict.action, restrict.entity, restrict.cause) == ("restrict_admission", "cdu/c0", "cdu/c0")
    assert (release.action, release.entity, release.cause, release.epoch) == (
        "resume_node",
        "cdu/c0",
        "cdu/c0",
        3,
    )
    assert release.reason.startswith("island released: ") and "islanded at 100" in release.reason
    assert "tolerate, restrict admission" in release.reason
    assert book.held == {}
    # Islanded again in the same quarantine: it stays out until it recovers.
    at_island = risky(view(CFG, topo, busy, "cdu/c0", [], 0.0), True)
    book.note(at_island, [island("cdu/c0", 2000.0)], 2000.0)
    assert book.revalue(risky(after, False), 2600.0, "act", 3) == []
    book.forget_recovered(np.zeros(topo.n_entities, dtype=np.int64))  # c0 recovered
    assert book.held == {} and book.released == set()
    book.note(at_island, [island("cdu/c0", 9000.0)], 9000.0)  # a fresh quarantine, a fresh island
    assert [d.action for d in book.revalue(risky(after, False), 9600.0, "act", 3)] == [
        "restrict_admission",
        "resume_node",
    ]


def to_spares(topo: Topology, busy: Workload) -> Workload:
    """Train restarted on its c1 nodes and the spares of c4 (n16-n19): as wide as before."""
    node_job = busy.node_job.copy()
    node_job[0:4] = -1
    node_job[16:20] = 0
    return workload_from_nodes(topo, node_job)


def test_an_island_whose_work_runs_elsewhere_holds_nothing_idle() -> None:
    topo, busy = fleet(20, 4, 4, JOBS)  # c4 (n16-n19) spare
    book, _ = islanded(topo, busy)
    moved = view(CFG, topo, to_spares(topo, busy), "cdu/c0", [], 0.0)
    assert book.revalue(risky(moved, False), 800.0, "act", 0) == []
    assert list(book.held) == [topo.index["cdu/c0"]]  # kept: valued again should work wait for it


def test_an_island_is_released_when_another_job_loses_a_node_and_the_spares_are_gone() -> None:
    """Train went from c0 to the spares; then a node of "batch" fails and it waits for a node,
    with only c0's free nodes left: the island now holds "batch" idle and is valued with "batch"
    on one of its nodes. While c0's failure risk stands it stays; once the risk is gone it is
    released."""
    topo, busy = fleet(20, 4, 4, JOBS)
    book, _ = islanded(topo, busy)
    node_job = to_spares(topo, busy).node_job.copy()
    node_job[8] = -1  # n08 failed: "batch" runs on n09-n15 and lacks one node
    short = view(CFG, topo, workload_from_nodes(topo, node_job), "cdu/c0", [], 0.0)
    assert book.revalue(risky(short, True), 800.0, "act", 0) == []  # its risk stands: it stays
    restrict, release = book.revalue(risky(short, False), 1400.0, "act", 0)
    assert (restrict.action, release.action, release.entity) == (
        "restrict_admission",
        "resume_node",
        "cdu/c0",
    )
    assert "island released" in release.reason


def test_an_island_entered_for_heat_is_valued_with_the_heat_it_had() -> None:
    """Idle, its GPUs cool: their readings now say nothing of what the work would meet back on
    them. The tolerance is priced with the shutdown they were heading for when it was entered, if
    that trip was due within ``hazard.thermal_trip.act_within_s`` (as one an island is entered for
    now is); one further out was not weighed then and is not now: back under the work, the heat
    is projected again and weighed once near."""
    topo, busy = fleet(16, 4, 4, JOBS)
    reasons = {}
    for heated in (None, 120.0, 1800.0):
        book, _ = islanded(topo, busy, heated=heated)
        after = view(CFG, topo, left(topo, busy), "cdu/c0", [], 0.0)  # no GPU heats now
        out = book.revalue(risky(after, False), 800.0, "act", 0)
        reasons[heated] = out[0].reason if out else None
    # A trip two minutes off, with no spare to restart on, would stop the job for the node's
    # repair: the island stays.
    assert reasons[120.0] is None
    assert reasons[None] is not None and "failure risk 0.0)" in reasons[None]
    assert "heading for shutdown" not in reasons[None]
    assert reasons[1800.0] is not None and "failure risk 0.0)" in reasons[1800.0]
    assert "in ~30 min: weighed once due within 3 min" in reasons[1800.0]


def test_an_island_is_valued_with_the_pace_its_gpus_had_and_its_job_on_all_its_nodes() -> None:
    """Idle, its GPUs report no pace: the slowdown the island took away must not read as gone
    (held-out seed 15025: a CDU islanded for GPUs heading for shutdown and a 706 GPU-h slowdown
    was released three minutes later, valued again at no slowdown, and four of its GPUs
    tripped). And "train", waiting whole for room, is put back on all its former nodes, not only
    the island's: its free nodes on c1 are not spares for its own island. With c4 spare, c0's
    failure risk gone, the island's work would restart on c4: the island is kept while the
    slowdown c0's GPUs had when it was entered stands, and released where they had none."""
    topo, busy = fleet(20, 4, 4, JOBS)  # c4 (n16-n19) spare
    kept = {}
    for slowdown in (0.0, 0.3):
        v = risky(view(CFG, topo, busy, "cdu/c0", range(4), slowdown), True)
        decisions = contain(planned(CFG, topo, busy, "cdu/c0", State.QUARANTINE), v)
        assert ("island_domain", "cdu/c0") in acts(decisions)
        book = IslandBook()
        book.note(v, decisions, 100.0)
        after = view(CFG, topo, left(topo, busy), "cdu/c0", [], 0.0)  # idle: no pace, no risk
        out = book.revalue(risky(after, False), 800.0, "act", 0)
        kept[slowdown] = out == []
        if out:
            assert "restarts 1 job(s) and holds 0 GPUs idle" in out[0].reason  # c4 takes train's c0 share
    assert kept == {0.0: False, 0.3: True}


def test_an_island_is_forgotten_only_once_its_domain_is_healthy() -> None:
    """Degraded, its nodes are still held by the safety layer: it stays in the book, valued."""
    topo, busy = fleet(16, 4, 4, JOBS)
    book, v = islanded(topo, busy)
    states = v.states.copy()
    c0 = topo.index["cdu/c0"]
    book.released.add(c0)
    for state, kept in ((State.QUARANTINE, True), (State.DEGRADED, True), (State.HEALTHY, False)):
        states[c0] = int(state)
        book.forget_recovered(states)
        assert (list(book.held) == [c0]) is kept and (book.released == {c0}) is kept


def test_an_island_keeps_its_record_across_a_world_change() -> None:
    """Four nodes join (a fifth CDU): every global index moves; the island follows c0."""
    topo, busy = fleet(16, 4, 4, JOBS)
    book, _ = islanded(topo, busy)
    grown, _ = fleet(20, 4, 4, JOBS)
    change = world_change(topo, grown)
    book.carry_over(change)
    c0 = grown.index["cdu/c0"]
    assert list(book.held) == [c0]
    assert book.held[c0].nodes.tolist() == [0, 1, 2, 3]
    busy2 = workload_from_nodes(grown, np.append(busy.node_job, [-1] * 4))
    assert book.held[c0].node_job.tolist() == busy2.node_job.tolist()
    after = view(CFG, grown, left(grown, busy2), "cdu/c0", [], 0.0)
    _, release = book.revalue(risky(after, False), 800.0, "act", 0)
    assert (release.action, release.entity) == ("resume_node", "cdu/c0")


def test_the_safety_layer_lets_go_of_the_nodes_held_for_the_island_alone() -> None:
    topo = safety_fleet()  # rack r0 = n00-n07
    s = layer(topo)
    s.tick(100.0, [island("rack/r0", 100.0), drain_decision("n01", 100.0, cause="gpu/n01/0")])
    assert sorted(s.held_nodes().tolist()) == list(range(8))
    release = replace(island("rack/r0", 700.0), action="resume_node", reason="island released: valued again")
    out = s.tick(700.0, [release])
    assert kinds(out.actions) == [("resume_node", f"node/n{i:02d}") for i in range(8) if i != 1]
    assert all(a.reason == "island released: valued again" for a in out.actions)
    [held] = by_status(out.records, ActionStatus.HELD)
    assert held.target == "rack/r0" and "node/n01 also held for gpu/n01/0" in held.detail
    assert s.held_nodes().tolist() == [1]


def test_under_the_storm_brake_an_island_is_released_when_the_brake_lifts() -> None:
    """The engine decides a release once (``IslandBook.released``): held under the brake, it is
    kept and carried out on the first tick the brake is off, for the nodes held for it alone."""
    topo = safety_fleet()  # rack r0 = n00-n07
    s = layer(topo, storm=True)
    s.tick(100.0, [island("rack/r0", 100.0), drain_decision("n01", 100.0, cause="gpu/n01/0")])
    s.brake.engaged = True
    release = replace(island("rack/r0", 700.0), action="resume_node", reason="island released: valued again")
    out = s.tick(700.0, [release])
    assert out.actions == ()
    [held] = by_status(out.records, ActionStatus.HELD)
    assert "storm brake on: the island stays until the brake lifts" in held.detail
    assert sorted(s.held_nodes().tolist()) == list(range(8))
    assert s.tick(730.0, []).actions == ()  # still braked: still kept
    s.brake.engaged = False
    out = s.tick(760.0, [])
    assert kinds(out.actions) == [("resume_node", f"node/n{i:02d}") for i in range(8) if i != 1]
    assert all(a.reason == "island released: valued again" for a in out.actions)
    assert s.held_nodes().tolist() == [1]
    assert s.tick(790.0, []).actions == ()  # carried out once


def test_the_controller_values_its_islands_every_revalue_s_and_keeps_a_released_one_in_service() -> None:
    """cdu/c0 (n00, n01) loses flow under "train" (n00-n07); "batch" holds every other node. Once
    c0 is quarantined it is islanded (noted as the containment stage notes one) and "train" leaves
    to wait for room. The next periodic valuation finds the island holds "train" idle for a 50 %
    slowdown, with no spare to go to: it releases it, and admission reads c0 as ``degraded``."""
    inv = small_inventory(nodes=32, gpus=1, racks_per_cdu=1, nodes_per_rack=2)
    names = [f"n{i:02d}" for i in range(32)]
    topo = build_topology(inv, (JobRecord("train", SYNC, tuple(names[:8]), 0.0, 1e10),
                                JobRecord("batch", BATCH, tuple(names[8:]), 0.0, 1e10)))  # fmt: skip
    ctl = Controller(topo, CFG)
    ctl.set_placement({"train": names[:8], "batch": names[8:]})
    c0 = topo.index["cdu/c0"]
    rng = np.random.default_rng(11)
    slow = {(f"gpu/{n}/0", "gpu.step_time_s"): 3.0 for n in ("n00", "n01")}
    released: list[DecisionRecord] = []
    islanded_at = None
    for tick in range(1, WARM + 80):
        now = START + TICK * tick
        whole = normal_batch(topo, now, rng, overrides=dict(slow) if tick > WARM else None)
        keep = np.isin(topo.kind_code[whole.entity], GPU_SIDE)
        gpus = TelemetryBatch(
            whole.entity[keep], whole.signal[keep], whole.timestamp[keep], whole.value[keep]
        )
        decisions = ctl.tick(
            now, TelemetryBatch.concat([gpus, plant_batch(topo, tick, rng, flow_loss)])
        ).decisions
        if islanded_at is None and ctl.states[c0] == int(State.QUARANTINE):
            workload = ctl.workload_at(now)
            half = np.where(np.isin(np.arange(32), [0, 1]), 0.5, 0.0)  # n00, n01 at 3.0 s against 2.0
            ctl.islands.held[c0] = Island(
                now, nodes_below(topo, c0), workload.node_job.copy(), np.full(32, np.inf), half
            )
            ctl.set_placement({"batch": names[8:]})  # "train" waits for room
            islanded_at = now
        released += [d for d in decisions if d.action == "resume_node"]
    assert islanded_at is not None, "cdu/c0 never entered quarantine"
    [release] = released
    assert (
        release.entity == "cdu/c0"
        and islanded_at < release.ts <= islanded_at + CFG.economics.revalue_s + TICK
    )
    assert "island released" in release.reason and "tolerate" in release.reason
    assert ctl.admission_states()[c0] == int(State.DEGRADED)
    assert ctl.islands.held == {} and ctl.islands.released == {c0}
