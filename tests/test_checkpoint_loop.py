"""The checkpoint control loop in the engine: plans journaled when they change, a save ordered
once per gap, and a failure rate learned from the failures seen."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seamguard.config import config_from_mapping, load_config
from seamguard.control.checkpoint_loop import CheckpointLoop
from seamguard.control.controller import Controller
from seamguard.economics.checkpoint_modes import Mode, StoragePath
from seamguard.economics.hazard import DAY_S, job_hazard
from seamguard.economics.hazard_learning import HazardLearner, learner_for
from seamguard.errors import InputError
from seamguard.model.entities import EntityKind
from seamguard.model.states import State
from seamguard.model.topology import Topology
from seamguard.model.workload import workload_from_nodes
from tests.test_controller import normal_batch, with_readings
from tests.test_hazard import fleet

CFG = load_config()
PATHS = [StoragePath("ckpt0", 40.0, 60.0, State.HEALTHY), StoragePath("ckpt1", 40.0, 60.0, State.HEALTHY)]


def _setup(config: object = CFG) -> tuple[Topology, CheckpointLoop, object, np.ndarray]:
    topo, node_job = fleet(2, 2, 4, {"a": range(0, 8), "b": range(8, 12)})
    loop = CheckpointLoop(config, topo)  # type: ignore[arg-type]
    return topo, loop, workload_from_nodes(topo, node_job), np.zeros(topo.n_entities)


def test_a_plan_is_journaled_when_it_changes_and_a_save_ordered_once_per_gap() -> None:
    topo, loop, work, zero = _setup()
    calm = job_hazard(CFG.hazard, topo, work, zero, zero, scale=1000.0)  # a fleet failing often
    states = np.zeros(2, dtype=np.int64)
    first = loop.step(0.0, work, calm, PATHS, np.array([60.0, 60.0]), states)  # type: ignore[arg-type]
    plans = [d for d in first.decisions if d.action == "checkpoint_plan"]
    assert {d.entity for d in plans} == {"job/a", "job/b"}
    assert all(" to ckpt0: " in d.reason and "expected waste" in d.reason for d in plans)
    again = loop.step(30.0, work, calm, PATHS, np.array([90.0, 90.0]), states)  # type: ignore[arg-type]
    assert again.decisions == ()  # nothing changed: nothing journaled
    tau = float(first.plans.interval_s[0])
    due = loop.step(60.0, work, calm, PATHS, np.array([tau + 1.0, 120.0]), states)  # type: ignore[arg-type]
    orders = [d for d in due.decisions if d.action == "checkpoint_now"]
    assert [d.entity for d in orders] == ["job/a"] and " to ckpt0 now: " in orders[0].reason
    assert 0 < orders[0].predicted_cost_gpu_h < orders[0].predicted_benefit_gpu_h  # worth it at this hazard
    assert all(d.predicted_cost_gpu_h > 0 for d in plans)  # a plan's expected loss over the horizon
    still = loop.step(90.0, work, calm, PATHS, np.array([tau + 31.0, 150.0]), states)  # type: ignore[arg-type]
    assert not [d for d in still.decisions if d.action == "checkpoint_now"]  # once per gap
    saved = loop.step(120.0, work, calm, PATHS, np.array([5.0, 180.0]), states)  # type: ignore[arg-type]
    assert not saved.decisions
    late = loop.step(150.0, work, calm, PATHS, np.array([tau + 2.0, 210.0]), states)  # type: ignore[arg-type]
    assert [d.entity for d in late.decisions if d.action == "checkpoint_now"] == ["job/a"]  # re-armed


def test_a_job_that_stops_running_gets_no_plan_journaled() -> None:
    """Ended or between placements, a job has nothing to plan: journaling "every surviving copy
    blocks longer than the collective timeout" for it would be false (the twin did, at its end)."""
    topo, loop, work, zero = _setup()
    calm = job_hazard(CFG.hazard, topo, work, zero, zero, scale=1000.0)
    states = np.zeros(2, dtype=np.int64)
    since = np.array([60.0, 60.0])
    loop.step(0.0, work, calm, PATHS, since, states)  # type: ignore[arg-type]
    node_job = np.asarray(work.node_job).copy()  # type: ignore[attr-defined]
    gone = workload_from_nodes(topo, np.where(node_job == 1, -1, node_job))  # "b" no longer runs
    quiet = loop.step(30.0, gone, calm, PATHS, since, states)  # type: ignore[arg-type]
    assert quiet.decisions == () and int(quiet.plans.choice[1]) == -1
    back = loop.step(60.0, work, calm, PATHS, since, states)  # type: ignore[arg-type]
    assert back.decisions == ()  # back with the plan it had: nothing changed to journal


