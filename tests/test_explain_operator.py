"""``seamguard explain`` for an operator: the cause chain (a GPU under an unwell CDU says so, and
the CDU says what below it turned unwell), one row per decision however often it was decided again
and one row for one action on many targets, what became of each, and the exact next step for a
person, including NVIDIA's action for an XID.

The journal is written by hand here, so that each rule is tested on records whose right answer is
known; tests/test_cli.py runs the same on the demo's journal end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from seamguard.config import load_config
from seamguard.diagnose.domains import META_KEY, Domains, domains_json
from seamguard.diagnose.explain import explain
from seamguard.journal.records import ActionResultRecord, DecisionRecord, EvidenceItem, TransitionRecord
from seamguard.journal.sqlite import SqliteJournal
from seamguard.model.action_kinds import ActionKind
from seamguard.model.runbook import BY_HAND, by_hand
from seamguard.model.states import State
from seamguard.model.topology import build_topology
from tests.conftest import small_inventory, small_jobs

CFG = load_config(None)
HOT = EvidenceItem("level", "gpu.temp_c", 0.6, "gpu.temp_c at 89.3 °C, above its soft limit of 83 °C")
XID = EvidenceItem(
    "xid",
    "gpu.xid",
    1.0,
    "XID 79, 2 min ago (GPU has fallen off the bus; NVIDIA RESTART_BM): drain and reboot the node",
)


def t(
    ts: float,
    entity: str,
    to: str,
    reason: str = "hot",
    frm: str = "healthy",
    ev: tuple[EvidenceItem, ...] = (),
) -> TransitionRecord:
    return TransitionRecord(ts, entity, frm, to, 0.8, 0.1, 1.0, reason, ev, 0)


def d(ts: float, entity: str, action: str, cause: str, mode: str = "advise") -> DecisionRecord:
    return DecisionRecord(ts, entity, action, mode, "why", "quarantine", (), 0, cause)


@pytest.fixture
def journal(tmp_path: Path) -> SqliteJournal:
    """c1 (racks r2, r3: nodes n04-n07) loses flow at 100 and is quarantined; GPUs below it heat."""
    j = SqliteJournal(tmp_path / "j.sqlite")
    j.set_meta(META_KEY, domains_json(build_topology(small_inventory(), small_jobs())))
    j.append([t(100, "cdu/c1", "quarantine", "cdu.flow_lpm 40% below its fleet peers"),
              t(200, "gpu/n05/1", "degraded", ev=(HOT,)), t(260, "gpu/n05/1", "quarantine", frm="degraded", ev=(HOT,)),
              t(210, "gpu/n06/0", "quarantine", ev=(HOT,)), t(220, "gpu/n01/0", "degraded")],
             [d(260, "node/n05", "drain_node", "gpu/n05/1"), d(260, "node/n06", "drain_node", "gpu/n06/0"),
              d(262, "node/n05", "drain_node", "gpu/n05/1"), d(300, "node/n05", "drain_node", "gpu/n05/1")])  # fmt: skip
    return j


def test_a_gpu_under_an_unwell_cdu_names_it_and_what_to_do(journal: SqliteJournal) -> None:
    ex = explain(journal, CFG, "gpu/n05/1", at=400)
    assert [(u.entity, u.state) for u in ex.upstream] == [("cdu/c1", "quarantine")]
    assert ex.next_steps[0].startswith("the cause is upstream: cdu/c1 is quarantine")
    # its node's drain was decided three times: one row, counted, and said to be advice only
    [g] = ex.groups
    assert (g.first.action, g.count, g.targets) == ("drain_node", 3, ("node/n05",))
    assert g.outcome.startswith("advised only")
    assert any("scontrol update NodeName=n05 State=DRAIN" in s for s in ex.next_steps)


def test_a_gpu_on_a_healthy_cdu_has_no_upstream(journal: SqliteJournal) -> None:
    assert explain(journal, CFG, "gpu/n01/0", at=400).upstream == ()


def test_a_cdu_counts_what_turned_unwell_below_it(journal: SqliteJournal) -> None:
    ex = explain(journal, CFG, "cdu/c1", at=400)
    assert ex.below == {"quarantine": 2}  # n05/1 (degraded, then quarantine) and n06/0; n01 is not below
    before = explain(journal, CFG, "cdu/c1", at=205)
    assert before.below == {"degraded": 1}


def test_the_same_action_on_many_targets_at_once_is_one_row(tmp_path: Path) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as j:
        j.append([t(100, "cdu/c1", "quarantine")],
                 [d(100, f"node/n0{i}", "drain_node", "cdu/c1") for i in (4, 5, 6, 7)])  # fmt: skip
        ex = explain(j, CFG, "cdu/c1", at=200)
    [g] = ex.groups
    assert g.targets == ("node/n04", "node/n05", "node/n06", "node/n07")
    assert any("NodeName=n[04-07]" in s and "for n in n04 n05 n06 n07" in s for s in ex.next_steps)


def test_what_an_actuator_did_is_the_outcome_and_is_not_asked_again(journal: SqliteJournal) -> None:
    journal.append_actions(
        [ActionResultRecord(301, "drain_node", "node/n05", "slurm", "done", "drained", 0, 300.0, 1)]
    )
    ex = explain(journal, CFG, "gpu/n05/1", at=400)
    assert ex.groups[0].outcome == "done by slurm"
    assert not any("scontrol" in s for s in ex.next_steps)  # done: no step left for a person


def test_an_xid_gives_nvidias_action(tmp_path: Path) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as j:
        j.append([t(100, "gpu/n02/3", "failed", "XID 79", ev=(XID,))], [])
        ex = explain(j, CFG, "gpu/n02/3", at=200)
    assert ex.next_steps[0] == "XID 79, 2 min ago: drain and reboot the node (NVIDIA's XID catalog)"
    assert not ex.domains_known and ex.upstream == ()


def test_every_action_kind_has_a_step_for_a_person() -> None:
    assert set(BY_HAND) == set(ActionKind)
    for kind in ActionKind:
        for target in ("node/n07", "gpu/n07/3", "rack/r1", "job/train", "storage/ckpt0"):
            step = by_hand(kind.value, target)
            assert step and "{" not in step, (kind, target, step)
    assert by_hand("drain_node", "gpu/n07/3").startswith(
        "drain it: Slurm `scontrol update NodeName=n07 State=DRAIN"
    )
    assert "nvidia-smi -r -i 3" in by_hand("reset_gpu", "gpu/n07/3")
    assert "<each node of rack/r1" in by_hand("drain_node", "rack/r1")
    assert by_hand("no_such_kind", "node/n07") == ""


def test_the_domains_map_reads_back() -> None:
    topo = build_topology(small_inventory(), small_jobs())
    m = Domains(domains_json(topo))
    assert m.upstream("gpu/n05/2") == [
        "node/n05",
        "link/n05",
        "rack/r2",
        "cdu/c1",
        "switch/l1",
        "storage/ckpt0",
    ]
    assert m.nodes_below("cdu/c1") == ["n04", "n05", "n06", "n07"] and m.nodes_below("rack/nope") == []
    assert m.upstream("cdu/c1") == []


def test_a_node_is_as_unwell_as_its_worst_gpu_in_explain_too(journal: SqliteJournal) -> None:
    """explain node/… says the state the console and /v1/status show, and what it comes from."""
    ex = explain(journal, CFG, "node/n05", at=400)
    assert ex.state is State.HEALTHY  # the node itself: no transition of its own
    assert ex.rolled is State.QUARANTINE and ex.rolled_from == {"quarantine": 1}
    early = explain(journal, CFG, "node/n05", at=230)
    assert early.rolled is State.DEGRADED
    assert explain(journal, CFG, "gpu/n05/1", at=400).rolled is None
