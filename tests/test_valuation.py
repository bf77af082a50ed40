"""Valuing actions on a suspect part: ski-rental escalation, and criticality changing the answer."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from seamguard.config import config_from_mapping
from seamguard.control.controller import Controller
from seamguard.diagnose.explain import explain
from seamguard.economics.job_value import slip_probability
from seamguard.economics.valuation import Situation, Step, escalate, loss_rate_gpu_h_per_h, value_steps
from seamguard.journal.sqlite import SqliteJournal
from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology, build_topology
from seamguard.render import render_explanation
from tests.conftest import small_inventory, small_jobs
from tests.test_controller import normal_batch

HORIZON = 6 * 3600.0


def slow_rank(weight: float, excess_per_day: float = 0.0) -> Situation:
    """A 512-GPU job held back 3% by one rank."""
    return Situation(job_gpus=512, slowdown=0.03, excess_rate_per_s=excess_per_day / 86400.0,
                     loss_per_failure_s=900.0, since_durable_s=600.0, save_s=30.0, rebalance_s=30.0,
                     restart_s=300.0, node_gpus=8, diagnose_s=7200.0, weight=weight)  # fmt: skip


def after(hours: float, s: Situation) -> Step:
    pace, risk = loss_rate_gpu_h_per_h(s)
    return escalate(value_steps(s, HORIZON, 0.5), (pace + risk) * hours).step


def test_the_ladder_is_climbed_only_as_the_loss_pays_for_each_step() -> None:
    s = slow_rank(1.0)
    steps = [after(h, s) for h in (0.0, 0.2, 1.0, 3.5, 12.0)]
    assert steps[0] is Step.IGNORE  # nothing paid yet: nothing bought
    order = list(Step)
    assert [order.index(x) for x in steps] == sorted(order.index(x) for x in steps)  # never back down
    assert Step.REPLACE_RANK in steps or Step.QUARANTINE in steps  # a lasting 3% is worth a restart
    cost = {v.step: v.cost_gpu_h for v in value_steps(s, HORIZON, 0.5)}
    pace, _ = loss_rate_gpu_h_per_h(s)
    just_short = (cost[Step.REPLACE_RANK] - 1e-6) / pace
    assert after(just_short, s) is not Step.REPLACE_RANK  # ski rental: not a moment before it is paid


def test_every_step_is_valued_term_by_term() -> None:
    """Round numbers that keep every term apart (the module docstring's formulas, worked by hand):
    7,200 GPUs (2 GPU-h per second of the job), weight 2, one extra failure an hour costing 600 s,
    a 2-hour horizon and half the pace recovered by a rebalance.

    pace = 2 x 0.1 x 7200 = 1440 GPU-h/h; risk = 2 x 1/h x 600 s x 2 GPU-h/s = 2400 GPU-h/h.
    A save now spares each of the 2 expected extra failures 1200 s of rework: 2 x 2 x 1200 x 2 = 9600.
    """
    s = Situation(job_gpus=7200, slowdown=0.1, excess_rate_per_s=1 / 3600.0, loss_per_failure_s=600.0,
                  since_durable_s=1200.0, save_s=60.0, rebalance_s=30.0, restart_s=240.0, node_gpus=8,
                  diagnose_s=1800.0, weight=2.0)  # fmt: skip
    assert loss_rate_gpu_h_per_h(s) == pytest.approx((1440.0, 2400.0), rel=1e-12)
    got = {
        v.step: (v.cost_gpu_h, v.benefit_gpu_h_per_h, v.horizon_net_gpu_h)
        for v in value_steps(s, 7200.0, 0.5)
    }
    assert got == {
        Step.IGNORE: (0.0, 0.0, 0.0),
        Step.REBALANCE: pytest.approx((60.0, 720.0, 2 * 720.0 - 60.0), rel=1e-12),  # 30 s pause x 2 GPU-h/s
        Step.CHECKPOINT_NOW: pytest.approx((120.0, 0.0, 9600.0 - 120.0), rel=1e-12),
        Step.REPLACE_RANK: pytest.approx((600.0, 3840.0, 2 * 3840.0 - 600.0), rel=1e-12),  # (60 + 240) x 2
        # ...plus the node's 8 GPUs out for the 1,800 s diagnosis: 4 GPU-h.
        Step.QUARANTINE: pytest.approx((604.0, 3840.0, 2 * 3840.0 - 604.0), rel=1e-12),
    }
    # With no spare node the swap and the drain also stop the job for the 1,800 s diagnosis:
    # (60 + 240 + 1800) x 2 = 4200 GPU-h; nothing else changes.
    waiting = {v.step: v.cost_gpu_h for v in value_steps(replace(s, waits=True), 7200.0, 0.5)}
    assert waiting == {**{k: v[0] for k, v in got.items()}, Step.REPLACE_RANK: pytest.approx(4200.0),
                       Step.QUARANTINE: pytest.approx(4204.0)}  # fmt: skip


def test_criticality_changes_the_answer() -> None:
    """The same degraded node an hour on: fine for an exploratory job, swapped out of a release run."""
    exploratory, release = after(1.0, slow_rank(0.25)), after(1.0, slow_rank(4.0))
    assert exploratory in (Step.IGNORE, Step.REBALANCE)
    assert release in (Step.REPLACE_RANK, Step.QUARANTINE)


def test_a_step_that_buys_nothing_is_never_taken() -> None:
    quiet = slow_rank(1.0)
    quiet = Situation(**{**quiet.__dict__, "slowdown": 0.0})  # no pace lost, no extra risk
    assert after(100.0, quiet) is Step.IGNORE
    risky = Situation(**{**quiet.__dict__, "excess_rate_per_s": 20 / 86400.0})  # 20 more failures a day
    assert after(2.0, risky) in (Step.REPLACE_RANK, Step.QUARANTINE, Step.CHECKPOINT_NOW)


def test_slip_risk_grows_with_the_failure_rate_and_the_slack_it_eats() -> None:
    week = 7 * 86400.0
    needed = 6 * 86400.0
    calm = slip_probability(needed, week, 1 / 86400.0, 3600.0)
    stormy = slip_probability(needed, week, 10 / 86400.0, 3600.0)
    assert 0.0 <= calm < stormy <= 1.0
    assert slip_probability(week + 1, week, 0.0, 3600.0) == 1.0  # it cannot fit even without failures
    assert slip_probability(needed, week, 0.0, 3600.0) == 0.0


def _straggler_run(topology: Topology, criticality: str, held: tuple[int, ...] = ()) -> list[str]:
    cfg = config_from_mapping({"checkpoint": {"jobs": {"train": {"criticality": criticality}}}})
    ctl = Controller(topology, cfg)
    ctl.held_nodes = np.array(held, dtype=np.int64)
    rng = np.random.default_rng(0)
    actions = []
    for i in range(240):  # two hours of one rank 8% slower than its job
        now = 1000.0 + 30.0 * (i + 1)
        batch = normal_batch(topology, now, rng, overrides={("gpu/n01/2", "gpu.step_time_s"): 2.16})
        result = ctl.tick(now, batch)
        actions += [d.action for d in result.decisions]
    return actions


@pytest.mark.parametrize("criticality", ["exploratory", "release"])
def test_the_engine_escalates_a_straggler_by_what_its_job_is_worth(
    topology: Topology, criticality: str
) -> None:
    """Whether by the harmful state (its harm weighted by the job's worth) or by the valued
    escalation, the engine swaps the straggler out of a release run and leaves an exploratory
    job's alone."""
    actions = _straggler_run(topology, criticality)
    swapped = any(a in ("replace_rank", "drain_node") for a in actions)
    assert swapped is (criticality == "release")


def test_a_release_run_s_straggler_is_kept_when_no_spare_would_take_its_place(topology: Topology) -> None:
    """The release run above, its one spare (n07) held by the safety layer: a swap would leave
    the whole job waiting for the node back, which neither the harm rule nor the ladder pays."""
    actions = _straggler_run(topology, "release", held=(7,))
    assert not any(a in ("replace_rank", "drain_node") for a in actions)


@pytest.mark.parametrize(
    ("spares", "ends_at", "restart_s", "swaps"),
    [(1, 1e7, np.nan, True), (0, 1e7, np.nan, False), (1, 4600.0, np.nan, False), (1, 1e7, 7200.0, False)],
)
def test_the_ladder_charges_a_swap_the_wait_for_want_of_a_spare_and_the_job_s_end(
    spares: int, ends_at: float, restart_s: float, swaps: bool
) -> None:
    """A degraded GPU 8% slow under a release run for two hours: with a spare the ladder climbs to
    a swap; with none, a swap or drain would stop the whole job for the node's diagnosis, and the
    ladder stops below them (and says why); nor is a swap bought for a job that ends within the
    hour, which has no time left to pay for its restart, nor for one whose own restart with its
    restore takes two hours (``JobEconomics.restart_s``; NaN: ``economics.restart_cost_s``)."""
    from seamguard.control.escalation import Escalation, JobSignals
    from seamguard.economics.job_value import JobEconomics
    from seamguard.model.states import State
    from seamguard.model.workload import active_jobs, build_workload

    cfg = config_from_mapping({})
    topology = build_topology(small_inventory(), tuple(replace(j, end=ends_at) for j in small_jobs()))
    workload = build_workload(topology, active_jobs(topology, 0.0))
    n_jobs = len(topology.jobs)
    full = np.full(n_jobs, np.nan)
    econ = JobEconomics(gpus=workload.job_gpus[:n_jobs].astype(float), expected_waste=full, useful_throughput=full,
                        failure_adjusted_gpus=full, since_durable_s=np.full(n_jobs, 600.0), rollback_gpu_h=full,
                        rollback_cost=full, slip_probability=full, loss_per_failure_s=np.full(n_jobs, 900.0),
                        weight=np.full(n_jobs, 4.0), restore_s=full, restart_s=np.full(n_jobs, restart_s))  # fmt: skip
    states = np.full(topology.n_entities, int(State.HEALTHY), dtype=np.int64)
    gpu = topology.index["gpu/n01/2"]
    states[gpu] = int(State.DEGRADED)
    slowdown = np.zeros(topology.count(EntityKind.GPU))
    slowdown[topology.local[gpu]] = 0.08
    ladder = Escalation(cfg, topology)
    signals = JobSignals(np.ones(n_jobs, dtype=bool), np.full(n_jobs, np.nan))
    decisions = []
    for i in range(240):
        found, _ = ladder.step(1000.0 + 30.0 * i, states, workload, np.zeros(topology.n_entities), slowdown, econ,
                               np.full(n_jobs, 30.0), signals, np.full(n_jobs, spares))  # fmt: skip
        decisions += found
    swapped = [d for d in decisions if d.action in ("replace_rank", "drain_node")]
    assert bool(swapped) is swaps
    if spares == 0:
        assert decisions and all("no spare node" in d.reason for d in decisions)


def test_a_degraded_part_is_valued_escalated_and_its_outcome_journaled_and_explained(
    topology: Topology, tmp_path: Path
) -> None:
    cfg = config_from_mapping({"checkpoint": {"jobs": {"train": {"criticality": "release"}}}})
    path = tmp_path / "j.sqlite"
    journal = SqliteJournal(path)
    ctl = Controller(topology, cfg, journal=journal)
    rng = np.random.default_rng(3)
    valued = []
    outcomes = []
    for i in range(400):  # two and a half hours running hot and 2.5% slow, then cooled
        now = 1000.0 + 30.0 * (i + 1)
        hot = 30 <= i < 330
        over = {
            ("gpu/n02/1", "gpu.temp_c"): 83.0 if hot else 65.0,
            ("gpu/n02/1", "gpu.step_time_s"): 2.05 if hot else 2.0,
        }
        result = ctl.tick(now, normal_batch(topology, now, rng, overrides=over))
        valued += [
            d
            for d in result.decisions
            if d.cause == "gpu/n02/1" and d.predicted_benefit_gpu_h == d.predicted_benefit_gpu_h
        ]
        outcomes += list(result.outcomes)
    assert valued, "a degraded GPU under a release run is valued"
    assert all(d.predicted_benefit_gpu_h > d.predicted_cost_gpu_h for d in valued)  # only worthwhile steps
    assert {o.action for o in outcomes} == {d.action for d in valued}  # each one audited once it cooled
    assert all("recovered or left the job" in o.note for o in outcomes)
    ex = explain(journal, cfg, valued[0].entity)
    assert ex.outcomes and ex.decisions
    console = Console(record=True, width=200)
    render_explanation(console, ex)
    text = console.export_text()
    assert "predicted cost / benefit" in text and "realised" in text
    journal.close()
