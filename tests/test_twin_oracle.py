"""The oracle is the ceiling the other policies are measured against, so it must not win by
what no site allows: a node it pulls before its fault starts still needs the fault's repair,
and taking a node with no spare to replace it stops the job, which it weighs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from seamguard.twin.accounting import Bucket
from seamguard.twin.policies.base import save_ahead_s
from seamguard.twin.scenario import scenario_from_mapping
from seamguard.twin.sim import Twin
from seamguard.twin.world import build_world


def _scenario(nodes: int, fault: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "oracle-spares",
        "duration_h": 12,
        "cluster": {"cdus": 1, "racks_per_cdu": 2, "nodes_per_rack": 4, "gpus_per_node": 8},
        "jobs": [{"name": "train", "class": "sync_training", "nodes": nodes}],
        "faults": [fault],
        "operations": {"repair_h": 24},
    }


def _run(nodes: int, fault: dict[str, Any]) -> Twin:
    twin = Twin(build_world(scenario_from_mapping(_scenario(nodes, fault)), 0), "oracle")
    twin.run()
    return twin


GRAY = {"kind": "pcie_downtrain", "target": "gpu/n0002/1", "onset_h": 2.0, "severity": 0.5}


def test_with_a_spare_the_oracle_swaps_a_gray_node_out_before_its_fault() -> None:
    twin = _run(7, GRAY)
    drains = [d for d in twin.fleet.drains if d.node == 2]
    assert len(drains) == 1
    onset = twin.world.faults[0].onset
    assert onset - save_ahead_s(twin.world) - twin.world.tick_s <= drains[0].t <= onset
    # Pulled before its onset, the node still needs the fault's repair, not a diagnosis.
    assert twin.fleet.in_repair[2]
    assert twin.fleet.repair_until[2] >= drains[0].t + 24 * 3600 - 1


def test_without_a_spare_the_oracle_tolerates_a_gray_node() -> None:
    twin = _run(8, GRAY)  # every node runs the job
    # (Once the job has ended, the idle node goes to repair.)
    assert not [d for d in twin.fleet.drains if d.node == 2 and d.t < twin.world.end]
    job = twin.jobs[0]
    assert job.restarts == 0  # a slow rank costs less than a day without a node


def test_without_a_spare_the_oracle_takes_a_failing_node_a_save_ahead_of_its_failure() -> None:
    fault = {"kind": "hbm_ecc", "target": "gpu/n0002/1", "onset_h": 2.0, "ramp_h": 3.0}
    twin = _run(8, fault)
    (drain,) = [d for d in twin.fleet.drains if d.node == 2]
    f = twin.world.faults[0]
    lead = save_ahead_s(twin.world)
    # Not at the onset (that would idle the job for the whole ramp) but a save ahead of the XID.
    assert f.hard_at - lead - twin.world.tick_s <= drain.t < f.hard_at
    assert drain.t > f.onset + 0.5 * f.ramp
    assert twin.jobs[0].buckets[Bucket.ROLLBACK] == pytest.approx(0.0)
    # Acted on ticks after it came due, the fault is still credited as foreseen, when acted on.
    [seen] = [d for d in twin.policy.detections if d.entity == f.target]  # type: ignore[attr-defined]
    assert seen.t == pytest.approx(drain.t)
    assert twin.jobs[0].failures == 0


def test_a_free_node_another_job_waits_for_is_no_spare() -> None:
    """The job that moves saves first; meanwhile the scheduler fills the empty places of jobs
    already waiting, so a swap counts only the free nodes nobody waits for."""
    data = _scenario(6, GRAY)
    data["jobs"] = [*data["jobs"], {"name": "decode", "class": "online_decode", "nodes": 1, "step_s": 0.05}]
    twin = Twin(build_world(scenario_from_mapping(data), 0), "binary")
    seen: list[tuple[bool, bool, bool]] = []

    def probe(_: float) -> None:
        if seen:
            return
        train, decode = twin.jobs[0], twin.jobs[1]
        adm = np.zeros(twin.n_nodes, dtype=np.int64)
        one_spare = twin.can_replace(train.index, 1, adm)  # 8 nodes, 7 busy
        node = int(decode.slot_node[0])
        decode.slot_node[0] = -1  # its replica is gone: decode waits for a node
        twin.fleet.node_job[node] = -1
        seen.append((one_spare, twin.can_replace(train.index, 1, adm), twin.can_replace(train.index, 2, adm)))
        decode.slot_node[0] = node
        twin.fleet.node_job[node] = decode.index

    twin.run(probe)
    assert seen == [(True, True, False)]  # two free nodes, one of them decode's
