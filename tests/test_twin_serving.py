"""Disaggregated serving in the twin (``twin.serving``): under a degraded inter-pool path the
seamguard router, re-pairing prefill and decode away from it, keeps goodput and P95 TTFT near the
healthy run, where the path-blind baseline (least outstanding requests, outlier ejection) loses."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from seamguard.cli import app
from seamguard.twin.faults import FAULT_KINDS
from seamguard.twin.scenario import load_scenario
from seamguard.twin.serving import ServingModel
from seamguard.twin.sim import Twin
from seamguard.twin.world import build_world

# Short: the fault from 0.25 h for 0.75 h of a 1.25 h run, at the twin's 30 s tick.
SHORT: dict[str, Any] = {
    "duration_h": 1.25,
    "faults": [{"kind": "kv_path_degraded", "target": "switch/leaf01", "onset_h": 0.25, "ramp_h": 0.1, "duration_h": 0.75}],
}  # fmt: skip


def _run(router: str, *, fault: bool = True) -> dict[str, float]:
    over = {**SHORT, "serving": {"router": router}}
    if not fault:
        over["faults"] = []
    twin = Twin(build_world(load_scenario("disagg-serving-path", over), 0), "binary")
    twin.run()
    assert isinstance(twin.serving, ServingModel)
    onset = twin.world.start + 0.25 * 3600.0
    return twin.serving.tally.window(onset, onset + 0.75 * 3600.0)


@pytest.fixture(scope="module")
def runs() -> dict[str, dict[str, float]]:
    return {
        "healthy": _run("seamguard", fault=False),
        "baseline": _run("baseline"),
        "seamguard": _run("seamguard"),
    }


def test_seamguard_beats_the_baseline_under_a_degraded_path_and_stays_near_healthy(
    runs: dict[str, dict[str, float]],
) -> None:
    healthy, base, sg = runs["healthy"], runs["baseline"], runs["seamguard"]
    assert healthy["goodput"] > 0.97
    assert sg["goodput"] >= 0.95 * healthy["goodput"]
    assert sg["p95_ttft_ms"] <= 1.2 * healthy["p95_ttft_ms"]
    assert base["goodput"] < sg["goodput"] - 0.05  # the blind router pairs half its requests across it
    assert base["p95_ttft_ms"] > 2.0 * healthy["p95_ttft_ms"]
    assert base["failed_transfer_share"] > 0.03 > sg["failed_transfer_share"]


def test_the_fault_kind_touches_serving_alone() -> None:
    spec = FAULT_KINDS["kv_path_degraded"]
    assert spec.serving and spec.facility and spec.target.value == "switch"


def test_without_a_serving_section_the_twin_has_no_serving_model() -> None:
    sc = load_scenario("mixed-fleet", {"duration_h": 0.05, "faults": []})
    assert sc.serving is None
    assert Twin(build_world(sc, 0), "binary").serving is None


def test_transfers_within_a_leaf_do_not_cross_the_degraded_uplinks() -> None:
    sc = load_scenario("disagg-serving-path", SHORT)
    twin = Twin(build_world(sc, 0), "binary")
    model = twin.serving
    assert model is not None
    from seamguard.twin.effects import apply_faults

    fx = apply_faults(
        twin._fresh_effects(), twin.world.faults, twin.world.faults[0].onset + 1800.0, sc.physics
    )
    node_p, node_d = np.array([0, 8]), np.array([3, 11])  # leaf00 and leaf01, each side
    mean, sd, fail = model.paths(twin, fx, node_p, node_d)
    assert fail[0, 0] == fail[1, 1] == 0.0 and fail[0, 1] > 0.1 and fail[1, 0] > 0.1
    assert mean[0, 1] > 3 * mean[0, 0] and sd[0, 1] > 50.0


def test_a_serving_section_names_jobs_of_the_right_class() -> None:
    from seamguard.errors import InputError

    with pytest.raises(InputError, match="online_decode"):
        load_scenario("disagg-serving-path", {"serving": {"decode": ["prefill-a"], "prefill": ["prefill-b"]}})


def test_simulate_prints_and_writes_each_policys_serving_figures(tmp_path: Path) -> None:
    """``seamguard simulate`` on a serving scenario: a table per policy (its router) and the same
    figures under ``serving`` in summary.json, whole run and while the path's fault was on."""
    text = (
        resources.files("seamguard.data")
        .joinpath("scenarios")
        .joinpath("disagg-serving-path.yaml")
        .read_text("utf-8")
    )
    data = {**yaml.safe_load(text), **SHORT}
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["simulate", "--scenario", str(path), "--policies", "binary,seamguard",
                                   "--seeds", "1", "--workers", "1", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "serving (disaggregated prefill/decode)" in res.output and "P95 TTFT (fault)" in res.output
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    base, sg = (summary["policies"][p]["serving"] for p in ("binary", "seamguard"))
    assert base["goodput_fault"] < sg["goodput_fault"] - 0.05  # the path-blind router pairs across it
    assert base["p95_ttft_ms_fault"] > sg["p95_ttft_ms_fault"]
    assert 0.0 < sg["goodput"] <= 1.0 and sg["offered_requests"] > 0


def test_without_a_serving_section_the_summary_says_null(tmp_path: Path) -> None:
    from seamguard.twin.summary import summarize

    sc = load_scenario("mixed-fleet", {"duration_h": 0.05, "faults": []})
    result = Twin(build_world(sc, 0), "binary").run()
    assert summarize(sc, [result])["policies"]["binary"]["serving"] is None
