"""The twin's node reboot (``node_reboot``): the host is down for 5 min x severity, its job crashes
with it and restarts from its last checkpoint, and the host comes back whole with nothing left to
repair: no lingering fault, no drain that outlasts the reboot."""

from __future__ import annotations

import math
from typing import Any

from seamguard.twin.faults import FAULT_KINDS, REBOOT_S, HardEffect
from seamguard.twin.jobs import TrainingJob
from seamguard.twin.scenario import scenario_from_mapping
from seamguard.twin.sim import Twin
from seamguard.twin.world import build_world

ONSET_H = 0.25


def _scenario(train_nodes: int, target: str, severity: float = 1.0) -> dict[str, Any]:
    return {
        "name": "reboot", "duration_h": 1.0,
        "cluster": {"cdus": 1, "racks_per_cdu": 2, "nodes_per_rack": 2, "gpus_per_node": 2, "nodes_per_leaf": 2},
        "jobs": [{"name": "a", "class": "sync_training", "nodes": train_nodes, "checkpoint_gb": 40}],
        "faults": [{"kind": "node_reboot", "target": target, "onset_h": ONSET_H, "severity": severity}],
    }  # fmt: skip


def _run(train_nodes: int, target: str, severity: float = 1.0) -> tuple[Twin, list[tuple[float, bool, str]]]:
    world = build_world(scenario_from_mapping(_scenario(train_nodes, target, severity)), 0)
    twin = Twin(world, "binary")
    seen: list[tuple[float, bool, str]] = []
    twin.run(lambda t: seen.append((t - world.start, bool(twin.plant.node_down[1]), twin.jobs[0].phase.name)))
    return twin, seen


def test_the_kind_is_a_transient_hard_failure_not_a_gray_or_benign_one() -> None:
    spec = FAULT_KINDS["node_reboot"]
    assert spec.hard is HardEffect.NODE and spec.down_s == REBOOT_S and not spec.benign and not spec.facility
    twin, _ = _run(4, "node/n0001", severity=2.0)
    [f] = twin.world.faults
    assert not f.gray and f.hard and f.down_for == 2 * REBOOT_S
    assert f.back_at == f.hard_at + 2 * REBOOT_S and f.repair_s == 2 * REBOOT_S


def test_without_a_spare_the_job_waits_for_its_host_and_restarts_on_the_same_nodes() -> None:
    twin, seen = _run(4, "node/n0001")
    onset = ONSET_H * 3600.0
    down = [t for t, is_down, _ in seen if is_down]
    assert down and min(down) == onset and max(down) < onset + REBOOT_S + 1e-6  # down five minutes
    job = twin.jobs[0]
    assert isinstance(job, TrainingJob)
    assert job.failures == 1 and job.restarts == 1
    assert sorted(job.nodes.tolist()) == [0, 1, 2, 3]  # the same nodes, the host back whole
    waiting = [t for t, _, phase in seen if phase == "RECOVERING"]
    assert waiting and max(waiting) < onset + REBOOT_S  # placed again as the host came back
    assert any(phase == "RUNNING" for t, _, phase in seen if t > onset + REBOOT_S)
    [f] = twin.world.faults
    assert f.fid in twin.cleared and not twin.fleet.in_repair.any() and not twin.fleet.drained.any()
    assert math.isinf(twin.broken_since[1])


def test_a_free_host_comes_back_by_itself() -> None:
    """No prolog or operator drains it; ``binary`` drains it on the heartbeat it lost (its own
    choice, judged by the false-quarantine figures), once it is already back: a false drain."""
    twin, _ = _run(2, "node/n0003")
    assert not twin.plant.node_down.any() and math.isinf(twin.broken_since[3])
    [f] = twin.world.faults
    assert twin.cleared_at[f.fid] == f.back_at
    assert all(d.actor == "policy" and d.false for d in twin.fleet.drains)
    assert twin.jobs[0].failures == 0  # its job was elsewhere