def test_a_suspect_part_shortens_its_jobs_interval_and_is_named_as_the_cause() -> None:
    topo, loop, work, zero = _setup()
    states = np.zeros(2, dtype=np.int64)
    base = loop.step(0.0, work, job_hazard(CFG.hazard, topo, work, zero, zero), PATHS,  # type: ignore[arg-type]
                     np.full(2, np.nan), states)  # fmt: skip
    gfs = zero.copy()
    gpu = topo.index["gpu/n0003/1"]
    gfs[gpu] = 1.0
    hot_hazard = job_hazard(CFG.hazard, topo, work, gfs, zero)
    hot = loop.step(30.0, work, hot_hazard, PATHS, np.full(2, np.nan), states)  # type: ignore[arg-type]
    up = hot_hazard.rate_per_s[0] / job_hazard(CFG.hazard, topo, work, zero, zero).rate_per_s[0]
    assert up > 2  # the suspect part dominates the job's rate
    # Young/Daly: the interval scales as 1/sqrt(rate), less the save itself
    assert hot.plans.interval_s[0] < 1.1 * base.plans.interval_s[0] / math.sqrt(up)
    assert hot.plans.interval_s[1] == pytest.approx(base.plans.interval_s[1])  # job b does not run there
    changed = [d for d in hot.decisions if d.action == "checkpoint_plan"]
    assert [d.entity for d in changed] == ["job/a"] and changed[0].cause == "gpu/n0003/1"
    assert not [d for d in hot.decisions if d.action == "checkpoint_now"]  # no age reported: no order


def test_an_unsafe_path_and_a_job_without_host_memory_change_the_choice() -> None:
    cfg = config_from_mapping(
        {"checkpoint": {"jobs": {"b": {"host_copy_gbps_per_gpu": 0, "targets": ["ckpt1"]}}}}
    )
    topo, loop, work, zero = _setup(cfg)
    hz = job_hazard(cfg.hazard, topo, work, zero, zero, scale=100.0)
    paths = [StoragePath("ckpt0", 40.0, 60.0, State.RECOVERY_UNSAFE), PATHS[1]]
    tick = loop.step(0.0, work, hz, paths, np.full(2, np.nan), np.zeros(2, dtype=np.int64))
    chosen = [(tick.table.modes[c], tick.table.targets[c]) for c in tick.plans.choice.tolist()]
    assert chosen[0][1] == "ckpt1"  # never the unsafe path
    assert chosen[1][0] in (Mode.FULL, Mode.INCREMENTAL) and chosen[1][1] == "ckpt1"
    both_unsafe = [StoragePath(p.name, 40.0, 60.0, State.RECOVERY_UNSAFE) for p in PATHS]
    tick = loop.step(30.0, work, hz, both_unsafe, np.full(2, np.nan), np.zeros(2, dtype=np.int64))
    assert tick.table.modes[int(tick.plans.choice[0])] in (Mode.IN_MEMORY, Mode.TIERED)  # memory holds it
    assert tick.plans.choice[1] == -1  # no memory, no safe path: nothing protects it
    assert "lost to the likely failure" in loop.plan(1, 3600.0, 0.0).reason


def test_per_job_settings_name_only_what_differs_and_bad_ones_are_named() -> None:
    cfg = config_from_mapping({"checkpoint": {"jobs": {"a": {"state_gb_per_gpu": 9.0}}}})
    assert cfg.checkpoint.for_job("a").state_gb_per_gpu == 9.0
    assert cfg.checkpoint.for_job("a").overhead_s == cfg.checkpoint.defaults.overhead_s
    assert cfg.checkpoint.for_job("other") == cfg.checkpoint.defaults
    with pytest.raises(InputError, match=r"checkpoint\.jobs\.a\.changed_share"):
        config_from_mapping({"checkpoint": {"jobs": {"a": {"changed_share": 2}}}})
    with pytest.raises(InputError, match="criticality"):
        config_from_mapping({"checkpoint": {"defaults": {"criticality": "urgent"}}})
    topo, _ = fleet(2, 2, 4, {"a": range(0, 8)})
    with pytest.raises(ValueError, match="not in the job table: ghost"):
        CheckpointLoop(config_from_mapping({"checkpoint": {"jobs": {"ghost": {}}}}), topo)


