"""The scheduler's charge for a job that cannot be placed (``twin.operations.wait_bucket``): the
wait is the policy's quarantine when the capacity it holds with nothing wrong would fill the
request, otherwise the cluster is simply short of nodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seamguard.model.states import JobClass
from seamguard.twin.accounting import Bucket
from seamguard.twin.fleet import Actor
from seamguard.twin.operations import wait_bucket
from seamguard.twin.scenario import load_scenario
from seamguard.twin.sim import Twin
from seamguard.twin.world import build_world
from tests.test_twin import small

BUSY_JOB = 0


@pytest.fixture
def twin(tmp_path: Path) -> Twin:
    """16 healthy nodes, none placed yet; all but nodes 0-4 taken by a job."""
    tw = Twin(build_world(load_scenario(str(small(tmp_path, faults=[]))), 0), "binary")
    tw.fleet.node_job[5:] = BUSY_JOB
    return tw


def test_free_nodes_plus_those_held_with_nothing_wrong_decide_the_bucket(twin: Twin) -> None:
    t = twin.world.start + 60.0
    for n in (3, 4):  # the policy drains two healthy free nodes: held with nothing wrong
        twin.fleet.drain(t, n, Actor.POLICY, True, "suspected")
    usable = twin.usable()
    assert wait_bucket(twin, 5, usable, t) is Bucket.QUARANTINE_IDLE  # 3 free + 2 held fill it exactly
    assert wait_bucket(twin, 6, usable, t) is Bucket.PLACEMENT_WAIT  # one short whatever was held


def test_a_node_drained_for_a_real_reason_is_not_held_capacity(twin: Twin) -> None:
    t = twin.world.start + 60.0
    twin.fleet.drain(t, 4, Actor.POLICY, False, "broken")
    twin.fleet.drain(t, 3, Actor.OPERATOR, False, "found broken by hand")
    usable = twin.usable()
    assert wait_bucket(twin, 3, usable, t) is Bucket.QUARANTINE_IDLE
    assert wait_bucket(twin, 4, usable, t) is Bucket.PLACEMENT_WAIT


def test_a_healthy_node_the_policy_denies_counts_as_held(twin: Twin, monkeypatch: pytest.MonkeyPatch) -> None:
    """Admission 2 (denied) on a free node with nothing wrong is quarantine too, though not drained."""
    t = twin.world.start + 60.0
    denied = np.zeros(twin.n_nodes, np.int64)
    denied[[0, 1]] = 2
    monkeypatch.setattr(twin.policy, "admission", lambda job_class: denied)
    usable = twin.usable()
    assert wait_bucket(twin, 5, usable, t) is Bucket.QUARANTINE_IDLE
    assert wait_bucket(twin, 6, usable, t) is Bucket.PLACEMENT_WAIT
    twin.plant.node_down[0] = True  # a denied node that is down is no capacity at all
    assert wait_bucket(twin, 5, twin.usable(), t) is Bucket.PLACEMENT_WAIT
    assert twin.admission(JobClass.SYNC_TRAINING) is denied


def test_a_node_back_from_repair_is_released_at_once_in_the_twin(tmp_path: Path) -> None:
    """The twin's repair return takes the daemon's ``seamguard ctl repaired`` path: the node,
    drained for a hard failure, is resumed within a tick of coming back, not a recovery delay
    (900 s) later, while the job waits for it."""
    faults = [{"kind": "gpu_hard", "target": "gpu/n0003/2", "onset_h": 0.5}]
    path = small(tmp_path, faults=faults, duration_h=4, operations={"repair_h": 1.0})
    tw = Twin(build_world(load_scenario(str(path)), 0), "seamguard")
    result = tw.run()
    back = [t for t, entity, _, why in tw.policy.transitions if entity == "node/n0003" or entity.startswith("gpu/n0003/")
            if "returned from repair" in why]  # fmt: skip
    assert back, "the node came back from repair within the run"
    resumed = [t for t, kind, target in result.acted if kind == "resume_node" and target == "node/n0003"]
    assert resumed and 0.0 <= resumed[0] - min(back) <= 60.0
