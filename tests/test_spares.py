"""A swap needs a node to restart on and time to pay for its restart: the harm rule priced with both."""

from __future__ import annotations

import numpy as np
import pytest

from seamguard.config import load_config
from seamguard.control.rank_harm import rank_harm
from seamguard.control.spares import job_spares, nodes_to_swap, spares_by_class
from seamguard.economics.harm import straggler_harm, with_waits
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import JobRecord
from seamguard.model.states import JobClass, State
from seamguard.model.topology import Topology, build_topology
from seamguard.model.workload import active_jobs, build_workload
from tests.conftest import small_inventory

CFG = load_config()


def _topology(*jobs: tuple[str, JobClass, tuple[str, ...]]) -> Topology:
    return build_topology(small_inventory(), tuple(JobRecord(n, c, nodes, 0.0, 1e7) for n, c, nodes in jobs))


def _spares(topo: Topology, states: np.ndarray | None = None, held: list[int] | None = None) -> np.ndarray:
    workload = build_workload(topo, active_jobs(topo, 0.0))
    st = np.full(topo.n_entities, int(State.HEALTHY), dtype=np.int64) if states is None else states
    held_nodes = None if held is None else np.array(held, dtype=np.int64)
    return job_spares(topo, spares_by_class(CFG, topo, workload, st, None, held_nodes, 0.0))


def test_a_node_a_job_is_due_to_start_on_soon_is_no_spare() -> None:
    """n06 and n07 are free now, but job "next" starts on n06 in two hours: a swap taking n06
    would leave it short. A job due beyond the horizon (6 h), or one that has already ended,
    reserves nothing."""
    soon, later, ended = 7200.0, CFG.economics.horizon_s + 3600.0, -100.0
    for start, spares in ((soon, 1), (later, 2)):
        jobs = (JobRecord("train", JobClass.SYNC_TRAINING, ("n00", "n01", "n02", "n03", "n04"), 0.0, 1e7),
                JobRecord("batch", JobClass.ASYNC_BATCH_INFERENCE, ("n05",), 0.0, 1e7),
                JobRecord("next", JobClass.SYNC_TRAINING, ("n06",), start, 1e7),
                JobRecord("done", JobClass.SYNC_TRAINING, ("n07",), ended - 50.0, ended))  # fmt: skip
        topo = build_topology(small_inventory(), jobs)
        assert _spares(topo).tolist()[:2] == [spares, spares], start


def test_spares_are_free_admitted_unheld_nodes_of_the_job_s_class() -> None:
    topo = _topology(("train", JobClass.SYNC_TRAINING, ("n00", "n01", "n02", "n03", "n04")),
                     ("batch", JobClass.ASYNC_BATCH_INFERENCE, ("n05",)))  # fmt: skip
    assert _spares(topo).tolist() == [2, 2]  # n06, n07
    assert _spares(topo, held=[6]).tolist() == [1, 1]  # a held node is no spare
    states = np.full(topo.n_entities, int(State.HEALTHY), dtype=np.int64)
    states[topo.index["gpu/n07/1"]] = int(State.QUARANTINE)  # n07 denied to every class
    assert _spares(topo, states).tolist() == [1, 1]
    states[:] = int(State.HEALTHY)
    states[topo.index["cdu/c1"]] = int(State.DEGRADED)  # n04-n07: a gray CDU, avoided by training only
    spares = _spares(topo, states)
    assert spares[0] == 0 and spares[1] == 2


def test_a_swap_needs_a_spare_per_node_its_stragglers_sit_on() -> None:
    topo = _topology(("train", JobClass.SYNC_TRAINING, ("n00", "n01", "n02", "n03", "n04", "n05", "n06")))
    workload = build_workload(topo, active_jobs(topo, 0.0))
    straggling = np.zeros(topo.count(EntityKind.GPU), dtype=bool)
    assert nodes_to_swap(topo, workload, straggling).tolist() == [0]
    straggling[[0, 1]] = True  # two GPUs of n00: one node to swap
    assert nodes_to_swap(topo, workload, straggling).tolist() == [1]
    straggling[4] = True  # and one of n01
    assert nodes_to_swap(topo, workload, straggling).tolist() == [2]
    straggling[30] = True  # n07 runs no job: nothing to swap there
    assert nodes_to_swap(topo, workload, straggling).tolist() == [2]
    assert _spares(topo).tolist() == [1]  # n07: one spare, two nodes to swap


