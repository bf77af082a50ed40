"""The safety layer: budgets hold and queue, recovery waits and doubles, the storm brake brakes."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pytest

from seamguard.actuators.dispatch import Dispatcher, actuate
from seamguard.control.budgets import BudgetConfig, Budgets, PartitionConfig, domain_incidence
from seamguard.control.safety import SAFETY, SafetyLayer
from seamguard.control.safety_config import RecoveryConfig, SafetyConfig
from seamguard.control.storm import StormConfig, entity_domains
from seamguard.errors import InputError
from seamguard.journal.records import ActionResultRecord, DecisionRecord, TransitionRecord
from seamguard.model.actions import ActionStatus
from seamguard.model.inventory import Inventory, NodeRecord
from seamguard.model.topology import Topology, build_topology
from tests.conftest import small_inventory

# Everything permissive except what a test sets: each test shows one bound holding.
OPEN = {
    "max_nodes": 1000,
    "max_fleet_pct": 100.0,
    "domain_pct": 100.0,
    "per_hour": 1000,
    "per_hour_pct": 100.0,
    "partitions": {},
}


def fleet(nodes: int = 32, per_rack: int = 8, racks_per_cdu: int = 2) -> Topology:
    return build_topology(
        small_inventory(nodes=nodes, gpus=4, racks_per_cdu=racks_per_cdu, nodes_per_rack=per_rack)
    )


def layer(topo: Topology, storm: bool = False, delay: float = 600.0, **budget: object) -> SafetyLayer:
    cfg = SafetyConfig(
        budgets=BudgetConfig.model_validate({**OPEN, **budget}),
        storm=StormConfig(enabled=storm, max_new=32, max_domains=2, window_s=300, calm_s=900),
        recovery=RecoveryConfig(healthy_for_s=delay, repeat_factor=2.0, max_delay_s=4 * delay),
    )
    return SafetyLayer(topo, cfg)


def drain(node: str, ts: float, cause: str | None = None) -> DecisionRecord:
    return DecisionRecord(
        ts, f"node/{node}", "drain_node", "advise", "quarantine", "quarantine", cause=cause or ""
    )


def undo(entity: str, ts: float) -> DecisionRecord:
    return DecisionRecord(ts, entity, "restore_admission", "advise", "back", "healthy", cause=entity)


def kinds(actions: Sequence[object]) -> list[tuple[str, str]]:
    return [(a.kind, a.target) for a in actions]  # type: ignore[attr-defined]


def by_status(records: Sequence[ActionResultRecord], status: ActionStatus) -> list[ActionResultRecord]:
    return [r for r in records if r.status == status.value]


def test_absolute_budget_holds_and_queued_drains_are_taken_when_it_frees() -> None:
    s = layer(fleet(), max_nodes=3)
    names = ["n00", "n08", "n16", "n24", "n09"]
    out = s.tick(100.0, [drain(n, 100.0) for n in names])
    assert kinds(out.actions) == [("drain_node", f"node/{n}") for n in names[:3]]
    refused = by_status(out.records, ActionStatus.REFUSED)
    assert [r.target for r in refused] == ["node/n24", "node/n09"]
    assert all(
        r.actuator == SAFETY and "budget max_nodes" in r.detail and "queued" in r.detail for r in refused
    )
    assert [a.target for a in s.queued()] == ["node/n24", "node/n09"]
    # Nothing frees: re-examined each tick, still waiting, no duplicate refusals journaled.
    again = s.tick(200.0, [])
    assert again.actions == () and again.records == () and len(s.queued()) == 2
    # n00 recovers: held for the delay, then resumed, and the oldest queued drain takes its place.
    held = s.tick(300.0, [undo("node/n00", 300.0)])
    assert by_status(held.records, ActionStatus.HELD) and held.actions == ()
    freed = s.tick(900.0, [])
    assert kinds(freed.actions) == [("resume_node", "node/n00"), ("restore_admission", "node/n00"),
                                    ("drain_node", "node/n24")]  # fmt: skip
    assert freed.actions[2].decided_at == 100.0  # the same action (same key), not a new one
    assert [a.target for a in s.queued()] == ["node/n09"]
    assert sorted(s.quarantined()) == ["node/n08", "node/n16", "node/n24"]


def test_an_undo_cancels_a_queued_drain_whose_cause_recovered() -> None:
    s = layer(fleet(), max_nodes=1)
    s.tick(10.0, [drain("n00", 10.0, "gpu/n00/1"), drain("n08", 10.0, "gpu/n08/2")])
    assert [a.target for a in s.queued()] == ["node/n08"]
    out = s.tick(20.0, [undo("gpu/n08/2", 20.0)])
    cancelled = by_status(out.records, ActionStatus.CANCELLED)
    assert [(r.kind, r.target) for r in cancelled] == [("drain_node", "node/n08")]
    assert "recovered" in cancelled[0].detail and s.queued() == []
    assert kinds(out.actions) == [("restore_admission", "gpu/n08/2")]  # nothing held for it: passes


def test_percentage_bound_per_domain() -> None:
    topo = fleet(nodes=32, per_rack=8)  # racks of 8: 25% allows 2 per rack
    s = layer(topo, domain_pct=25.0, domain_kinds=("rack",))
    out = s.tick(0.0, [drain(n, 0.0) for n in ("n00", "n01", "n02", "n08")])
    assert kinds(out.actions) == [
        ("drain_node", "node/n00"),
        ("drain_node", "node/n01"),
        ("drain_node", "node/n08"),
    ]
    (refused,) = by_status(out.records, ActionStatus.REFUSED)
    assert refused.target == "node/n02"
    assert "budget domain_pct: rack/r0 has 2 of 8 nodes quarantined (at most 25% = 2)" in refused.detail
    # The counts come from one sparse product over the incidence matrix.
    counts = s.budgets.domain_counts()
    assert counts[s.budgets.domain_labels.index("rack/r0")] == 2
    assert counts[s.budgets.domain_labels.index("rack/r1")] == 1


def failed(node: str, ts: float) -> DecisionRecord:
    return DecisionRecord(
        ts, f"node/{node}", "drain_node", "act", "failed: XID 79", "failed", cause=f"gpu/{node}/0"
    )


def test_a_failed_node_is_drained_whatever_its_domain_holds_and_a_gray_one_still_waits() -> None:
    """Rack r0 (8 nodes, 25%: 2) has n00 and n01 quarantined for gray evidence. n02's GPU falls off
    the bus (state failed): draining it takes nothing its job could still use, so the per-domain
    bound does not refuse it. n03, only suspect, is refused as before. The hourly bound still holds
    failed nodes."""
    topo = fleet(nodes=32, per_rack=8)
    s = layer(topo, domain_pct=25.0, domain_kinds=("rack",), per_hour=4)
    s.tick(0.0, [drain("n00", 0.0), drain("n01", 0.0)])
    out = s.tick(10.0, [failed("n02", 10.0), drain("n03", 10.0)])
    assert kinds(out.actions) == [("drain_node", "node/n02")]
    (refused,) = by_status(out.records, ActionStatus.REFUSED)
    assert refused.target == "node/n03" and "budget domain_pct: rack/r0" in refused.detail
    # The hour's bound (4 quarantines) holds for failed nodes as for any other: n04 is the fourth.
    held = s.tick(20.0, [failed("n04", 20.0), failed("n05", 20.0)])
    assert kinds(held.actions) == [("drain_node", "node/n04")]
    assert "budget per_hour" in by_status(held.records, ActionStatus.REFUSED)[-1].detail


def test_percentage_bound_of_a_cdu_and_of_a_job() -> None:
    topo = build_topology(
        small_inventory(nodes=16, gpus=4, racks_per_cdu=2, nodes_per_rack=4),  # cdu c0 = n00..n07
    )
    s = layer(topo, domain_pct=25.0, domain_kinds=("cdu",))
    out = s.tick(0.0, [drain(n, 0.0) for n in ("n00", "n04", "n05", "n08")])
    (refused,) = by_status(out.records, ActionStatus.REFUSED)
    assert refused.target == "node/n05" and "cdu/c0" in refused.detail


def test_small_domains_keep_their_floor() -> None:
    topo = fleet(nodes=8, per_rack=2)
    b = Budgets(topo, BudgetConfig.model_validate({**OPEN, "domain_pct": 10.0, "domain_kinds": ("rack",)}))
    one = np.array([0], dtype=np.int64)
    assert b.check(one, 0.0) is None  # 10% of 2 rounds to 0, the floor allows one
    b.take(one, 0.0)
    refusal = b.check(np.array([1], dtype=np.int64), 0.0)
    assert refusal is not None and "rack/r0" in refusal


def test_minimum_in_service_capacity_of_a_partition_counts_failed_nodes() -> None:
    topo = fleet()
    s = layer(topo, partitions={"pool-a": {"nodes": ["n0[0-3]"], "min_in_service_nodes": 3}})
    fail = TransitionRecord(0.0, "node/n03", "healthy", "failed", 1.0, 0.0, 1.0, "down")
    out = s.tick(0.0, [drain("n00", 0.0)], [fail])
    (refused,) = by_status(out.records, ActionStatus.REFUSED)
    assert "min_in_service: partition pool-a has 3 of 4 nodes in service and must keep 3" in refused.detail
    # n03 comes back: capacity is there again and the queued drain is taken.
    back = TransitionRecord(50.0, "node/n03", "failed", "healthy", 0.0, 0.0, 1.0, "up")
    out = s.tick(50.0, [], [back])
    assert kinds(out.actions) == [("drain_node", "node/n00")]
    # Draining outside the partition is not limited by it.
    assert s.tick(60.0, [drain("n20", 60.0)]).actions[0].target == "node/n20"
    # ...and the whole-fleet partition (no patterns) bounds the fleet.
    f = layer(topo, partitions={"fleet": {"min_in_service_pct": 95.0}})
    res = f.tick(0.0, [drain(n, 0.0) for n in ("n00", "n08", "n16")])
    assert (
        len(res.actions) == 1 and "partition fleet" in by_status(res.records, ActionStatus.REFUSED)[0].detail
    )


def test_partition_matching_no_node_is_a_config_error() -> None:
    with pytest.raises(InputError, match=r"partitions\.ghost"):
        layer(fleet(), partitions={"ghost": PartitionConfig(nodes=("x*",))})


def test_rolling_hour_budget() -> None:
    s = layer(fleet(), per_hour=2)
    out = s.tick(0.0, [drain(n, 0.0) for n in ("n00", "n08", "n16")])
    assert len(out.actions) == 2 and "budget per_hour" in out.records[0].detail
    assert s.tick(3599.0, []).actions == ()
    assert kinds(s.tick(3601.0, []).actions) == [("drain_node", "node/n16")]


def test_percentage_of_the_fleet_bound() -> None:
    s = layer(fleet(nodes=32), max_fleet_pct=10.0)  # 3 of 32
    out = s.tick(0.0, [drain(f"n{i:02d}", 0.0) for i in (0, 8, 16, 24)])
    assert len(out.actions) == 3 and "budget max_fleet_pct" in out.records[0].detail


def test_recovery_waits_for_the_delay_and_doubles_for_repeat_offenders() -> None:
    s = layer(fleet(), delay=600.0)
    t = 0.0
    delays = []
    for _ in range(4):
        s.tick(t, [drain("n05", t, "gpu/n05/0")])
        assert s.quarantined() == ["node/n05"]
        back = t + 100.0
        held = s.tick(back, [undo("gpu/n05/0", back)])
        assert held.actions == () and by_status(held.records, ActionStatus.HELD)
        release = s.release_at("node/n05")
        assert release is not None
        delays.append(release - back)
        assert s.tick(release - 1.0, []).actions == ()
        out = s.tick(release, [])
        assert kinds(out.actions) == [("resume_node", "node/n05"), ("restore_admission", "gpu/n05/0")]
        assert s.quarantined() == []
        t = release + 10.0
    assert delays == [600.0, 1200.0, 2400.0, 2400.0]  # doubled per repeat, capped at max_delay_s


def test_a_relapse_cancels_the_pending_release() -> None:
    s = layer(fleet(), delay=600.0)
    s.tick(0.0, [drain("n05", 0.0, "gpu/n05/0")])
    s.tick(10.0, [undo("gpu/n05/0", 10.0)])
    relapse = DecisionRecord(
        300.0, "gpu/n05/0", "restrict_admission", "advise", "warm", "degraded", cause="gpu/n05/0"
    )
    out = s.tick(300.0, [relapse])
    assert [(r.status, r.kind) for r in out.records] == [("cancelled", "restore_admission")]
    assert s.tick(10_000.0, []).actions == () and s.quarantined() == ["node/n05"]


def test_a_node_leaves_only_when_every_cause_recovered() -> None:
    s = layer(fleet(), delay=100.0)
    s.tick(0.0, [drain("n05", 0.0, "gpu/n05/0"), drain("n05", 0.0, "gpu/n05/3")])
    s.tick(10.0, [undo("gpu/n05/0", 10.0)])
    assert s.tick(500.0, []).actions == ()
    s.tick(600.0, [undo("gpu/n05/3", 600.0)])
    assert s.release_at("node/n05") == 700.0
    assert [a.kind for a in s.tick(700.0, []).actions] == [
        "resume_node",
        "restore_admission",
        "restore_admission",
    ]


def test_advise_mode_acts_on_nothing_but_journals_every_action() -> None:
    calls: list[str] = []

    class Counting:  # counts calls: advise mode must make none
        name = "counting"
        kinds = frozenset({"drain_node", "resume_node"})

        def apply(self, action, now):  # type: ignore[no-untyped-def]
            calls.append(action.key)
            raise AssertionError("advise mode called an actuator")

    from seamguard.actuators.dispatch import Route

    s = layer(fleet(), max_nodes=1)
    d = Dispatcher([Route(Counting())])  # mode defaults to advise
    results, _ = actuate(s, d, 0.0, [drain("n00", 0.0), drain("n08", 0.0)])
    assert calls == []
    assert [(r.target, r.actuator, r.status) for r in results] == [
        ("node/n08", SAFETY, "refused"),  # the budget judged as enforce mode would
        ("node/n00", "counting", "advised"),
    ]
    assert "would drain_node node/n00" in results[1].detail and "advise mode" in results[1].detail


def _transition(entity: str, ts: float) -> TransitionRecord:
    return TransitionRecord(ts, entity, "healthy", "degraded", 0.5, 0.1, 1.0, "hot")


def test_storm_brake_passes_a_confined_event_and_brakes_a_spread_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    topo = fleet(nodes=32, per_rack=4, racks_per_cdu=2)  # 8 racks, 4 CDUs, 8 leaves
    cdu0 = [f"n{i:02d}" for i in range(8)]
    confined = [f"node/{n}" for n in cdu0] + [f"gpu/{n}/{g}" for n in cdu0 for g in range(4)]
    s = layer(topo, storm=True)
    out = s.tick(0.0, [drain("n00", 0.0)], [_transition(e, 0.0) for e in confined])
    assert len(confined) > 32 and not out.braked and out.notices == ()
    assert kinds(out.actions) == [("drain_node", "node/n00")]

    spread_nodes = [f"n{i:02d}" for i in range(0, 32, 2)]
    spread = [f"gpu/{n}/{g}" for n in spread_nodes for g in range(3)]
    s = layer(topo, storm=True)
    with caplog.at_level(logging.ERROR, logger="seamguard.control.storm"):
        out = s.tick(0.0, [drain("n00", 0.0)], [_transition(e, 0.0) for e in spread])
    assert out.braked
    (notice,) = out.notices
    assert (
        notice.level == "error"
        and "48 entities" in notice.message
        and "4 cdu, 8 switch, 8 rack" in notice.message
    )
    assert any(r.levelname == "ERROR" and "storm brake ON" in r.message for r in caplog.records)
    # Under the brake the drain is advice only and the ledger does not move.
    results = Dispatcher([]).dispatch(out.actions, 0.0, advise=out.braked, why=out.brake_reason)
    assert [r.status for r in results] == ["advised"] and s.quarantined() == []
    # Released only after the window empties and a calm period passes.
    assert s.tick(600.0, []).braked  # calm since 600
    late = s.tick(1500.0, [drain("n02", 1500.0)])
    assert not late.braked and late.notices[0].level == "warning" and "released" in late.notices[0].message
    assert kinds(late.actions) == [("drain_node", "node/n02")]


def rail_striped_fleet() -> Topology:
    """32 nodes of 8 GPUs, 4 per rack, 2 racks per CDU (8 racks, 4 CDUs), each node cabled to leaf
    ``i % 8``: a leaf spans racks and CDUs, so one kind of domain can be spread while another is not."""
    nodes = tuple(
        NodeRecord(node=f"n{i:02d}", rack=f"r{i // 4}", cdu=f"c{i // 8}", leaf=f"l{i % 8}", gpus=8)
        for i in range(32)
    )
    return build_topology(Inventory(nodes))


def _degrade(nodes: Sequence[str]) -> list[TransitionRecord]:
    entities = [f"node/{n}" for n in nodes] + [f"gpu/{n}/{g}" for n in nodes for g in range(8)]
    return [_transition(e, 0.0) for e in entities]


@pytest.mark.parametrize(
    ("nodes", "spread"),
    [
        # one leaf's nodes: 4 racks and 4 CDUs, but one switch explains them all (a leaf flapping)
        (("n00", "n08", "n16", "n24"), {"cdu": 4, "switch": 1, "rack": 4}),
        # one CDU's nodes: 8 switches, but one CDU explains them all (a CDU losing flow)
        (tuple(f"n{i:02d}" for i in range(8)), {"cdu": 1, "switch": 8, "rack": 2}),
    ],
)
def test_storm_brake_stays_off_when_any_one_kind_of_domain_explains_the_event(
    nodes: tuple[str, ...], spread: dict[str, int]
) -> None:
    """The brake needs the spread over *every* kind: an event concentrated in one kind of domain is
    physical however widely it spreads over the others, and a genuine containment goes through."""
    s = layer(rail_striped_fleet(), storm=True)
    out = s.tick(0.0, [drain(nodes[0], 0.0)], _degrade(nodes))
    count, got = s.brake.spread()
    assert count > 32 and got == spread  # past max_new, and past max_domains in some kind
    assert not out.braked and out.notices == ()
    assert kinds(out.actions) == [("drain_node", f"node/{nodes[0]}")]
    assert s.quarantined() == [f"node/{nodes[0]}"]  # the ledger moved: a real drain, not advice


def test_storm_brake_engages_on_the_same_fleet_when_every_kind_is_spread() -> None:
    """The converse on the same fleet and count: one node per rack, CDU and leaf diagonal."""
    nodes = ("n00", "n09", "n18", "n27")  # racks r0 r2 r4 r6, CDUs c0-c3, leaves l0-l3
    s = layer(rail_striped_fleet(), storm=True)
    out = s.tick(0.0, [drain("n00", 0.0)], _degrade(nodes))
    assert s.brake.spread() == (36, {"cdu": 4, "switch": 4, "rack": 4})
    assert out.braked and "36 entities" in out.notices[0].message and s.quarantined() == []


def test_domain_lookups_are_vectorised_and_right() -> None:
    topo = fleet(nodes=16, per_rack=4, racks_per_cdu=2)
    cdu = entity_domains(topo, "cdu")
    assert cdu[topo.lookup("gpu/n05/2")] == 0 and cdu[topo.lookup("node/n09")] == 1
    assert cdu[topo.lookup("rack/r3")] == 1 and cdu[topo.lookup("storage/ckpt0")] == -1  # spans both
    m, labels = domain_incidence(topo, ("rack", "cdu"))
    assert m.shape == (16, 4 + 2) and labels[:2] == ["rack/r0", "rack/r1"]
    assert np.asarray(m.sum(axis=1)).ravel().tolist() == [2.0] * 16  # one rack and one CDU per node


def result(
    ts: float, kind: str, node: str, status: ActionStatus, actuator: str = "slurm"
) -> ActionResultRecord:
    return ActionResultRecord(ts, kind, f"node/{node}", actuator, status.value, "", 0, ts, 0)


def test_a_restart_holds_again_what_an_earlier_run_quarantined_and_releases_it_once_healthy() -> None:
    """The journal of an earlier run: n00 drained (twice, a week apart), n08 drained and resumed,
    n16's drain refused by a budget and n24's failed. Only n00 is still out: it is held again,
    counted in the budget, and resumed after the recovery delay (doubled: a repeat offender)."""
    journal = [
        result(1_000.0, "drain_node", "n00", ActionStatus.DONE),
        result(1_000.0, "drain_node", "n00", ActionStatus.ADVISED, actuator="log"),  # same decision
        result(2_000.0, "resume_node", "n00", ActionStatus.DONE),
        result(9_000.0, "drain_node", "n00", ActionStatus.DONE),
        result(3_000.0, "drain_node", "n08", ActionStatus.DONE),
        result(4_000.0, "resume_node", "n08", ActionStatus.DONE),
        result(5_000.0, "drain_node", "n16", ActionStatus.REFUSED, actuator=SAFETY),
        result(6_000.0, "drain_node", "n24", ActionStatus.FAILED),
    ]
    s = layer(fleet(), delay=600.0, max_nodes=1)
    assert s.restore(journal, 10_000.0) == ["node/n00"]
    assert s.quarantined() == ["node/n00"] and s.recovery_delay(0, 10_000.0) == 1200.0
    # The budget counts it: another drain waits.
    out = s.tick(10_010.0, [drain("n09", 10_010.0)])
    assert out.actions == () and [r.target for r in by_status(out.records, ActionStatus.REFUSED)] == [
        "node/n09"
    ]
    # Healthy for the doubled delay: resumed, and the queued drain takes its place.
    assert kinds(s.tick(11_100.0, []).actions) == []
    assert kinds(s.tick(11_200.0, []).actions) == [("resume_node", "node/n00"), ("drain_node", "node/n09")]


def test_a_restored_node_the_engine_still_finds_bad_stays_out() -> None:
    s = layer(fleet(), delay=600.0)
    assert s.restore([result(1_000.0, "drain_node", "n00", ActionStatus.DONE)], 5_000.0) == ["node/n00"]
    # Its GPU is judged quarantine-worthy again before the delay ends: the release is off.
    s.tick(5_100.0, [drain("n00", 5_100.0, cause="gpu/n00/1")])
    assert kinds(s.tick(9_000.0, []).actions) == [] and s.quarantined() == ["node/n00"]
    # Once that GPU recovers, the delay runs from then.
    s.tick(9_100.0, [undo("gpu/n00/1", 9_100.0)])
    assert kinds(s.tick(9_650.0, []).actions) == []
    assert kinds(s.tick(9_700.0, []).actions)[0] == ("resume_node", "node/n00")


def test_a_skipped_answer_keeps_the_ledger_and_a_release_cancels_pending_drain_retries() -> None:
    """Slurm drains n00 while HAProxy, fronting nothing there, skips it: n00 stays quarantined.
    A drain still waiting for a retry is cancelled when its node is released."""
    from seamguard.actuators.dispatch import Route
    from seamguard.actuators.guard import GuardConfig
    from seamguard.actuators.sections import Mode
    from seamguard.model.actions import Action, ActionResult

    class Flaky:
        name, kinds = "flaky", frozenset({"drain_node", "resume_node"})

        def apply(self, action: Action, now: float) -> ActionResult:
            if action.kind == "drain_node":
                return ActionResult(action, self.name, ActionStatus.FAILED, "busy", now)
            return ActionResult(action, self.name, ActionStatus.DONE, "ok", now)

    class Elsewhere:
        name, kinds = "elsewhere", frozenset({"drain_node"})

        def apply(self, action: Action, now: float) -> ActionResult:
            return ActionResult(action, self.name, ActionStatus.SKIPPED, "not mine", now)

    s = layer(fleet(), delay=100.0)
    guard = GuardConfig(max_attempts=5, backoff_base_s=10.0, jitter=0.0, failures_to_open=99)
    d = Dispatcher([Route(Flaky(), Mode.ENFORCE, guard), Route(Elsewhere(), Mode.ENFORCE, guard)])
    results, _ = actuate(s, d, 100.0, [drain("n00", 100.0, cause="gpu/n00/1")])
    assert {(r.actuator, r.status) for r in results} == {("flaky", "failed"), ("elsewhere", "skipped")}
    assert s.quarantined() == ["node/n00"]  # a skip is not a refusal: the ledger keeps it
    results, _ = actuate(s, d, 150.0, [undo("gpu/n00/1", 150.0)])
    assert [r.status for r in results if r.kind == "drain_node"] == ["failed"]  # a retry went out
    results, _ = actuate(s, d, 300.0, [])
    assert [(r.kind, r.status) for r in results if r.actuator == "flaky"] == [
        ("drain_node", "cancelled"),
        ("resume_node", "done"),
    ]
    assert d.guards["flaky"].pending() == []


def island(domain: str, ts: float) -> DecisionRecord:
    return DecisionRecord(ts, domain, "island_domain", "advise", "hot", "quarantine", cause=domain)


def test_a_containment_is_one_decision_that_no_per_domain_bound_refuses() -> None:
    """A rack of 8 under a 25 % domain bound: piecemeal drains stop at 2 nodes, the rack's
    containment passes whole and counts once against the hourly bound."""
    topo = fleet()
    s = layer(topo, domain_pct=25.0, per_hour=2)
    out = s.tick(100.0, [island("rack/r0", 100.0)])
    assert kinds(out.actions) == [("island_domain", "rack/r0")] and out.records == ()
    assert sorted(s.held_nodes().tolist()) == list(range(8))
    # A drain beside it still meets its CDU's bound (8 of 16 held); the hour had room for one more.
    more = s.tick(200.0, [drain("n08", 200.0), drain("n16", 200.0), drain("n24", 200.0)])
    assert kinds(more.actions) == [("drain_node", "node/n16")]
    refused = {r.target: r.detail for r in by_status(more.records, ActionStatus.REFUSED)}
    assert "cdu/c0" in refused["node/n08"] and "budget per_hour:" in refused["node/n24"]


def test_a_containment_still_keeps_the_fleet_s_capacity_bounds() -> None:
    s = layer(fleet(), max_nodes=7)
    out = s.tick(100.0, [island("rack/r0", 100.0)])
    assert out.actions == ()
    [refused] = by_status(out.records, ActionStatus.REFUSED)
    assert "budget max_nodes" in refused.detail
    s = layer(fleet(), partitions={"fleet": {"min_in_service_pct": 80.0}})
    [refused] = by_status(s.tick(100.0, [island("rack/r0", 100.0)]).records, ActionStatus.REFUSED)
    assert "min_in_service" in refused.detail
