"""The safety layer's ledger at its edges: causes that merge, undos that name a cause, actuator
outcomes fed back, a restart's journal, the repeat-offender window and unknown targets.

Written from the mutants mutmut found surviving in ``control/safety.py`` (docs/testing.md): each
test fails if one comparison, default or argument of the rule it names is changed.
"""

from __future__ import annotations

from seamguard.control.safety import SAFETY, SafetyLayer
from seamguard.journal.records import ActionResultRecord, DecisionRecord, TransitionRecord
from seamguard.model.actions import ActionStatus
from seamguard.model.inventory import JobClass, JobRecord
from seamguard.model.topology import build_topology
from tests.conftest import small_inventory
from tests.test_safety import by_status, drain, fleet, kinds, layer, result, undo

WEEK_S = 7 * 86400.0


def recovered(entity: str, ts: float, cause: str) -> DecisionRecord:
    return DecisionRecord(ts, entity, "restore_admission", "advise", "back", "healthy", cause=cause)


def test_a_second_cause_joins_a_queued_drain_and_both_must_recover_before_it_is_dropped() -> None:
    s = layer(fleet(), max_nodes=0)  # every drain waits
    first = s.tick(10.0, [drain("n00", 10.0, cause="gpu/n00/1")])
    assert len(by_status(first.records, ActionStatus.REFUSED)) == 1
    second = s.tick(20.0, [drain("n00", 20.0, cause="gpu/n00/2")])
    assert second.records == () and len(s.queued()) == 1  # merged: no second refusal, no second entry
    # One cause recovers: the drain still waits for the other.
    out = s.tick(30.0, [undo("gpu/n00/1", 30.0)])
    assert by_status(out.records, ActionStatus.CANCELLED) == [] and len(s.queued()) == 1
    out = s.tick(40.0, [undo("gpu/n00/2", 40.0)])
    (cancelled,) = by_status(out.records, ActionStatus.CANCELLED)
    assert cancelled.ts == 40.0 and cancelled.detail == "gpu/n00/2 recovered before the budget freed"
    assert s.queued() == []


def test_an_undo_leaves_the_queued_drains_of_other_nodes_alone() -> None:
    s = layer(fleet(), max_nodes=0)
    s.tick(10.0, [drain("n00", 10.0, cause="gpu/n00/1"), drain("n08", 10.0, cause="gpu/n08/1")])
    s.tick(20.0, [undo("gpu/n08/1", 20.0)])
    assert [a.target for a in s.queued()] == ["node/n00"]


def test_a_drain_taken_for_two_causes_is_held_until_the_last_recovers() -> None:
    s = layer(fleet(), delay=100.0, max_nodes=1)
    s.tick(0.0, [drain("n08", 0.0, cause="gpu/n08/1")])
    s.tick(5.0, [drain("n00", 5.0, cause="gpu/n00/1")])
    s.tick(6.0, [drain("n00", 6.0, cause="gpu/n00/2")])  # merged into the queued drain
    s.tick(7.0, [undo("gpu/n08/1", 7.0)])
    taken = s.tick(200.0, [])  # n08 released: the queued drain of n00 is taken, for both causes
    assert kinds(taken.actions) == [
        ("resume_node", "node/n08"),
        ("restore_admission", "gpu/n08/1"),  # the held undo goes out with its node
        ("drain_node", "node/n00"),
    ]
    out = s.tick(300.0, [undo("gpu/n00/1", 300.0)])
    (held,) = by_status(out.records, ActionStatus.HELD)
    assert held.ts == 300.0 and held.detail == "node/n00 has other unwell causes" and out.actions == ()
    out = s.tick(310.0, [undo("gpu/n00/2", 310.0)])
    (held,) = by_status(out.records, ActionStatus.HELD)
    assert held.ts == 310.0
    assert (
        held.detail
        == "node/n00 healthy since 310; leaves quarantine at 410 (quarantine 1 in the window: delay 100 s)"
    )
    assert s.release_at("node/n00") == 410.0
    released = s.tick(410.0, []).actions
    assert released[0].reason == "healthy since 310; leaves quarantine (drain_node at 200)"


def test_an_undo_of_the_node_itself_drops_its_queued_drain_whatever_the_cause() -> None:
    s = layer(fleet(), max_nodes=0)
    s.tick(10.0, [drain("n00", 10.0, cause="gpu/n00/1")])
    out = s.tick(20.0, [undo("node/n00", 20.0)])
    assert [r.target for r in by_status(out.records, ActionStatus.CANCELLED)] == ["node/n00"]
    assert s.queued() == []


def test_an_undo_is_matched_by_its_cause_not_by_its_entity() -> None:
    s = layer(fleet(), delay=100.0)
    s.tick(0.0, [drain("n00", 0.0, cause="gpu/n00/1")])
    out = s.tick(50.0, [recovered("node/n00", 50.0, cause="gpu/n00/1")])
    assert out.actions == () and len(by_status(out.records, ActionStatus.HELD)) == 1
    assert s.release_at("node/n00") == 150.0


