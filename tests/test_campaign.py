"""Campaigns in parallel: processes and Ray give the serial results, in order, with progress in
simulated seconds; bad --engine and --workers values are refused by name."""

from __future__ import annotations

import os
import pickle
from collections import defaultdict
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from seamguard.cli import app
from seamguard.errors import InputError
from seamguard.twin.campaign import run_campaign, run_seconds
from seamguard.twin.executors import progress
from seamguard.twin.results import RunResult
from seamguard.twin.scenario import Scenario, load_scenario
from tests.test_twin import SMALL

# test_twin's small cascade, half an hour long: a CDU loses flow under a synchronous job.
TINY: dict[str, Any] = {
    **SMALL,
    "name": "tiny-cascade",
    "duration_h": 0.5,
    "faults": [
        {"kind": "cdu_flow_loss", "target": "cdu/cdu0", "onset_h": 0.1, "ramp_h": 0.1, "severity": 0.5, "duration_h": 0.3},
        {"kind": "slow_gpu", "target": "gpu/n0003/2", "onset_h": 0.0},
    ],
}  # fmt: skip
POLICIES = ("binary", "seamguard")
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import yaml

    path = tmp_path_factory.mktemp("sc") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def scenario(tiny: Path) -> Scenario:
    return load_scenario(str(tiny))


@pytest.fixture(scope="module")
def serial(scenario: Scenario) -> list[RunResult]:
    return run_campaign(scenario, POLICIES, SEEDS, workers=1)


def fingerprint(results: list[RunResult]) -> list[tuple[Any, ...]]:
    """What must match bit for bit: which run, its ETTR, its buckets per job, its drains, actions
    and fault outcomes."""
    return [
        (
            r.seed,
            r.policy,
            r.ettr,
            r.bucket_totals(),
            [j.buckets for j in r.jobs],
            r.drains,
            r.actions,
            r.faults,
        )
        for r in results
    ]


Progress = dict[tuple[str, int], list[float]]


def recorder() -> tuple[Progress, Any]:
    seen: Progress = defaultdict(list)

    def on_step(policy: str, seed: int, seconds: float) -> None:
        seen[policy, seed].append(seconds)

    return seen, on_step


def assertprogress(seen: Progress, scenario: Scenario) -> None:
    """Every run reports rising simulated seconds and ends exactly at its duration."""
    assert set(seen) == {(p, s) for s in SEEDS for p in POLICIES}
    for run, values in seen.items():
        assert all(a < b for a, b in pairwise(values)), run
        assert values[0] > 0 and values[-1] == run_seconds(scenario) == 1800.0, run


def test_serial_is_seed_major_and_reportsprogress(scenario: Scenario, serial: list[RunResult]) -> None:
    assert [(r.seed, r.policy) for r in serial] == [(s, p) for s in SEEDS for p in POLICIES]
    seen, on_step = recorder()
    assert fingerprint(run_campaign(scenario, POLICIES, SEEDS, on_step, workers=1)) == fingerprint(serial)
    assertprogress(seen, scenario)


def test_processes_give_the_serial_results_in_order(scenario: Scenario, serial: list[RunResult]) -> None:
    seen, on_step = recorder()
    parallel = run_campaign(scenario, POLICIES, SEEDS, on_step, workers=2)
    assert fingerprint(parallel) == fingerprint(serial)  # seed-major, whichever finished first
    assertprogress(seen, scenario)


def test_a_failing_run_fails_the_campaign_with_its_own_error(scenario: Scenario) -> None:
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        run_campaign(scenario, ("binary", "nope"), SEEDS, workers=2)
    # an InputError raised in a worker crosses the process boundary whole
    exc = pickle.loads(pickle.dumps(InputError("faults.0", "targets a cdu")))
    assert isinstance(exc, InputError) and (exc.where, exc.problem) == ("faults.0", "targets a cdu")


def test_worker_progress_is_throttled_but_always_ends() -> None:
    """A worker sends at most one message per period, and always the last one, exact."""
    seen, on_step = recorder()
    relay = progress(on_step, "binary", 7, start=1000.0, end=1000.0 + 1800.0, period_s=60.0)
    for t in range(1030, 2830, 30):  # microseconds apart: well within one period
        relay(float(t))
    assert seen == {("binary", 7): [30.0, 1800.0]}


def _ray_or_skip() -> None:
    """Ray is in the dev extra: missing, the test skips on a developer's machine but fails in CI."""
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("ray is not installed, yet `make test` installs .[dev], which includes it")
        pytest.skip("ray is not installed: pip install -e '.[dev]' (or '.[ray]')")


@pytest.mark.slow
def test_ray_gives_the_serial_results(
    scenario: Scenario, serial: list[RunResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One local Ray instance for the whole test (it takes seconds to start), stopped afterwards."""
    _ray_or_skip()
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # a local instance, not a developer's cluster
    seen, on_step = recorder()
    results = run_campaign(scenario, POLICIES, SEEDS, on_step, engine="ray", workers=2)
    assert fingerprint(results) == fingerprint(serial)
    assertprogress(seen, scenario)
    assert not ray.is_initialized()  # we started it, so we stopped it


def test_bad_engine_and_workers_are_refused(scenario: Scenario, tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--engine"):
        run_campaign(scenario, POLICIES, SEEDS, engine="dask")
    with pytest.raises(InputError, match="--workers"):
        run_campaign(scenario, POLICIES, SEEDS, workers=0)
    out = tmp_path / "never"
    for args, said in (
        (["--engine", "dask"], "--engine: unknown 'dask'"),
        (["--workers", "0"], "--workers: need at least one worker"),
        (["--workers", "-3", "--engine", "ray"], "--workers"),
    ):
        res = CliRunner().invoke(app, ["simulate", "--scenario", str(tiny), "--out", str(out), *args])
        assert res.exit_code == 2 and said in res.output, res.output
    assert not out.exists()
