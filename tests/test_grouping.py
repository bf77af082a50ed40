"""Transitions and actions grouped by cause for the terminal (``seamguard run``, the demo): one
CDU event is one line, not one per GPU."""

from __future__ import annotations

import numpy as np

from seamguard.diagnose.grouping import group_actions, group_transitions, upstream_cause
from seamguard.journal.records import ActionResultRecord, EvidenceItem, TransitionRecord
from seamguard.model.states import State
from seamguard.model.topology import build_topology
from tests.conftest import small_inventory, small_jobs

LEVEL = EvidenceItem("level", "gpu.temp_c", 0.5, "gpu.temp_c at 86 °C, above its soft limit of 83 °C")
PEER = EvidenceItem("peer", "gpu.temp_c", 0.5, "gpu.temp_c 15 °C above its job's peers")


def t(entity: str, ev: EvidenceItem | None, to: str = "degraded") -> TransitionRecord:
    return TransitionRecord(
        10.0,
        entity,
        "healthy",
        to,
        0.4,
        0.1,
        1.0,
        ev.text if ev else "no fresh telemetry",
        (ev,) if ev else (),
        0,
    )


def test_the_gpus_under_an_unwell_cdu_are_one_line_whatever_fired_first() -> None:
    topo = build_topology(small_inventory(), small_jobs())
    states = np.zeros(topo.n_entities, dtype=np.int64)
    states[topo.index["cdu/c1"]] = int(State.QUARANTINE)
    cause = upstream_cause(topo, states)
    under = [
        t("gpu/n04/0", LEVEL),
        t("gpu/n05/1", PEER),
        t("gpu/n07/3", LEVEL),
        t("gpu/n06/2", PEER),
        t("gpu/n05/0", LEVEL),
    ]
    elsewhere = [t("gpu/n01/0", LEVEL), t("gpu/n02/0", PEER)]
    groups = group_transitions([*under, *elsewhere], cause)
    assert [(g.cause, len(g.entities)) for g in groups] == [
        ("under cdu/c1 (quarantine)", 5),
        ("level on gpu.temp_c", 1),
        ("peer on gpu.temp_c", 1),
    ]
    line = groups[0].line()
    assert line.startswith(
        "5 × gpu healthy -> degraded (under cdu/c1 (quarantine)): gpu/n04/0, gpu/n05/1, gpu/n07/3, gpu/n06/2 and 1 more"
    )
    assert "e.g. gpu/n04/0: gpu.temp_c at 86 °C" in line
    assert (
        groups[1].line()
        == "gpu/n01/0 healthy -> degraded: gpu.temp_c at 86 °C, above its soft limit of 83 °C"
    )
    assert cause("cdu/c1") is None and cause("job/train") is None


def test_without_a_map_the_same_change_for_the_same_reason_is_one_line() -> None:
    groups = group_transitions([t("gpu/n04/0", LEVEL), t("gpu/n05/1", LEVEL), t("gpu/n05/2", LEVEL, "quarantine"),
                                t("link/n05", None, "unknown"), t("gpu/n03/0", None, "unknown")])  # fmt: skip
    assert [(g.from_state, g.to_state, g.cause, g.entities) for g in groups] == [
        ("healthy", "degraded", "level on gpu.temp_c", ("gpu/n04/0", "gpu/n05/1")),
        ("healthy", "quarantine", "level on gpu.temp_c", ("gpu/n05/2",)),
        ("healthy", "unknown", "no fresh telemetry", ("link/n05", "gpu/n03/0")),
    ]
    assert groups[2].line().startswith("2 × gpu/link healthy -> unknown (no fresh telemetry)")


def test_actions_of_one_kind_and_outcome_are_one_line() -> None:
    r = [
        ActionResultRecord(1.0, "drain_node", f"node/n0{i}", "slurm", "done", "drained", 0, 1.0, 1)
        for i in range(6)
    ]
    r.append(ActionResultRecord(1.0, "drain_node", "node/n07", "slurm", "refused", "reserved", 0, 1.0, 1))
    [done, refused] = group_actions(r)
    assert (
        done.line()
        == "drain_node node/n00, node/n01, node/n02, node/n03 and 2 more via slurm: done (e.g. drained)"
    )
    assert refused.line() == "drain_node node/n07 via slurm: refused reserved"