def test_a_quarantine_exactly_one_window_old_no_longer_makes_a_repeat_offender() -> None:
    s = layer(fleet(), delay=100.0)
    s.tick(0.0, [drain("n00", 0.0, cause="gpu/n00/1")])
    s.tick(10.0, [undo("gpu/n00/1", 10.0)])
    assert kinds(s.tick(200.0, []).actions)[0] == ("resume_node", "node/n00")
    s.tick(WEEK_S, [drain("n00", WEEK_S, cause="gpu/n00/1")])
    assert s.recovery_delay(0, WEEK_S) == 100.0  # the first quarantine left the window at its edge
    assert s.recovery_delay(0, WEEK_S - 1.0) == 200.0


def test_release_at_is_none_for_a_node_not_held_or_not_known() -> None:
    s = layer(fleet(), delay=100.0)
    s.tick(0.0, [drain("n01", 0.0, cause="gpu/n01/1")])
    s.tick(10.0, [undo("gpu/n01/1", 10.0)])
    assert s.release_at("node/n01") == 110.0
    assert s.release_at("node/n00") is None
    assert s.release_at("node/ghost") is None


def test_an_unknown_target_takes_no_node_out_and_a_job_takes_its_nodes() -> None:
    jobs = (JobRecord("train", JobClass.SYNC_TRAINING, ("n02", "n03", "gone"), 0.0, 1e7),)
    s = layer(build_topology(small_inventory(nodes=8, nodes_per_rack=4), jobs))
    assert s.nodes_of("node/ghost").tolist() == []
    assert s.nodes_of("job/train").tolist() == [2, 3]
    assert s.nodes_of("node/n05").tolist() == [5]


def test_refused_records_carry_the_decisions_epoch_and_time_and_no_attempt() -> None:
    s = layer(fleet(), max_nodes=0)
    d = DecisionRecord(10.0, "node/n00", "drain_node", "act", "hot", "quarantine", epoch=7, cause="gpu/n00/1")
    (refused,) = s.tick(12.0, [d]).records
    assert (refused.ts, refused.epoch, refused.decided_at, refused.attempt) == (12.0, 7, 10.0, 0)
    assert refused.actuator == SAFETY


def answer(
    decided_at: float, status: ActionStatus, kind: str = "drain_node", actuator: str = "slurm"
) -> ActionResultRecord:
    return ActionResultRecord(
        decided_at + 1.0, kind, "node/n00", actuator, status.value, "", 0, decided_at, 1
    )


def test_a_quarantine_the_cluster_refused_or_gave_up_on_leaves_the_ledger() -> None:
    for status in (ActionStatus.REFUSED, ActionStatus.GIVEN_UP):
        s = layer(fleet(), max_nodes=2)
        s.tick(100.0, [drain("n00", 100.0), drain("n08", 100.0)])
        # Answers that do not undo it: the safety layer's own, another kind, another decision, a retry.
        s.settle(
            [
                answer(100.0, status, actuator=SAFETY),
                answer(100.0, status, kind="restrict_admission"),
                answer(99.0, status),
                answer(100.0, ActionStatus.FAILED),
            ]
        )
        assert s.quarantined() == ["node/n00", "node/n08"]
        s.tick(150.0, [drain("n16", 150.0)])  # the budget is full: queued
        s.settle([answer(50.0, ActionStatus.DONE), answer(100.0, status)])  # the last one is
        assert s.quarantined() == ["node/n08"]
        assert kinds(s.tick(200.0, []).actions) == [("drain_node", "node/n16")]
        # Only n00 left the ledger: n08 and n16 fill the budget of 2.
        assert s.tick(210.0, [drain("n24", 210.0)]).actions == ()


def test_a_restarts_journal_is_read_in_time_order_and_one_decision_is_one_quarantine() -> None:
    journal = [
        # One drain decided at 900, answered by two actuators at different times: one quarantine.
        ActionResultRecord(1_000.0, "drain_node", "node/n08", "slurm", "done", "", 0, 900.0, 1),
        ActionResultRecord(1_003.0, "drain_node", "node/n08", "kubernetes", "done", "", 0, 900.0, 1),
        # An older journal without decision times: the answer's own time stands in.
        ActionResultRecord(2_000.0, "drain_node", "node/n00", "slurm", "done", "", 0),
        ActionResultRecord(500.0, "drain_node", "node/n00", "slurm", "done", "", 0),
    ]
    s = layer(fleet(), delay=100.0)
    assert s.restore(journal, 5_000.0) == ["node/n08", "node/n00"]  # by the time of the last answer
    assert s.recovery_delay(8, 5_000.0) == 100.0  # drained once, however many actuators answered
    assert s.recovery_delay(0, 5_000.0) == 200.0  # drained twice (at 500 and 2,000)
    released = s.tick(5_100.0, []).actions
    assert kinds(released) == [("resume_node", "node/n08")]
    assert released[0].reason == "healthy since 5000; leaves quarantine (drain_node at 1003)"