def test_the_learner_finds_a_tripled_rate_and_a_small_fleet_barely_moves_it() -> None:
    big = HazardLearner(halflife_s=DAY_S, prior_failures=3.0)
    nominal = 10.0 / DAY_S  # ten failures a day expected
    rng = np.random.default_rng(1)
    for day in range(10):
        for hour in range(24):
            big.record((day * 24 + hour + 1) * 3600.0, nominal, int(rng.poisson(3 * 10 / 24)))
    assert big.scale() == pytest.approx(3.0, rel=0.2)
    small = HazardLearner(halflife_s=DAY_S, prior_failures=3.0)
    small.record(0.0, 0.1 / DAY_S, 0)
    small.record(3600.0, 0.1 / DAY_S, 1)  # one failure in a fleet expecting one every ten days
    assert 1.0 < small.scale() < (3.0 + 1.0) / 3.0


def test_a_run_of_failures_a_small_fleet_should_not_see_is_believed_within_hours() -> None:
    """The outlier component: a 64-GPU fleet expecting a failure every ten days."""
    nominal = 0.1 / DAY_S

    def after(failures_at_h: list[float], hours: float) -> float:
        learner = learner_for(CFG.hazard)
        learner.record(0.0, nominal, 0)
        for t in sorted({*failures_at_h, hours}):
            learner.record(t * 3600.0, nominal, failures_at_h.count(t))
        return learner.scale()

    quiet, one, two, three = (
        after([], 6.0),
        after([2.0], 6.0),
        after([2.0, 5.0], 6.0),
        after([1.0, 2.0, 5.0], 6.0),
    )
    # Nothing seen: the outlier prior's share above nominal, fading as the quiet hours add up.
    assert 1.5 < quiet < 2.5
    assert after([], 24.0 * 30) == pytest.approx(1.0, abs=0.15)  # a quiet month: nominal again
    # One failure the fleet should see once in ten days: more likely a fleet off nominal, not yet sure.
    assert 8.0 < one < 16.0
    assert two > 30.0  # two in six hours: this fleet is far off nominal
    assert three > two
    single = HazardLearner(DAY_S, CFG.hazard.learn_prior_failures)  # the nominal gamma alone
    single.record(0.0, nominal, 0)
    single.record(2 * 3600.0, nominal, 1)
    single.record(5 * 3600.0, nominal, 1)
    single.record(6 * 3600.0, nominal, 0)
    assert single.scale() < 2.0 < two / 5


def test_a_large_fleet_is_tracked_by_the_nominal_component_whatever_the_outlier_prior() -> None:
    nominal = 10.0 / DAY_S
    for factor in (1.0, 3.0):
        learner = learner_for(CFG.hazard)
        rng = np.random.default_rng(2)
        for hour in range(24 * 10):
            learner.record((hour + 1) * 3600.0, nominal, int(rng.poisson(factor * 10 / 24)))
        assert learner.scale() == pytest.approx(factor, rel=0.2)
    plain = HazardLearner(DAY_S, 3.0, outlier_share=0.0)
    plain.record(0.0, nominal, 0)
    plain.record(DAY_S, nominal, 4)
    assert plain.scale() == pytest.approx((3.0 + plain.observed) / (3.0 + plain.expected))


def test_the_outlier_prior_is_checked_at_load() -> None:
    with pytest.raises(InputError, match=r"hazard\.learn_outlier_share"):
        config_from_mapping({"hazard": {"learn_outlier_share": 1.0}})
    with pytest.raises(InputError, match=r"hazard\.learn_outlier_mean"):
        config_from_mapping({"hazard": {"learn_outlier_mean": 0.5}})


def test_the_engine_plans_every_running_job_and_counts_hard_failures(topology: Topology) -> None:
    ctl = Controller(topology, CFG)
    rng = np.random.default_rng(0)
    decisions = []
    for i in range(4):
        now = 1000.0 + 30.0 * (i + 1)
        hurt = {("gpu/n02/1", "gpu.ecc_dbe_total"): float(i >= 2)}
        remap = {("gpu/n01/2", "gpu.row_remap_pending"): 1.0}  # a failure precursor
        batch = with_readings(topology, normal_batch(topology, now, rng, overrides=hurt), now, remap)
        decisions.extend(ctl.tick(now, batch).decisions)
    plans = {d.entity for d in decisions if d.action == "checkpoint_plan"}
    assert plans == {"job/train", "job/batch"}
    assert ctl.learner.observed == pytest.approx(1.0, rel=1e-3)  # the GPU whose double-bit error failed it
    assert ctl.states[topology.index["gpu/n02/1"]] == int(State.FAILED)
    risk = ctl.job_risk("train")
    assert risk.top_part == "gpu/n01/2" and risk.mtbf_s < risk.nominal_mtbf_s
    assert {p.name for p in risk.storage} == set(topology.names[EntityKind.STORAGE])
    assert math.isfinite(risk.mtbf_s)
    with pytest.raises(KeyError, match="unknown job 'ghost'"):
        ctl.job_risk("ghost")
