"""A CDU losing its flow under a job with no spare node, run in the twin end to end: the GPUs climb
to their trip point (97 °C) within minutes. Projected (control/thermal_trip.py), the tolerated
CDU is islanded before the first trip and the job waits for the water, not for repairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from seamguard.twin.scenario import load_scenario
from seamguard.twin.sim import Twin
from seamguard.twin.world import build_world

SCENARIO: dict[str, Any] = {
    "name": "cdu-trip",
    "description": "a CDU loses its flow for 35 minutes under a job that fills the cluster",
    "duration_h": 3,
    "cluster": {"cdus": 1, "racks_per_cdu": 1, "nodes_per_rack": 8, "gpus_per_node": 8, "storage": ["ckpt0"]},
    "jobs": [{"name": "train", "class": "sync_training", "nodes": 8, "checkpoint_gb": 400}],
    "faults": [{"kind": "cdu_flow_loss", "target": "cdu/cdu0", "onset_h": 1.0, "ramp_h": 0.2, "severity": 0.75,
                "duration_h": 0.4}],
}  # fmt: skip


def run(tmp_path: Path, engine: dict[str, Any]) -> tuple[float, int, dict[str, int]]:
    """(ETTR, GPUs dead at the end, the twin's verbs) under seamguard with ``engine`` overrides."""
    path = tmp_path / "cdu-trip.yaml"
    path.write_text(
        yaml.safe_dump({**SCENARIO, "policies": {"seamguard": {"config": engine}}}), encoding="utf-8"
    )
    twin = Twin(build_world(load_scenario(str(path)), 0), "seamguard")
    result = twin.run()
    return result.ettr, int(twin.plant.gpu_dead.sum()), dict(result.actions)


@pytest.mark.slow
def test_a_projected_trip_islands_the_cdu_before_any_gpu_dies(tmp_path: Path) -> None:
    ettr, dead, verbs = run(tmp_path, {})
    assert dead == 0 and verbs.get("island_stop", 0) >= 1
    # Projecting to a shutdown no climb reaches within the hour is projecting nothing: the CDU
    # stays tolerated, two GPUs trip and the job waits out their repair to the end of the run.
    blind_ettr, blind_dead, blind_verbs = run(tmp_path, {"hazard": {"thermal_trip": {"shutdown_c": 1000.0}}})
    assert blind_dead >= 1 and "island_stop" not in blind_verbs
    assert ettr > blind_ettr + 0.3