def test_a_restored_quarantine_is_the_journaled_decision_so_its_refusal_settles_it() -> None:
    s = layer(fleet())
    s.restore([result(1_000.0, "drain_node", "n00", ActionStatus.DONE)], 2_000.0)
    s.settle([ActionResultRecord(2_100.0, "drain_node", "node/n00", "slurm", "given_up", "", 0, 1_000.0, 5)])
    assert s.quarantined() == []


def act(node: str, ts: float, cause: str, kind: str = "checkpoint_now", epoch: int = 0) -> DecisionRecord:
    return DecisionRecord(ts, f"node/{node}", kind, "act", "slow", "degraded", epoch=epoch, cause=cause)


def test_one_tick_carries_every_kind_of_decision_in_order() -> None:
    """An undo, a plain action, a drain of a held node, a drain merging into a queued one and a new
    drain, all in one tick: each is handled and none stops the ones after it."""
    s = layer(fleet(), max_nodes=2)
    s.tick(0.0, [drain("n00", 0.0, cause="gpu/n00/1"), drain("n08", 0.0, cause="gpu/n08/1")])
    s.tick(1.0, [drain("n16", 1.0, cause="gpu/n16/1")])  # queued: the budget is full
    out = s.tick(
        2.0,
        [
            undo("gpu/n24/1", 2.0),  # nothing held for it: passes
            act("n01", 2.0, cause="gpu/n01/1"),
            drain("n00", 2.0, cause="gpu/n00/2"),  # already quarantined
            drain("n16", 2.0, cause="gpu/n16/2"),  # merges into the queued drain
            drain("n24", 2.0, cause="gpu/n24/2"),  # refused and queued
        ],
    )
    assert kinds(out.actions) == [("restore_admission", "gpu/n24/1"), ("checkpoint_now", "node/n01")]
    already = by_status(out.records, ActionStatus.ALREADY)
    assert [(r.ts, r.target, r.detail) for r in already] == [
        (2.0, "node/n00", "node/n00 already quarantined")
    ]
    assert [r.target for r in by_status(out.records, ActionStatus.REFUSED)] == ["node/n24"]
    assert [a.target for a in s.queued()] == ["node/n16", "node/n24"]


def test_a_plain_action_for_another_cause_does_not_cancel_a_pending_release() -> None:
    s = layer(fleet(), delay=100.0)
    s.tick(0.0, [drain("n00", 0.0, cause="gpu/n00/1")])
    s.tick(10.0, [undo("gpu/n00/1", 10.0)])
    s.tick(20.0, [act("n00", 20.0, cause="gpu/n00/5")])
    assert s.release_at("node/n00") == 110.0
    # The quarantine's own cause unwell again does cancel it, and says so at that tick.
    out = s.tick(30.0, [act("n00", 30.0, cause="gpu/n00/1")])
    (cancelled,) = by_status(out.records, ActionStatus.CANCELLED)
    assert (cancelled.ts, cancelled.kind) == (30.0, "restore_admission")
    assert cancelled.detail == "gpu/n00/1 degraded again: stays quarantined"
    assert s.release_at("node/n00") is None


def test_a_release_is_healthy_carries_the_latest_epoch_and_says_what_it_ends() -> None:
    s = layer(fleet(), delay=100.0)
    s.tick(0.0, [act("n08", 0.0, cause="gpu/n08/1", kind="drain_node", epoch=3)])
    s.tick(10.0, [act("n01", 10.0, cause="x", epoch=5)])  # a later leader's epoch
    s.tick(20.0, [undo("gpu/n08/1", 20.0)])
    (release, _) = s.tick(120.0, []).actions
    assert (release.kind, release.target, release.state, release.epoch) == (
        "resume_node",
        "node/n08",
        "healthy",
        5,
    )
    assert release.reason == "healthy since 20; leaves quarantine (drain_node at 0)"
    assert release.decided_at == 120.0


def test_a_node_never_quarantined_needs_the_base_delay() -> None:
    s = layer(fleet(), delay=100.0)
    assert s.recovery_delay(5, 0.0) == 100.0


def test_a_rack_target_takes_its_nodes_out() -> None:
    s = layer(fleet(nodes=16, per_rack=4))
    assert s.nodes_of("rack/r1").tolist() == [4, 5, 6, 7]


