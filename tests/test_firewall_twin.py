"""The failure-amplification firewall in the twin (``gray-leaf-two-jobs``, control/containment.py).

A leaf turns gray under one rank of each of two synchronous jobs. With spares on another leaf,
seamguard moves both ranks off it (one restart each) and the jobs run at full pace again; the same
engine with its firewall off (``seamguard-nofirewall``) leaves them at the leaf's pace. Without
spares, the leaf is tolerated: a drain would only stop the jobs. A shorter run than the built-in
scenario (4 h, the leaf gray for 2.5 of them), one seed.
"""

from __future__ import annotations

from typing import Any

import pytest

from seamguard.twin.results import RunResult
from seamguard.twin.scenario import load_scenario
from seamguard.twin.sim import Twin
from seamguard.twin.world import build_world

SHORT: dict[str, Any] = {
    "duration_h": 4,
    "faults": [{"kind": "switch_congestion", "target": "switch/leaf01", "onset_h": 1.0, "ramp_h": 1.0,
                "severity": 2.0, "duration_h": 2.5}],
}  # fmt: skip
NO_SPARES: dict[str, Any] = {**SHORT, "cluster": {"cdus": 3, "racks_per_cdu": 1}}  # 24 nodes, all busy
TRAINING = ("train-a", "train-b")


def run(policy: str, overrides: dict[str, Any]) -> RunResult:
    return Twin(build_world(load_scenario("gray-leaf-two-jobs", overrides), 0), policy).run()


def ettr(r: RunResult, job: str) -> float:
    return next(j for j in r.jobs if j.name == job).ettr


def policy_drains(r: RunResult) -> list[str]:
    return sorted(d.node for d in r.drains if d.actor == "policy")


@pytest.fixture(scope="module")
def firewall() -> RunResult:
    return run("seamguard", SHORT)


@pytest.fixture(scope="module")
def no_firewall() -> RunResult:
    return run("seamguard-nofirewall", SHORT)


def test_the_firewall_turns_a_job_wide_stall_into_one_restart(
    firewall: RunResult, no_firewall: RunResult
) -> None:
    # the ranks under the gray leaf, one per job, move to spares; nothing else is drained
    assert policy_drains(firewall) == ["node/n0008", "node/n0015"]
    assert policy_drains(no_firewall) == []
    for job in TRAINING:
        assert ettr(firewall, job) > ettr(no_firewall, job) + 0.03, job
        assert next(j for j in firewall.jobs if j.name == job).restarts == 1
    assert firewall.ettr > no_firewall.ettr
    # the healthy ranks (8 of each job's 9 nodes) stop waiting for the one on the leaf
    assert firewall.healthy_wait_gpu_h < 0.5 * no_firewall.healthy_wait_gpu_h
    assert no_firewall.healthy_wait_gpu_h > 10.0


def test_healthy_wait_is_the_healthy_share_of_the_slowdown(no_firewall: RunResult) -> None:
    """A 9-node job with one node under the leaf: 8/9 of its slowdown is healthy GPUs waiting."""
    for job in (j for j in no_firewall.jobs if j.name in TRAINING):
        assert job.healthy_wait_gpu_s == pytest.approx(job.buckets[1] * 8 / 9, rel=0.02)


def test_without_spares_the_gray_leaf_is_tolerated() -> None:
    r = run("seamguard", NO_SPARES)
    assert policy_drains(r) == []
    assert not any(k.startswith(("drain_node", "isolate_switch")) for k in r.outcomes)
    assert r.outcomes.get("restrict_admission done", 0) >= 1  # the leaf is kept, new work avoids it
