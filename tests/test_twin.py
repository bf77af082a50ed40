"""The digital twin: determinism, honest accounting, what policies may see, the simulate contract."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from seamguard.cli import app
from seamguard.errors import InputError
from seamguard.twin.accounting import BUCKETS, LOST_BUCKETS
from seamguard.twin.campaign import parse_policies, run_campaign, seed_list
from seamguard.twin.results import RunResult
from seamguard.twin.scenario import Scenario, builtin_names, load_scenario
from seamguard.twin.sim import POLICIES, Twin
from seamguard.twin.summary import mean_ci95, summarize
from seamguard.twin.world import build_world

# A small cluster, three hours: a CDU losing flow under a synchronous job, plus a benign slow GPU.
# Its job restarts in 15 minutes (restore excluded): too slow for the slow GPU to pay for a swap.
RESTART_S = 900.0
SMALL: dict[str, Any] = {
    "name": "small-cascade",
    "description": "a CDU loses flow under a synchronous job",
    "duration_h": 3,
    "cluster": {"cdus": 2, "racks_per_cdu": 2, "nodes_per_rack": 4, "gpus_per_node": 8, "storage": ["ckpt0", "ckpt1"]},
    "jobs": [
        {"name": "train", "class": "sync_training", "nodes": 10, "checkpoint_gb": 400, "fallback_storage": "ckpt1", "restart_s": RESTART_S},
        {"name": "batch", "class": "async_batch_inference", "nodes": 2},
    ],
    "faults": [
        {"kind": "cdu_flow_loss", "target": "cdu/cdu0", "onset_h": 1.0, "ramp_h": 0.5, "severity": 0.5, "duration_h": 2},
        {"kind": "slow_gpu", "target": "gpu/n0003/2", "onset_h": 0.0},
    ],
}  # fmt: skip


def small(tmp_path: Path, **changes: Any) -> Path:
    import yaml

    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump({**SMALL, **changes}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    return load_scenario(str(small(tmp_path_factory.mktemp("sc"))))


@pytest.fixture(scope="module")
def runs(scenario: Scenario) -> list[RunResult]:
    return run_campaign(scenario, POLICIES, (0,))


def test_every_builtin_scenario_loads() -> None:
    for name in builtin_names():
        sc = load_scenario(name)
        assert sc.name == name and sc.jobs and sc.sources  # each says where its numbers come from


def test_same_seed_same_world_and_same_result(scenario: Scenario) -> None:
    a, b = build_world(scenario, 3), build_world(scenario, 3)
    assert [(f.kind, f.target, f.onset) for f in a.faults] == [(f.kind, f.target, f.onset) for f in b.faults]
    r1, r2 = Twin(a, "binary").run(), Twin(b, "binary").run()
    assert r1.bucket_totals() == r2.bucket_totals() and r1.drains == r2.drains
    other = Twin(build_world(scenario, 4), "binary").run()
    assert other.bucket_totals() != r1.bucket_totals()  # the seed matters


def test_buckets_sum_to_reserved_time(runs: list[RunResult]) -> None:
    for r in runs:
        for job in r.jobs:
            assert sum(job.buckets) == pytest.approx(job.reserved_gpu_s, rel=1e-6), (r.policy, job.name)
            assert all(b >= -1e-6 for b in job.buckets)
        assert 0.0 < r.ettr <= 1.0


def test_ettr_so_far_ends_at_the_run_ettr(runs: list[RunResult]) -> None:
    for r in runs:
        curve = r.timeline_ettr[np.isfinite(r.timeline_ettr)]
        assert curve.size > r.timeline_ettr.size // 2, r.policy
        assert ((curve >= 0) & (curve <= 1 + 1e-9)).all(), r.policy
        assert curve[-1] == pytest.approx(r.ettr, rel=1e-6), (
            r.policy
        )  # committed work over reserved, at the end


def test_the_cascade_costs_a_policy_that_ignores_it(runs: list[RunResult]) -> None:
    by = {r.policy: r for r in runs}
    slow = {p: r.bucket_totals()["slowdown"] for p, r in by.items()}
    assert slow["binary"] > 0  # hot GPUs throttle and the whole synchronous job waits for them
    # seamguard sees the cascade. With four spares for the CDU's eight job nodes it does not drain
    # them one by one (each drain restarts the job while the rest of the CDU still holds it back:
    # control/containment.py); it restricts admission, checkpoints, and the CDU's own valuation
    # decides (tolerate: no spares outside the CDU). Nor does it swap the benign slow GPU's rank:
    # in a three-hour run the swap's 15-minute restart cannot pay for itself in the time the job
    # has left (economics/harm.py; with a 2-minute restart it does: test_twin_checkpoints), so it
    # loses no more than binary, which sees nothing, to anything but its saves. Those its hazard
    # asks for: hot GPUs and a small fleet's prior (hazard.learn_outlier_share) save more often
    # than binary's timer, and in this run nothing fails, so they cost, but little.
    assert not [a for a in by["seamguard"].acted if a[1] == "replace_rank"]

    def share(r: RunResult, *buckets: str) -> float:
        totals = r.bucket_totals()
        return sum(totals[b] for b in buckets) / r.reserved_gpu_s

    def lost_but_saves(r: RunResult) -> float:
        return 1.0 - share(r, "productive", "checkpoint_save")

    assert lost_but_saves(by["seamguard"]) <= lost_but_saves(by["binary"])
    assert share(by["seamguard"], "checkpoint_save") - share(by["binary"], "checkpoint_save") < 0.001
    cdu = {p: next(f for f in r.faults if f.kind == "cdu_flow_loss") for p, r in by.items()}
    assert math.isfinite(cdu["seamguard"].detected_at)
    assert cdu["seamguard"].detected_at - cdu["seamguard"].onset <= 600  # within minutes of onset
    assert (
        not math.isfinite(cdu["binary"].detected_at)
        or cdu["binary"].detected_at > cdu["seamguard"].detected_at
    )


def test_policies_see_telemetry_not_fault_labels(scenario: Scenario) -> None:
    """Ground truth stays in the twin: every policy but the oracle gets a world with no fault
    records, no declared faults and no list of lemon nodes, yet runs to the same result."""
    world = build_world(scenario, 0)
    assert world.faults and world.scenario.faults
    for name in ("binary", "young-daly", "seamguard"):
        seen = Twin(world, name).policy.world  # type: ignore[attr-defined]
        assert seen.faults == () and seen.scenario.faults == () and seen.lemons.size == 0
        assert seen.topology is world.topology and seen.scenario.jobs == world.scenario.jobs
    assert Twin(world, "oracle").policy.world.faults == world.faults  # type: ignore[attr-defined]


def test_ci95_is_honest_about_few_seeds() -> None:
    mean, (lo, hi) = mean_ci95([0.9, 0.92, 0.94])
    assert lo < mean < hi and mean == pytest.approx(0.92)
    assert mean_ci95([0.5]) == (0.5, (0.5, 0.5))
    _, (_, top) = mean_ci95([0.99, 0.999, 0.95], (0.0, 1.0))
    assert top <= 1.0


def test_summary_contract(scenario: Scenario, runs: list[RunResult]) -> None:
    s = summarize(scenario, runs)
    assert s["scenario"] == "small-cascade" and s["seeds"] == [0] and s["buckets"] == list(BUCKETS)
    assert set(s["policies"]) == set(POLICIES)
    for p in s["policies"].values():
        assert set(p["lost_hours"]) == set(LOST_BUCKETS)
        total = p["ettr"]["mean"] + sum(p["lost_share"].values())
        assert total == pytest.approx(1.0, abs=1e-6)
        assert isinstance(p["false_quarantines"], int) and isinstance(p["missed_gray_failures"], int)
        assert p["median_detection_lead_s"] is None or math.isfinite(p["median_detection_lead_s"])
        assert s["observation"] == "full" and p["observed_node_days"] == pytest.approx(p["node_days"])
    # Only seamguard acts through the safety layer: its results counted by kind and status.
    sg = s["policies"]["seamguard"]["outcomes"]
    assert sg.get("checkpoint_now done", 0) > 0 and all(len(k.split()) == 2 for k in sg)
    assert s["policies"]["binary"]["outcomes"] == {}
    json.dumps(s, allow_nan=False)


def test_bad_policy_and_seed_arguments_are_named() -> None:
    with pytest.raises(InputError, match="unknown 'magic'"):
        parse_policies("binary,magic")
    with pytest.raises(InputError, match="named twice"):
        parse_policies("binary,binary")
    with pytest.raises(InputError, match="--seeds"):
        seed_list(0)
    with pytest.raises(InputError, match="--first-seed"):
        seed_list(2, -1)
    assert seed_list(3, 5) == (5, 6, 7)


def test_bad_scenario_file_names_the_key(tmp_path: Path) -> None:
    bad = small(tmp_path, faults=[{"kind": "cdu_flow_loss", "target": "gpu/n0000/1", "onset_h": 1}])
    with pytest.raises(InputError, match=r"small\.yaml.*faults\.0.*targets a cdu"):
        load_scenario(str(bad))
    with pytest.raises(InputError, match="neither a built-in scenario"):
        load_scenario("no-such-scenario")
    # A target the cluster does not have is refused before any run starts, naming what it has.
    missing = load_scenario(
        str(small(tmp_path, faults=[{"kind": "hbm_ecc", "target": "gpu/n0099/1", "onset_h": 1}]))
    )
    with pytest.raises(
        InputError, match=r"faults\.0\.target: 'gpu/n0099/1' is not in the cluster \(it has gpu/n0000/0"
    ):
        run_campaign(missing, ("binary",), (0,), workers=2)


def test_simulate_cli_writes_summary_plots_and_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        ["simulate", "--scenario", str(small(tmp_path)), "--policies", "binary,seamguard", "--seeds", "2",
         "--duration-h", "1.5", "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and list(summary["policies"]) == ["binary", "seamguard"]
    assert summary["duration_h"] == 1.5
    lo, hi = summary["policies"]["binary"]["ettr"]["ci95"]
    assert lo <= summary["policies"]["binary"]["ettr"]["mean"] <= hi
    for png in ("goodput_timeline.png", "lost_time.png", "state_timeline.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert "small-cascade" in page and page.count("data:image/png;base64,") == 3
    assert "seamguard" in res.output and "ETTR" in res.output


def test_simulate_cli_refuses_bad_arguments(tmp_path: Path) -> None:
    """Refused before anything runs: no output directory is created."""
    out = tmp_path / "never"
    for args, said in (
        (["--policies", "nope"], "unknown 'nope'"),
        (["--duration-h", "-1"], "--duration-h"),
        (["--seeds", "0"], "--seeds"),
    ):
        res = CliRunner().invoke(app, ["simulate", "--scenario", "thermal-cascade", "--out", str(out), *args])
        assert res.exit_code == 2 and said in res.output, res.output
    res = CliRunner().invoke(app, ["simulate", "--scenario", "nowhere.yaml", "--out", str(out)])
    assert res.exit_code == 2 and "nowhere.yaml" in res.output
    assert not out.exists()


def test_bench_twin_prints_the_engine_tick_beside_the_campaign() -> None:
    """A slower machine reads as one: the campaign's line carries the engine's own tick time."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, str(root / "bench" / "twin.py"), "--scenario", "thermal-cascade", "--policies",
         "binary", "--workers", "1", "--tick-gpus", "64"],
        check=True, capture_output=True, text=True, timeout=300,
    ).stdout  # fmt: skip
    last = json.loads(out.strip().splitlines()[-1])
    assert last["scenario"] == "thermal-cascade" and last["engine_tick_gpus"] == 64
    assert last["engine_tick_p50_ms"] > 0 and last["campaign_wall_s"] > 0
