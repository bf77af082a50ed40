"""The scenario sampler: deterministic draws inside the stated support, every fault kind and job
class reachable, the issue's adversarial shape inside it, every draw runnable by all four
policies; the comparison's rules; ``simulate --sample`` and ``bench/generalise.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from seamguard.cli import app
from seamguard.errors import InputError
from seamguard.model.states import TRAINING_CLASSES, JobClass
from seamguard.twin.accounting import LOST_BUCKETS
from seamguard.twin.faults import FAULT_KINDS
from seamguard.twin.generalise import Comparison, Row, compare_runs
from seamguard.twin.sampler import (
    CROWDED_KINDS,
    Bounds,
    Facts,
    check_sample,
    sample_mapping,
    sample_scenario,
    sample_yaml,
)
from seamguard.twin.scenario import ONLINE, RUNNABLE, load_scenario, scenario_from_mapping
from seamguard.twin.sim import POLICIES
from seamguard.twin.world import build_world

ROOT = Path(__file__).resolve().parents[1]
SEEDS = range(120)
TINY = Bounds(gpus=(64, 128), duration_h=(0.5, 0.5), gpu_hours=64.0)  # runs in seconds, all policies
runner = CliRunner(env={"COLUMNS": "240"})


@pytest.fixture(scope="module")
def draws() -> list[dict[str, object]]:
    return [sample_mapping(s) for s in SEEDS]


def test_a_seed_gives_the_same_scenario_and_seeds_differ() -> None:
    assert sample_mapping(7) == sample_mapping(7)
    assert sample_scenario(7) == sample_scenario(7)
    assert sample_mapping(7) != sample_mapping(8)
    assert sample_mapping(7, TINY) != sample_mapping(7)  # the bounds are part of the draw
    with pytest.raises(InputError, match="sampler seed: must be non-negative"):
        sample_mapping(-1)


def test_draws_honour_the_support() -> None:
    b = Bounds()
    seen_gpus, seen_spare, seen_restart, seen_hours = [], [], [], []
    for s in SEEDS:
        sc = sample_scenario(s)
        f = Facts.of(sc)
        assert b.gpus[0] <= f.gpus <= b.gpus[1], (s, f.gpus)
        assert 0 <= f.spares <= b.spare_fraction[1] * f.nodes, (s, f.spares, f.nodes)
        training = [j for j in sc.jobs if j.training]
        assert training and training[0].job_class is JobClass.SYNC_TRAINING  # the large synchronous job first
        assert training[0].nodes == max(j.nodes for j in sc.jobs if j.job_class is JobClass.SYNC_TRAINING)
        for j in training:
            assert 120.0 <= j.restart_s <= 1200.0, (s, j.name, j.restart_s)
        assert b.duration_h[0] <= f.duration_h <= b.duration_h[1]
        assert f.gpus * f.duration_h <= b.gpu_hours or f.duration_h == b.duration_h[0]
        assert all(fault.onset_h < sc.duration_h for fault in sc.faults)
        world = build_world(sc, s)  # every declared target is in the cluster
        assert sum(1 for x in world.faults if x.source == "declared") == len(sc.faults)
        seen_gpus.append(f.gpus)
        seen_spare.append(f.spares / f.nodes)
        seen_restart.append(f.restart_min)
        seen_hours.append(f.duration_h)
    # ... and spans it: small and large clusters, none and many spares, cheap and dear restarts.
    assert min(seen_gpus) <= 128 and max(seen_gpus) >= 2048
    assert min(seen_spare) == 0.0 and max(seen_spare) >= 0.08
    assert min(seen_restart) <= 4 and max(seen_restart) >= 18
    assert min(seen_hours) <= 8 and max(seen_hours) >= 36


def test_narrow_size_bounds_are_honoured() -> None:
    """Shapes come in powers of two per CDU; a size range that cuts through them still holds."""
    for lo, hi in ((65, 128), (64, 100), (1000, 1100)):
        b = Bounds(gpus=(lo, hi), duration_h=(1.0, 1.0))
        for s in range(30):
            assert lo <= Facts.of(sample_scenario(s, b)).gpus <= hi, (lo, hi, s)


def test_every_fault_kind_and_job_class_is_reachable() -> None:
    kinds: Counter[str] = Counter()
    classes: set[JobClass] = set()
    for s in range(60):
        sc = sample_scenario(s)
        kinds.update(f.kind for f in sc.faults)
        classes.update(j.job_class for j in sc.jobs)
    drawn = {k for k, spec in FAULT_KINDS.items() if not spec.serving}  # serving kinds: no deployment to hit
    assert set(kinds) == drawn, drawn - set(kinds)
    assert classes == set(RUNNABLE)


def test_the_issues_adversarial_shape_is_inside_the_support() -> None:
    """Almost no spares, two synchronous jobs and online serving, a CDU's supply water warming
    for hours under the synchronous jobs, a congested leaf, a slow checkpoint backend, a degrading
    cold plate and a hung job; restarts within 2-20 min (10 in the issue)."""
    crowded = [s for s in SEEDS if sample_mapping(s)["name"] == f"sample-{s}-crowded"]
    assert 0.1 <= len(crowded) / len(SEEDS) <= 0.35  # one draw in five
    for s in crowded[:8]:
        sc = sample_scenario(s)
        world = build_world(sc, s)
        f = Facts.of(sc)
        assert f.spares <= 0.01 * f.nodes
        sync = [i for i, j in enumerate(sc.jobs) if j.job_class is JobClass.SYNC_TRAINING]
        assert len(sync) >= 2 and any(j.job_class in ONLINE for j in sc.jobs)
        assert set(CROWDED_KINDS) <= set(f.kinds)
        sync_nodes = np.concatenate([world.initial_nodes[i] for i in sync])
        for fault in world.faults:
            if fault.source == "declared" and fault.kind == "supply_temp_rise":
                cdu_nodes = np.flatnonzero(world.topology.rack_cdu[world.topology.node_rack] == fault.local)
                assert np.intersect1d(cdu_nodes, sync_nodes).size > 0  # under the synchronous jobs
                assert fault.ramp >= 3600.0 or fault.ramp >= 0.8 * (world.end - fault.onset) - 1  # for hours
            if (
                fault.kind in ("switch_congestion", "thermal_interface", "job_hang")
                and fault.source == "declared"
            ):
                assert fault.target in _scope_of_jobs(world, sync), (s, fault.kind, fault.target)


def _scope_of_jobs(world: object, jobs: list[int]) -> set[str]:
    from seamguard.model.entities import EntityKind

    topo = world.topology  # type: ignore[attr-defined]
    out: set[str] = set()
    for j in jobs:
        out.add(f"job/{topo.names[EntityKind.JOB][j]}")
        for n in world.initial_nodes[j].tolist():  # type: ignore[attr-defined]
            node = topo.names[EntityKind.NODE][n]
            out.add(f"switch/{topo.names[EntityKind.SWITCH][topo.node_leaf[n]]}")
            out.update(f"gpu/{node}/{g}" for g in range(world.scenario.cluster.gpus_per_node))  # type: ignore[attr-defined]
    return out


def test_a_drawn_scenario_file_loads_back_as_the_same_scenario(tmp_path: Path) -> None:
    for s in (3, 11):
        path = tmp_path / f"s{s}.yaml"
        path.write_text(sample_yaml(s), encoding="utf-8")
        assert load_scenario(str(path)) == sample_scenario(s)


def test_bad_bounds_and_sample_sizes_are_refused_by_name() -> None:
    with pytest.raises(InputError, match=r"bounds\.gpus: need 16 <= low <= high"):
        Bounds(gpus=(512, 256))
    with pytest.raises(InputError, match=r"bounds\.gpus: .* holds no power of two"):
        Bounds(gpus=(65, 100))
    with pytest.raises(InputError, match=r"bounds\.spare_fraction"):
        Bounds(spare_fraction=(0.0, 0.6))
    with pytest.raises(InputError, match=r"bounds\.gpu_hours"):
        Bounds(gpu_hours=10.0)
    with pytest.raises(InputError, match="--duration-h: must be positive"):
        Bounds().with_duration(0.0)
    with pytest.raises(InputError, match="--sample: need at least one scenario, got 0"):
        check_sample(0, 0)
    with pytest.raises(InputError, match="--seed: must be non-negative, got -2"):
        check_sample(3, -2)


def test_every_draw_runs_under_all_four_policies() -> None:
    seeds = [0, 1, 2, 3]
    scenarios = [sample_scenario(s, TINY) for s in seeds]
    cmp = compare_runs(scenarios, seeds, POLICIES, workers=1)
    assert [r.seed for r in cmp.rows] == seeds
    for r in cmp.rows:
        assert set(r.ettr) == set(POLICIES)
        assert all(0.0 < e <= 1.0 for e in r.ettr.values()), r.ettr
        assert r.ratio_to_oracle("oracle") == 1.0
    out = cmp.to_json()
    assert out["scenarios"] == 4 and out["seeds"] == seeds
    assert out["mean_ratio_to_oracle"] == pytest.approx(
        np.mean([r.ettr["seamguard"] / r.ettr["oracle"] for r in cmp.rows])
    )


def _row(seed: int, ettr: dict[str, float], fq: int = 0) -> Row:
    facts = Facts(f"s{seed}", 64, 8, 0, 10.0, 4.0, ())
    return Row(seed, facts, ettr, {p: (fq if p == "seamguard" else 0) for p in ettr}, {p: 1.0 for p in ettr})


def test_the_comparison_rules() -> None:
    pol = ("binary", "young-daly", "seamguard", "oracle")
    rows = (
        _row(0, {"binary": 0.80, "young-daly": 0.85, "seamguard": 0.85, "oracle": 0.90}),  # a tie counts
        _row(
            1, {"binary": 0.90, "young-daly": 0.70, "seamguard": 0.899, "oracle": 1.00}, fq=2
        ),  # below binary
        _row(2, {"binary": 0.40, "young-daly": 0.50, "seamguard": 0.60, "oracle": 0.60}),
        _row(
            3, {"binary": 0.90, "young-daly": 0.85, "seamguard": 0.90 - 1e-12, "oracle": 0.95}
        ),  # rounding: a tie
    )
    cmp = Comparison(rows, pol)
    assert [r.at_least_best_baseline() for r in rows] == [True, False, True, True]
    assert cmp.share_at_least_best_baseline() == 0.75
    # A ratio per scenario, then the mean: not the ratio of the means.
    ratios = [0.85 / 0.90, 0.899 / 1.0, 1.0, (0.90 - 1e-12) / 0.95]
    assert cmp.mean_ratio_to_oracle("seamguard") == pytest.approx(np.mean(ratios))
    assert cmp.mean_ratio_to_oracle("seamguard") != pytest.approx(
        cmp.mean_ettr("seamguard") / cmp.mean_ettr("oracle")
    )
    assert cmp.false_quarantines("seamguard") == 2 and cmp.false_quarantines("binary") == 0
    out = cmp.to_json()
    assert out["false_quarantines"] == 2 and out["share_at_least_best_baseline"] == 0.75
    assert out["shortfalls"] == []  # the rows carry no losses: nothing to say why


def test_a_shortfall_names_the_baseline_and_the_loss_that_grew_most() -> None:
    pol = ("binary", "young-daly", "seamguard", "oracle")
    zero = dict.fromkeys(LOST_BUCKETS, 0.0)
    lost = {
        "binary": {**zero, "rollback": 0.01, "slowdown": 0.05},
        "young-daly": {**zero, "rollback": 0.001},
        "seamguard": {**zero, "rollback": 0.03, "quarantine_idle": 0.015},
        "oracle": zero,
    }
    below = replace(
        _row(7, {"binary": 0.90, "young-daly": 0.80, "seamguard": 0.88, "oracle": 0.95}), lost=lost
    )
    above = replace(
        _row(8, {"binary": 0.90, "young-daly": 0.80, "seamguard": 0.91, "oracle": 0.95}), lost=lost
    )
    cmp = Comparison((below, above), pol)
    [short] = cmp.shortfalls()
    # Against binary (the better baseline, not young-daly): rollback grew by 2 points, more than
    # the idle quarantine's; binary's larger slowdown does not count against seamguard.
    assert (short.seed, short.baseline, short.bucket) == (7, "binary", "rollback")
    assert short.gap == pytest.approx(0.02) and short.extra == pytest.approx(0.02)
    assert cmp.to_json()["shortfalls"] == [short.to_json()]
    # Without seamguard or without a baseline there is nothing to compare.
    only = Comparison((_row(0, {"binary": 0.8, "oracle": 0.9}),), ("binary", "oracle"))
    assert only.share_at_least_best_baseline() is None
    assert _row(0, {"seamguard": 0.8, "oracle": 0.0}).ratio_to_oracle("seamguard") is None


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--sample", "0"], "--sample: need at least one scenario, got 0"),
        (["--sample", "2", "--seed", "-1"], "--seed: must be non-negative, got -1"),
        (["--seed", "3"], "--seed: only with --sample N"),
        (["--sample", "2", "--scenario", "thermal-cascade"], "--scenario: not with --sample"),
        (["--sample", "2", "--seeds", "3"], "--seeds: not with --sample"),
        (["--sample", "2", "--first-seed", "3"], "--first-seed: not with --sample"),
        (["--sample", "2", "--engine", "ray"], "--engine: --sample runs on local processes only"),
        (["--sample", "2", "--duration-h", "0"], "--duration-h: must be positive"),
        ([], "--scenario: name a built-in scenario or a file, or draw scenarios with --sample N"),
    ],
)
def test_simulate_sample_refuses_bad_options(args: list[str], said: str, tmp_path: Path) -> None:
    out = tmp_path / "never"
    res = runner.invoke(app, ["simulate", "--out", str(out), *args])
    assert res.exit_code == 2 and said in res.output, res.output
    assert not out.exists()


def test_simulate_sample_writes_scenarios_that_replay(tmp_path: Path) -> None:
    out = tmp_path / "sampled"
    res = runner.invoke(
        app,
        [
            "simulate",
            "--sample",
            "2",
            "--seed",
            "5",
            "--duration-h",
            "0.5",
            "--workers",
            "1",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert [r["seed"] for r in results["rows"]] == [5, 6]
    assert results["overall"]["scenarios"] == 2 and results["overall"]["seeds"] == [5, 6]
    assert "overall" in res.output and "sample-5-" in res.output
    assert "8/8 runs: sample 6, oracle" in res.output  # a line per finished run (logs have no bar)
    bounds = Bounds().with_duration(0.5)
    for row in results["rows"]:
        sc = load_scenario(str(out / "scenarios" / f"{row['scenario']}.yaml"))
        assert sc == sample_scenario(row["seed"], bounds)
        assert set(row["ettr"]) == set(POLICIES)
    # The file replays: the same scenario on the same seed gives the same ETTR.
    row = results["rows"][0]
    again = out / "again"
    res = runner.invoke(
        app,
        ["simulate", "--scenario", str(out / "scenarios" / f"{row['scenario']}.yaml"), "--policies", "binary",
         "--seeds", "1", "--first-seed", str(row["seed"]), "--workers", "1", "--out", str(again)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads((again / "summary.json").read_text())
    assert summary["policies"]["binary"]["ettr"]["mean"] == pytest.approx(row["ettr"]["binary"], abs=1e-12)


def test_bench_generalise_ends_with_one_json_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "generalise.py"), "--scenarios", "2", "--first-seed", "40",
         "--duration-h", "0.5", "--workers", "1", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["scenarios"] == 2 and last["seeds"] == [40, 41]
    assert 0.0 <= last["share_at_least_best_baseline"] <= 1.0
    assert 0.0 < last["mean_ratio_to_oracle"] <= 1.5
    assert last["false_quarantines"] == last["per_policy"]["seamguard"]["false_quarantines"]
    assert set(last["per_policy"]) == set(POLICIES)
    assert "mean ratio to oracle" in proc.stderr  # the tables, beside the JSON
    # --out: every scenario's row, whatever width the tables were drawn at
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert [r["seed"] for r in rows] == [40, 41] and all(set(r["ettr"]) == set(POLICIES) for r in rows)
    assert len(list((tmp_path / "out" / "scenarios").glob("*.yaml"))) == 2
    bad = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "generalise.py"), "--scenarios", "0"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "--scenarios: need at least one scenario" in bad.stderr


def test_training_classes_are_the_ones_with_restart_costs() -> None:
    """The restart cost drawn per scenario is what every training job pays (Facts reads it back)."""
    sc = sample_scenario(4)
    costs = {j.restart_s for j in sc.jobs if j.job_class in TRAINING_CLASSES}
    assert len(costs) == 1 and Facts.of(sc).restart_min == pytest.approx(costs.pop() / 60.0)


def test_a_failing_run_names_its_scenario_policy_and_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a pool of many scenarios' runs, the error says which run it came from."""
    import seamguard.twin.executors as executors

    class Broken:
        def __init__(self, world: object, policy: str) -> None:
            pass

        def run(self, relay: object) -> None:
            raise ValueError("the engine broke")

    monkeypatch.setattr(executors, "Twin", Broken)
    sc = sample_scenario(9, TINY)
    with pytest.raises(ValueError, match="the engine broke") as err:
        executors._run_one(sc, 9, "seamguard", None)
    assert err.value.__notes__ == [f"in the twin run of scenario {sc.name}, policy seamguard, seed 9"]
    with pytest.raises(ValueError) as err:
        compare_runs([sc], [9], ("binary",), workers=1)
    assert err.value.__notes__ == [f"in the twin run of scenario {sc.name}, policy binary, seed 9"]


def test_sample_seed_2_runs_under_seamguard() -> None:
    """Found by the sampler: an exploratory job ended and kept its node in the placement the twin
    reports, the scheduler gave that node to another job, and the engine refused a placement that
    gives one node to two jobs."""
    data = sample_mapping(2)
    data["duration_h"] = 12.0  # the crash comes at 11.7 h; every fault starts before
    sc = scenario_from_mapping(data)
    build_world(sc, 2)
    compare_runs([sc], [2], ("seamguard",), workers=1)
