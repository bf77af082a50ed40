"""The one action vocabulary: every kind described, checked at config load, budgeted by the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from seamguard.actuators import haproxy, kubernetes, slurm
from seamguard.actuators.sections import WebhookConfig
from seamguard.config import config_from_mapping, load_config
from seamguard.control.safety_config import SafetyConfig
from seamguard.economics.valuation import Step
from seamguard.errors import InputError
from seamguard.journal.records import DecisionRecord
from seamguard.model.action_kinds import (
    KINDS,
    QUARANTINE_KINDS,
    RELEASE_KIND,
    UNDO_KINDS,
    ActionKind,
    kind_table_markdown,
)
from seamguard.model.actions import ActionStatus
from tests.test_safety import by_status, fleet, layer

ROOT = Path(__file__).resolve().parents[1]


def test_every_kind_has_one_row_and_the_docs_show_the_table() -> None:
    assert set(KINDS) == set(ActionKind)
    assert kind_table_markdown() in (ROOT / "docs" / "actions.md").read_text()


def test_the_table_derives_quarantines_undos_and_the_release() -> None:
    assert {
        "drain_node",
        "cordon_node",
        "island_domain",
        "disable_link",
        "isolate_switch",
    } == QUARANTINE_KINDS
    assert {"restore_admission", "restore_route", "restore_checkpoint_target"} == UNDO_KINDS
    assert RELEASE_KIND == "resume_node"
    assert set(KINDS[RELEASE_KIND].undoes) == QUARANTINE_KINDS  # every quarantine has its release


def test_every_actuator_speaks_the_vocabulary() -> None:
    for kinds in (slurm.KINDS, kubernetes.KINDS, haproxy.KINDS):
        assert kinds <= {k.value for k in ActionKind}, kinds - {k.value for k in ActionKind}


def test_the_escalation_ladder_uses_kinds_the_safety_layer_budgets() -> None:
    """Its quarantine step was once ``quarantine_node``: no actuator took it and no budget counted it."""
    for step in (Step.REBALANCE, Step.CHECKPOINT_NOW, Step.REPLACE_RANK, Step.QUARANTINE):
        assert step.value in {k.value for k in ActionKind}
    assert Step.QUARANTINE.value in QUARANTINE_KINDS


def test_a_config_naming_an_unknown_kind_is_refused_with_its_key() -> None:
    with pytest.raises(InputError) as err:
        config_from_mapping({"actions": {"gpu": {"degraded": ["restrict_admision"]}}})
    assert "actions.gpu.degraded.0" in str(err.value) and "restrict_admission" in str(err.value)
    assert load_config().actions_for  # the shipped table loads


@pytest.mark.parametrize("key", ["quarantine_kinds", "undo_kinds", "release_kind"])
def test_the_removed_safety_keys_say_the_table_decides(key: str) -> None:
    with pytest.raises(ValueError, match=f"{key} removed.*action-kind table"):
        SafetyConfig.model_validate({key: ["drain_node"]})


def test_a_webhook_subscribing_to_an_unknown_kind_is_refused() -> None:
    assert WebhookConfig(url="http://127.0.0.1:9/x", kinds=("*", "drain_node")).kinds == ("*", "drain_node")
    with pytest.raises(ValueError, match=r"unknown action kind.*'drian_node'"):
        WebhookConfig(url="http://127.0.0.1:9/x", kinds=("drian_node",))


@pytest.mark.parametrize(("kind", "target"), [("disable_link", "link/n00"), ("isolate_switch", "switch/l0")])
def test_kinds_that_take_capacity_are_budgeted_whoever_proposes_them(kind: str, target: str) -> None:
    """Before the table, taking a link or a leaf down passed every budget unseen."""
    topo = fleet()
    assert topo.lookup(target) is not None, target
    s = layer(topo, max_nodes=0, domain_floor=0)
    out = s.tick(100.0, [DecisionRecord(100.0, target, kind, "advise", "why", "quarantine", cause=target)])
    assert out.actions == ()
    assert [r.target for r in by_status(out.records, ActionStatus.REFUSED)] == [target]
