"""The failures the fleet's rate is learned from: the classifier's failed parts and each job's
runtime count (``job.failures_total``), every failure once, through to the learner, the engine
and the twin."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from seamguard.config import load_config
from seamguard.control.controller import Controller
from seamguard.control.failure_tally import SAME_FAILURE_S, FailureTally
from seamguard.economics.hazard import DAY_S
from seamguard.journal.records import DecisionRecord
from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology
from seamguard.model.workload import workload_from_nodes
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.twin.jobs import TrainingJob
from seamguard.twin.scenario import scenario_from_mapping
from seamguard.twin.sim import Twin
from seamguard.twin.world import build_world
from tests.test_controller import normal_batch, with_readings
from tests.test_twin import SMALL

CFG = load_config()
NONE = np.zeros(0, dtype=np.int64)
NODE_JOB = np.array([0, 0, 1, -1])  # four nodes: two in job 0, one in job 1, one idle


def runtime(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def test_a_runtime_count_is_read_from_its_first_sight_and_a_fall_is_a_restart_from_zero() -> None:
    tally = FailureTally.create(2)
    assert tally.count(0.0, NONE, NODE_JOB, runtime(3.0, math.nan)) == 0  # failed before we watched
    assert tally.count(60.0, NONE, NODE_JOB, runtime(4.0, 0.0)) == 1
    assert tally.count(2000.0, NONE, NODE_JOB, runtime(0.0, math.nan)) == 0  # the launcher began again
    assert tally.count(4000.0, NONE, NODE_JOB, runtime(1.0, math.nan)) == 1  # job 1 kept its last count
    assert tally.count(6000.0, NONE, NODE_JOB, runtime(1.0, 1.0)) == 1
    assert tally.reporting().tolist() == [True, True]


def test_a_failure_both_witnesses_see_is_counted_once_whichever_sees_it_first() -> None:
    tally = FailureTally.create(2)
    tally.count(0.0, NONE, NODE_JOB, runtime(0.0, 0.0))
    # A node of job 0 fails; its runtime counts the restart a few minutes later: one failure.
    assert tally.count(100.0, np.array([1]), NODE_JOB, runtime(0.0, 0.0)) == 1
    assert tally.count(400.0, NONE, NODE_JOB, runtime(1.0, 0.0)) == 0
    # Job 1's runtime counts first; the classifier fails its node after: one failure.
    assert tally.count(500.0, NONE, NODE_JOB, runtime(1.0, 1.0)) == 1
    assert tally.count(700.0, np.array([2]), NODE_JOB, runtime(1.0, 1.0)) == 0
    # An idle node has no runtime to share it with: counted.
    assert tally.count(800.0, np.array([3]), NODE_JOB, runtime(1.0, 1.0)) == 1
    # Past the window, a new failure of job 0 is a new failure.
    later = 100.0 + SAME_FAILURE_S + 1.0
    assert tally.count(later, NONE, NODE_JOB, runtime(2.0, 1.0)) == 1


def test_a_leaping_counter_counts_one_failure_per_window() -> None:
    tally = FailureTally.create(1)
    tally.count(0.0, NONE, NODE_JOB, runtime(0.0))
    assert tally.count(60.0, NONE, NODE_JOB, runtime(5.0)) == 1
    assert tally.count(120.0, NONE, NODE_JOB, runtime(6.0)) == 0
    assert tally.count(60.0 + SAME_FAILURE_S + 1.0, NONE, NODE_JOB, runtime(7.0)) == 1


def test_without_a_runtime_count_every_newly_failed_node_counts() -> None:
    tally = FailureTally.create(2)
    assert tally.count(0.0, np.array([0, 1, 3]), NODE_JOB, None) == 3
    assert not tally.reporting().any()


def test_what_only_a_runtime_sees_is_expected_for_the_jobs_that_report(topology: Topology) -> None:
    node_job = np.full(topology.count(EntityKind.NODE), -1, dtype=np.int64)
    node_job[:2], node_job[2:3] = 0, 1
    workload = workload_from_nodes(topology, node_job, (0, 1))
    tally = FailureTally.create(len(topology.jobs))
    assert tally.exposure_per_s(CFG.hazard, workload) == 0.0
    tally.count(0.0, NONE, node_job, np.array([0.0] + [math.nan] * (len(topology.jobs) - 1)))
    gpus = workload.job_gpus[0]
    per_day = CFG.hazard.software_per_gpu_day * gpus + CFG.hazard.base_per_day[EntityKind.LINK] * 2
    assert tally.exposure_per_s(CFG.hazard, workload) == pytest.approx(per_day / DAY_S)


def test_a_new_job_table_carries_each_job_s_count_and_a_joiner_starts_unseen() -> None:
    tally = FailureTally.create(2)
    tally.count(0.0, NONE, NODE_JOB, runtime(2.0, 5.0))
    tally.carry_over(np.array([1, -1]))  # job 1 is now first; a new job joined
    assert tally.runtime_last[0] == 5.0 and math.isnan(tally.runtime_last[1])
    assert tally.count(60.0, NONE, NODE_JOB, runtime(6.0, 9.0)) == 1  # the joiner's 9 is a first sight


def test_a_restart_seamguard_caused_is_no_failure(topology: Topology) -> None:
    """A launcher that counts every restart would make each drain a failure, raise the learned
    rate, and so drain more: acting, the engine's quarantine of a job's node marks that job's next
    runtime count as the restart it caused. Advised, a reroute, or past the window: counted."""
    node_job = np.full(topology.count(EntityKind.NODE), -1, dtype=np.int64)
    node_job[:2] = 0
    names = topology.names[EntityKind.NODE]
    tally = FailureTally.create(len(topology.jobs))
    reported = np.array([0.0] + [math.nan] * (len(topology.jobs) - 1))

    def decision(action: str, entity: str, mode: str = "act") -> DecisionRecord:
        return DecisionRecord(100.0, entity, action, mode, "gray", "quarantine")

    tally.count(0.0, NONE, node_job, reported)
    tally.moved(100.0, topology, node_job, [decision("drain_node", f"node/{names[2]}")])  # idle node
    tally.moved(100.0, topology, node_job, [decision("drain_node", f"node/{names[0]}", "advise")])
    tally.moved(100.0, topology, node_job, [decision("reroute", f"link/{names[0]}")])
    assert tally.count(200.0, NONE, node_job, reported + 1) == 1  # none of those restarted job 0
    tally.moved(2000.0, topology, node_job, [decision("disable_link", f"link/{names[1]}")])
    assert tally.count(2100.0, NONE, node_job, reported + 2) == 0  # its own restart
    assert tally.count(2000.0 + SAME_FAILURE_S + 1.0, NONE, node_job, reported + 3) == 1
    tally.carry_over(np.arange(len(topology.jobs)))
    tally.moved(
        5000.0, topology, node_job, [decision("island_domain", f"rack/{topology.names[EntityKind.RACK][0]}")]
    )
    assert tally.count(5100.0, NONE, node_job, reported + 4) == 0


@pytest.mark.parametrize("mode", ["act", "advise"])
def test_the_engine_marks_the_jobs_its_own_drains_restart(topology: Topology, mode: str) -> None:
    rng = np.random.default_rng(0)
    ctl = Controller(topology, CFG, mode=mode)
    for i in range(5):
        ctl.tick(1000.0 + 30.0 * i, normal_batch(topology, 1000.0 + 30.0 * i, rng))
    now, gpu = 1200.0, topology.index["gpu/n01/2"]
    xid = TelemetryBatch(np.array([gpu]), np.array([ctl.catalog["gpu.xid"].index]), np.array([now - 3]),
                         np.array([79.0]))  # fmt: skip
    res = ctl.tick(now, TelemetryBatch.concat([normal_batch(topology, now, rng), xid]))
    assert ("drain_node", "node/n01") in {(d.action, d.entity) for d in res.decisions}
    job = int(ctl.workload_at(now).node_job[topology.local[topology.index["node/n01"]]])
    assert job >= 0
    assert ctl.failures.moved_at[job] == (now if mode == "act" else -math.inf)


def _runtime_batch(topology: Topology, now: float, rng: np.random.Generator, count: float) -> Any:
    job = f"job/{topology.jobs[0].job}"
    return with_readings(
        topology, normal_batch(topology, now, rng), now, {(job, "job.failures_total"): count}
    )


def test_the_engine_learns_a_failure_its_classifier_never_saw(topology: Topology) -> None:
    rng = np.random.default_rng(0)
    planning, cells = Controller(topology, CFG), Controller(topology, CFG, plan_checkpoints=False)
    for i, count in enumerate([0.0, 0.0, 1.0, 1.0]):
        now = 1000.0 + 30.0 * (i + 1)
        batch = _runtime_batch(topology, now, rng, count)
        planning.tick(now, batch)
        cells.tick(now, batch)
        assert planning.new_failures == (1 if i == 2 else 0)
    assert (
        planning.learner.observed > 0.9 and cells.learner.observed == 0.0
    )  # a cell leaves it to its planner
    assert planning.exposure_per_s() > cells.exposure_per_s()


def test_the_twin_s_runtime_reports_its_failures_and_seamguard_learns_from_them() -> None:
    crashes = [
        {"kind": "software_crash", "target": "job/train", "onset_h": h, "ramp_h": 0.0} for h in (0.5, 1.2)
    ]
    world = build_world(scenario_from_mapping({**SMALL, "faults": crashes}), 0)
    twin = Twin(world, "seamguard")
    twin.run()
    train = next(j for j in twin.jobs if isinstance(j, TrainingJob))
    assert train.failures == 2
    learner = twin.policy.cells[0].controller.learner  # type: ignore[attr-defined]
    assert learner.observed > 1.5  # both crashes, which no part's state shows
    assert learner.scale() > 5.0