def test_only_entities_turning_unwell_from_calm_feed_the_storm_brake() -> None:
    """48 entities over every CDU, rack and leaf: a storm when they leave healthy, nothing when they
    only move from degraded to quarantine (they were counted when they left healthy)."""
    spread = [f"gpu/n{i:02d}/{g}" for i in range(0, 32, 2) for g in range(3)]

    def moved(entity: str, old: str, new: str) -> TransitionRecord:
        return TransitionRecord(0.0, entity, old, new, 0.5, 0.1, 1.0, "hot")

    worse = layer(fleet(nodes=32, per_rack=4), storm=True)
    assert not worse.tick(0.0, [], [moved(e, "degraded", "quarantine") for e in spread]).braked
    fresh = layer(fleet(nodes=32, per_rack=4), storm=True)
    out = fresh.tick(0.0, [], [moved(e, "healthy", "degraded") for e in spread])
    assert out.braked is True and out.brake_reason.startswith("storm brake ON: 48 entities")
    assert out.notices[0].ts == 0.0
    # Under the brake every drain of the tick is advised, none taken.
    more = fresh.tick(10.0, [drain("n00", 10.0), drain("n08", 10.0)])
    assert more.braked and kinds(more.actions) == [("drain_node", "node/n00"), ("drain_node", "node/n08")]
    assert fresh.quarantined() == []


def second_quarantine() -> SafetyLayer:
    """n00 drained at 0, released at 200, drained again at 300: a repeat offender (delay 200 s)."""
    s = layer(fleet(), delay=100.0)
    s.tick(0.0, [drain("n00", 0.0, cause="gpu/n00/1")])
    s.tick(10.0, [undo("gpu/n00/1", 10.0)])
    s.tick(200.0, [])  # released
    s.tick(300.0, [drain("n00", 300.0, cause="gpu/n00/1")])
    return s


def test_a_node_vouched_repaired_on_its_first_quarantine_leaves_as_soon_as_its_cause_is_well() -> None:
    s = layer(fleet(), delay=100.0)
    s.tick(0.0, [drain("n00", 0.0, cause="gpu/n00/1")])
    s.vouch(s.nodes_of("node/n00"), 50.0)
    out = s.tick(50.0, [undo("gpu/n00/1", 50.0)])
    assert kinds(out.actions)[:2] == [("resume_node", "node/n00"), ("restore_admission", "gpu/n00/1")]
    (held,) = by_status(out.records, ActionStatus.HELD)
    assert held.detail.endswith("(repaired, first quarantine in the window: no delay)")


def test_a_vouch_after_the_undo_cuts_the_wait_short() -> None:
    s = layer(fleet(), delay=100.0)
    s.tick(0.0, [drain("n00", 0.0, cause="gpu/n00/1")])
    s.tick(10.0, [undo("gpu/n00/1", 10.0)])
    assert s.release_at("node/n00") == 110.0
    s.vouch(s.nodes_of("node/n00"), 30.0)
    assert s.release_at("node/n00") == 30.0
    assert kinds(s.tick(30.0, []).actions)[0] == ("resume_node", "node/n00")


def test_a_repeat_offender_vouched_repaired_still_waits_its_doubled_delay() -> None:
    s = second_quarantine()
    s.vouch(s.nodes_of("node/n00"), 400.0)
    out = s.tick(400.0, [undo("gpu/n00/1", 400.0)])
    assert out.actions == () and s.release_at("node/n00") == 600.0
    (held,) = by_status(out.records, ActionStatus.HELD)
    assert held.detail.endswith("(repaired, quarantine 2 in the window: delay 200 s)")


def test_a_relapse_withdraws_the_vouch() -> None:
    s = layer(fleet(), delay=100.0)
    s.tick(0.0, [drain("n00", 0.0, cause="gpu/n00/1")])
    s.vouch(s.nodes_of("node/n00"), 20.0)
    s.tick(30.0, [drain("n00", 30.0, cause="gpu/n00/1")])  # unwell again after the repair
    out = s.tick(40.0, [undo("gpu/n00/1", 40.0)])
    assert out.actions == () and s.release_at("node/n00") == 140.0


def test_a_vouch_leaves_a_node_with_another_unwell_cause_held() -> None:
    s = layer(fleet(), delay=100.0)
    s.tick(0.0, [drain("n00", 0.0, cause="gpu/n00/1")])
    s.tick(1.0, [drain("n00", 1.0, cause="gpu/n00/2")])
    s.vouch(s.nodes_of("node/n00"), 20.0)
    out = s.tick(20.0, [undo("gpu/n00/1", 20.0)])
    assert out.actions == () and s.release_at("node/n00") is None


def test_a_vouch_after_the_undo_leaves_a_repeat_offender_its_delay() -> None:
    s = second_quarantine()
    s.tick(310.0, [undo("gpu/n00/1", 310.0)])
    s.vouch(s.nodes_of("node/n00"), 320.0)
    assert s.release_at("node/n00") == 510.0
