"""The twin report's state timeline marks what each policy carried out (a reader of the states
alone concluded seamguard did nothing: its islanding and job moves never showed)."""

from __future__ import annotations

from pathlib import Path

import yaml

from seamguard.twin.report import plot_states, timeline_marks
from seamguard.twin.scenario import load_scenario
from seamguard.twin.sim import Twin
from seamguard.twin.world import build_world
from tests.test_decision_path import SCENARIO


def test_the_state_timeline_marks_the_actions_carried_out(tmp_path: Path) -> None:
    path = tmp_path / "one-path.yaml"
    path.write_text(yaml.safe_dump(SCENARIO), encoding="utf-8")
    runs = [
        Twin(build_world(load_scenario(str(path)), 0), policy).run() for policy in ("binary", "seamguard")
    ]
    binary, seamguard = runs
    assert any(kind == "drain_node" for _, kind, _ in seamguard.acted)
    marks = timeline_marks(seamguard)
    kinds = {k for _, _, k in marks}
    assert "drain_node" in kinds  # the hot GPU's node, on its own row
    rows = {y for _, y, k in marks if k == "drain_node"}
    assert rows and all(0 < y < len(seamguard.focus_nodes) for y in rows)
    assert all(0.0 <= h <= (seamguard.end - seamguard.start) / 3600.0 for h, _, _ in marks)
    # drains are marked for every policy (binary's from the fleet's drain records)
    binary_drains = [d for d in binary.drains if d.actor == "policy" and d.node in binary.focus_nodes]
    assert len([m for m in timeline_marks(binary) if m[2] == "drain_node"]) == len(binary_drains)
    plot_states(runs, tmp_path / "states.png")
    assert (tmp_path / "states.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
