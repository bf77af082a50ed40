"""The diagnosis rules on the twin's telemetry (fixed seed): the job a fault hits is diagnosed
with the fault's mode while the fault costs it, the other job stays healthy, and both are healthy
before the fault. The engine is stepped over the twin's recorded batches, as ``seamguard score``
steps it over a recording (tests/twin_capture.py)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from seamguard.control.controller import Controller
from seamguard.diagnose.job_signals import job_signals
from seamguard.diagnose.modes import Diagnoser, Mode
from seamguard.twin.scenario import scenario_from_mapping
from seamguard.twin.sim import Twin
from seamguard.twin.world import build_world
from tests.console_harness import RACK_QUARANTINED_AT, console_daemon
from tests.twin_capture import captured_run

BASE: dict[str, Any] = {
    "name": "diagnose", "description": "one fault under one of two jobs", "duration_h": 1.5,
    "cluster": {"cdus": 2, "racks_per_cdu": 2, "nodes_per_rack": 4, "gpus_per_node": 4, "nodes_per_leaf": 4,
                "storage": ["ckpt0", "ckpt1"]},
    "jobs": [{"name": "a", "class": "sync_training", "nodes": 6, "checkpoint_gb": 200, "fallback_storage": "ckpt1"},
             {"name": "b", "class": "sync_training", "nodes": 6, "checkpoint_gb": 200, "fallback_storage": "ckpt1"}],
}  # fmt: skip
ONSET_H = 0.4
# fault, its mode, the job it spares, and how long after onset the mode must hold (a gradual
# fault ramps; a hang is sudden, and the watchdog restarts the job some minutes later)
CASES = {
    "straggler": ({"kind": "pcie_downtrain", "target": "gpu/n0001/2", "ramp_h": 0.05, "severity": 1.0}, Mode.STRAGGLER,
                  "b", 0.33),
    "network": ({"kind": "switch_congestion", "target": "switch/leaf00", "ramp_h": 0.2, "severity": 1.0, "duration_h": 2},
                Mode.NETWORK, "b", 0.33),
    "hang": ({"kind": "job_hang", "target": "job/a"}, Mode.HANG, "b", 1 / 60),
}  # fmt: skip


def modes_over_time(fault: dict[str, Any], settle_h: float) -> dict[tuple[str, str], Counter[Mode]]:
    """Per (job, before|after): how many ticks each mode was found (after: from ``settle_h`` past onset)."""
    scenario = {**BASE, "faults": [{**fault, "onset_h": ONSET_H}]}
    world, batches = captured_run(scenario, 0)
    config = Twin(build_world(scenario_from_mapping(scenario), 0), "seamguard").policy.config  # type: ignore[attr-defined]
    controller, diagnoser = Controller(world.topology, config), Diagnoser()
    start = world.start
    out: dict[tuple[str, str], Counter[Mode]] = {}
    for batch in batches:
        now = float(batch.timestamp.max()) + 1.0
        controller.tick(now, batch)
        hours = (now - start) / 3600.0
        when = "before" if hours < ONSET_H else "after" if hours > ONSET_H + settle_h else "settling"
        for f in diagnoser.tick(job_signals(controller, now)):
            out.setdefault((f.job, when), Counter())[f.mode] += 1
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_job_a_fault_hits_is_diagnosed_with_its_mode(case: str) -> None:
    fault, mode, spared, settle_h = CASES[case]
    got = modes_over_time(fault, settle_h)
    for job in ("a", "b"):
        assert set(got[(job, "before")]) == {Mode.HEALTHY}, (job, got[(job, "before")])
    hit = got[("a", "after")]
    if mode is Mode.HANG:  # found within a minute and a half; the watchdog restarts the job later
        first = got[("a", "settling")]
        assert hit[Mode.HANG] >= 5 and set(hit) <= {Mode.HANG, Mode.HEALTHY}, (first, hit)
    else:
        assert hit.most_common(1)[0][0] is mode and hit[mode] >= 0.8 * sum(hit.values()), hit
    assert got[(spared, "after")][Mode.HEALTHY] >= 0.9 * sum(got[(spared, "after")].values()), got[
        (spared, "after")
    ]


def test_the_daemon_serves_each_jobs_failure_mode_and_exports_it(tmp_path: Path) -> None:
    """The console's daemon fed by the twin (tests/console_harness.py): its job, under a CDU losing
    flow and a GPU heating, is in a thermal or power limit, in /v1/diagnosis (viewer) and in
    /metrics; an unknown job is named."""
    with console_daemon(tmp_path) as cd:
        cd.step_to(RACK_QUARANTINED_AT)
        viewer = {"Authorization": f"Bearer {cd.tokens['viewer']}"}
        assert httpx.get(cd.url + "/v1/diagnosis", trust_env=False).status_code == 401
        body = httpx.get(cd.url + "/v1/diagnosis", headers=viewer, trust_env=False).json()
        [train] = body["jobs"]
        # the healthy time its hot parts hold back, and what its domains would take down
        assert train["held_back_gpu_s_per_s"] > 0 and body["parts"][0]["held_back_gpu_s_per_s"] > 0
        assert {p["entity"] for p in body["parts"]} <= set(train["entities"])
        [cdu1] = [d for d in body["domains"] if d["entity"] == "cdu/cdu1"]
        # its 32 GPUs, and the 32 of train's outside it: one rank lost stops the whole job
        assert (cdu1["jobs"], cdu1["gpus"], cdu1["takes_down_gpus"]) == (["train"], 32, 64)
        assert (train["job"], train["mode"], train["action"]) == ("train", "thermal_power", "checkpoint_now")
        assert "cdu/cdu1" in train["entities"] and train["rate_gpu_h_per_h"] > 0 and train["cost_gpu_h"] > 0
        missing = httpx.get(cd.url + "/v1/diagnosis?job=nope", headers=viewer, trust_env=False)
        assert missing.status_code == 404 and "nope" in missing.json()["detail"]
        scraped = httpx.get(cd.url + "/metrics", headers=viewer, trust_env=False).text
        assert 'seamguard_job_failure_mode{job="train",mode="thermal_power"} 1.0' in scraped
        assert 'seamguard_job_at_risk{job="train"} 0.0' in scraped
        assert re.search(r'seamguard_job_held_back_gpu_seconds_per_second\{job="train"\} [1-9]', scraped), (
            scraped
        )
        fleet = httpx.get(cd.url + "/v1/fleet", headers=viewer, trust_env=False).json()
        assert [f["mode"] for f in fleet["diagnosis"]] == ["thermal_power"]


REBOOT_AFTER_S = 15 * 60.0  # the host down 5 min, the job's restart (5 min) and restore over by then


@pytest.fixture(scope="module")
def reboot_findings() -> list[tuple[float, str, Mode, tuple[str, ...]]]:
    """(seconds since the host went down, job, mode, entities) per job-tick of a node reboot under
    job a (a confounder: healthy throughout, bench/diagnose.py)."""
    fault = {"kind": "node_reboot", "target": "node/n0001", "onset_h": ONSET_H}
    scenario = {**BASE, "faults": [fault]}
    world, batches = captured_run(scenario, 0)
    config = Twin(build_world(scenario_from_mapping(scenario), 0), "seamguard").policy.config  # type: ignore[attr-defined]
    controller, diagnoser = Controller(world.topology, config), Diagnoser()
    down = world.start + ONSET_H * 3600.0
    out: list[tuple[float, str, Mode, tuple[str, ...]]] = []
    for batch in batches:
        now = float(batch.timestamp.max()) + 1.0
        controller.tick(now, batch)
        out.extend(
            (now - down, f.job, f.mode, f.entities) for f in diagnoser.tick(job_signals(controller, now))
        )
    return out


def test_a_node_reboot_is_no_mode_once_its_job_runs_again(
    reboot_findings: list[tuple[float, str, Mode, tuple[str, ...]]],
) -> None:
    """Before the reboot and once the job runs again: healthy, no part blamed (no hang lasting past
    the restart, the host not blamed once back); the other job healthy throughout."""
    for t, job, mode, entities in reboot_findings:
        if job == "b" or t < 0 or t > REBOOT_AFTER_S:
            assert mode is Mode.HEALTHY and not entities, (t, job, mode, entities)


def test_a_node_reboots_restart_gap_is_not_named_a_hang(
    reboot_findings: list[tuple[float, str, Mode, tuple[str, ...]]],
) -> None:
    hangs = [t for t, job, mode, _ in reboot_findings if job == "a" and mode is Mode.HANG]
    assert not hangs, hangs
