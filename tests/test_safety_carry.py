"""The safety ledger carried onto a new inventory (``SafetyLayer.carry_over``) at its edges: the
node at index 0, a queued drain, a node whose hardware changed under its name, many nodes leaving,
failed flags and joiners, the storm window.

Written from the mutants mutmut found surviving there (docs/testing.md); tests/test_world.py has
the main cases.
"""

from __future__ import annotations

import numpy as np

from seamguard.control.budgets import BudgetConfig
from seamguard.control.safety import SAFETY, SafetyLayer
from seamguard.control.safety_config import RecoveryConfig, SafetyConfig
from seamguard.control.storm import StormBrake, StormConfig
from seamguard.journal.records import DecisionRecord, TransitionRecord
from seamguard.model.inventory import Inventory, NodeRecord
from seamguard.model.topology import Topology, build_topology
from seamguard.model.world import world_change
from tests.test_safety import OPEN, kinds

DELAY = 600.0


def node(name: str, gpus: int = 4) -> NodeRecord:
    return NodeRecord(node=name, rack=f"r{name[-1]}", cdu="c0", leaf="l0", gpus=gpus)


def topo(*nodes: NodeRecord) -> Topology:
    return build_topology(Inventory(nodes))


# a0 is node index 0 in both worlds; a1 leaves; a3 comes back with 8 GPUs (other hardware); b0 joins.
OLD = topo(node("a0"), node("a1"), node("a2"), node("a3"))
NEW = topo(node("a0"), node("a2"), node("a3", gpus=8), node("b0"))


def layer(world: Topology, **budget: object) -> SafetyLayer:
    cfg = BudgetConfig.model_validate({**OPEN, **budget})
    return SafetyLayer(world, SafetyConfig(budgets=cfg, recovery=RecoveryConfig(healthy_for_s=DELAY)))


def drain(name: str, ts: float) -> DecisionRecord:
    return DecisionRecord(ts, f"node/{name}", "drain_node", "act", "hot", "quarantine", cause=f"gpu/{name}/0")


def test_the_node_at_index_0_stays_held_with_its_history_and_no_release_of_its_own() -> None:
    s = layer(OLD)
    s.tick(100.0, [drain("a0", 100.0), drain("a1", 100.0)])
    before = s.recovery_delay(0, 200.0)
    notices = s.carry_over(world_change(OLD, NEW), 200.0)
    assert s.quarantined() == ["node/a0"]
    assert [n.message.split(": ")[-1] for n in notices] == ["node/a1"]  # a0 is not reported gone
    assert s.recovery_delay(0, 200.0) == before == DELAY
    assert s.release_at("node/a0") is None  # its cause is still unwell: nothing was reset
    assert s.budgets.quarantined.tolist() == [True, False, False, False]


def test_a_queued_drain_follows_its_node_to_its_new_index() -> None:
    s = layer(OLD, max_nodes=1)
    s.tick(100.0, [drain("a0", 100.0), drain("a2", 100.0)])  # a2 (index 2, then 1) waits for the budget
    s.carry_over(world_change(OLD, NEW), 200.0)
    assert [a.target for a in s.queued()] == ["node/a2"]
    s.tick(
        300.0,
        [DecisionRecord(300.0, "gpu/a0/0", "restore_admission", "act", "ok", "healthy", cause="gpu/a0/0")],
    )
    out = s.tick(300.0 + DELAY, [])
    assert kinds(out.actions)[0] == ("resume_node", "node/a0") and ("drain_node", "node/a2") in kinds(
        out.actions
    )
    assert s.budgets.quarantined.tolist() == [False, True, False, False]


def test_a_repeat_offender_at_index_0_with_new_hardware_keeps_its_history() -> None:
    new = topo(node("a0", gpus=8), node("a1"))
    s = layer(topo(node("a0"), node("a1")))
    s.tick(0.0, [drain("a0", 0.0)])
    s.tick(
        10.0,
        [DecisionRecord(10.0, "gpu/a0/0", "restore_admission", "act", "ok", "healthy", cause="gpu/a0/0")],
    )
    assert kinds(s.tick(10.0 + DELAY, []).actions)[0] == ("resume_node", "node/a0")
    s.tick(1_000.0, [drain("a0", 1_000.0)])  # quarantined a second time
    s.carry_over(world_change(topo(node("a0"), node("a1")), new), 2_000.0)
    assert s.recovery_delay(0, 2_000.0) == 2 * DELAY
    assert s.release_at("node/a0") == 2_000.0 + 2 * DELAY  # held as on a restart, as a repeat offender


def test_a_held_node_with_new_hardware_is_held_as_on_a_restart() -> None:
    s = layer(OLD)
    s.tick(100.0, [drain("a3", 100.0), drain("a2", 100.0)])
    s.carry_over(world_change(OLD, NEW), 200.0)
    assert s.release_at("node/a3") == 200.0 + DELAY  # healthy from the change, released after the delay
    assert s.release_at("node/a2") is None  # same hardware: still waiting for its own cause
    out = s.tick(200.0 + DELAY, [])
    assert kinds(out.actions) == [("resume_node", "node/a3")]
    assert out.actions[0].reason.startswith("healthy since 200; leaves quarantine (drain_node at 100)")


def test_many_nodes_leaving_are_named_ten_at_a_time_in_one_warning() -> None:
    gone = [node(f"x{i:02d}") for i in range(11)]
    old = topo(node("a0"), *gone)
    s = layer(old)
    s.tick(100.0, [drain(n.node, 100.0) for n in gone])
    (notice,) = s.carry_over(world_change(old, topo(node("a0"))), 200.0)
    shown = ", ".join(f"node/x{i:02d}" for i in range(10))
    assert (notice.ts, notice.source, notice.level) == (200.0, SAFETY, "warning")
    assert notice.message == (
        f"11 quarantined node(s) left the inventory, hold dropped (no resume sent): {shown} and 1 more"
    )
    ten = [node(f"x{i:02d}") for i in range(10)]
    s = layer(topo(node("a0"), *ten))
    s.tick(100.0, [drain(n.node, 100.0) for n in ten])
    (notice,) = s.carry_over(world_change(topo(node("a0"), *ten), topo(node("a0"))), 200.0)
    assert notice.message.endswith(", ".join(f"node/x{i:02d}" for i in range(10)))


def test_failed_flags_follow_their_nodes_and_joiners_start_in_service() -> None:
    s = layer(OLD)
    s.tick(100.0, [], [TransitionRecord(100.0, "node/a2", "healthy", "failed", 1.0, 0.0, 1.0, "down")])
    s.carry_over(world_change(OLD, NEW), 200.0)
    assert s.budgets.failed.tolist() == [False, True, False, False]
    assert s.budgets.quarantined.tolist() == [False, False, False, False]


def test_the_storm_window_keeps_the_entity_at_global_index_0() -> None:
    old, new = topo(node("a0"), node("a1")), topo(node("a0"), node("a1"), node("b0"))
    b = StormBrake(old, StormConfig(max_new=5, max_domains=1))
    b.observe(0.0, np.array([0, old.lookup("node/a1")], dtype=np.int64))
    assert old.ids[0] == new.ids[0]
    b.carry_over(world_change(old, new))
    assert b.spread()[0] == 2
    assert b.observe(10.0, np.zeros(0, dtype=np.int64)) == [] and b.spread()[0] == 2  # times kept with them