def test_a_swap_with_no_spare_is_charged_the_wait_for_the_node_back() -> None:
    econ = CFG.economics
    step = np.full(64, 2.0)
    step[7] = 2.2  # 10% slow: worth a swap to a spare, not a wait of diagnose_s for the node back
    gpu_job = np.zeros(64, dtype=np.int64)
    harm = straggler_harm(step, gpu_job, np.array([True]), np.array([64.0]), econ)
    assert harm.ratio[7] > econ.harmful_enter_ratio
    same = with_waits(harm, gpu_job, np.array([False]), np.array([64.0]), econ)
    assert same.ratio[7] == pytest.approx(harm.ratio[7]) and not same.waits.any()  # type: ignore[union-attr]
    waiting = with_waits(harm, gpu_job, np.array([True]), np.array([64.0]), econ)
    expected = (econ.restart_cost_s + econ.diagnose_s) * 64 / econ.horizon_s
    assert waiting.cost_gpus[7] == pytest.approx(expected)
    assert waiting.ratio[7] == pytest.approx(harm.gain_gpus[7] / expected)
    assert waiting.ratio[7] < econ.harmful_exit_ratio
    assert waiting.waits is not None and waiting.waits[7] and waiting.waits.sum() == 1
    step[7] = 4.0  # half the job's pace lost: worth even the wait
    slow = with_waits(straggler_harm(step, gpu_job, np.array([True]), np.array([64.0]), econ), gpu_job,
                      np.array([True]), np.array([64.0]), econ)  # fmt: skip
    assert slow.ratio[7] > econ.harmful_enter_ratio


def test_a_swap_is_amortised_only_over_the_time_its_job_has_left() -> None:
    econ = CFG.economics
    step = np.full(64, 2.0)
    step[7] = 2.2
    gpu_job = np.zeros(64, dtype=np.int64)
    args = (step, gpu_job, np.array([True]), np.array([64.0]), econ, None)
    far = straggler_harm(*args, np.array([np.inf]))
    assert far.ratio[7] == pytest.approx(straggler_harm(*args).ratio[7])
    assert far.ratio[7] > econ.harmful_enter_ratio
    assert far.cost_gpus[7] == pytest.approx(econ.restart_cost_s * 64 / econ.horizon_s)
    near = straggler_harm(*args, np.array([1800.0]))  # half an hour left: the restart cannot pay
    assert near.cost_gpus[7] == pytest.approx(econ.restart_cost_s * 64 / 1800.0)
    assert near.ratio[7] < econ.harmful_exit_ratio
    waiting = with_waits(near, gpu_job, np.array([True]), np.array([64.0]), econ)
    assert waiting.cost_gpus[7] == pytest.approx((econ.restart_cost_s + econ.diagnose_s) * 64 / 1800.0)
    ended = straggler_harm(*args, np.array([-5.0]))  # past its end: never worth a swap
    assert np.isfinite(ended.ratio).all() and ended.ratio[7] < econ.harmful_exit_ratio


def test_a_swap_costs_the_job_its_save_its_restart_and_its_restore() -> None:
    """The per-rank harm prices a swap as the ladder does (``valuation.planned_swap_s``): the save
    before it, then the job's own restart with its restore; a job with no plan yet saves nothing."""
    topo = _topology(("train", JobClass.SYNC_TRAINING, ("n00", "n01", "n02", "n03", "n04")))
    workload = build_workload(topo, active_jobs(topo, 0.0))
    states = np.full(topo.n_entities, int(State.HEALTHY), dtype=np.int64)
    pace = np.where(workload.gpu_job >= 0, 2.0, np.nan)
    slow = topo.index["gpu/n01/2"]
    pace[int(topo.local[slow])] = 2.2
    weight = np.ones(1)

    def ratio(restart_s: float | None, save_s: float | None) -> float:
        restart = None if restart_s is None else np.array([restart_s])
        save = None if save_s is None else np.array([save_s])
        found = rank_harm(CFG, topo, workload, pace, weight, states, None, None, 0.0, restart, save)
        return float(found.ratio[slow])

    default = ratio(None, None)  # no economics yet: economics.restart_cost_s
    assert default > CFG.economics.harmful_enter_ratio
    assert ratio(900.0, 300.0) == pytest.approx(default * CFG.economics.restart_cost_s / 1200.0)
    assert ratio(900.0, float("nan")) == pytest.approx(default * CFG.economics.restart_cost_s / 900.0)
    assert ratio(7200.0, 60.0) < CFG.economics.harmful_exit_ratio  # a two-hour restart: keep the rank
