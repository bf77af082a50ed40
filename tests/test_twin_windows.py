"""Windows mode: a large fleet observed only around its faults, on the same windows for every
policy, with quiet steps in between that keep the accounting exact."""

from __future__ import annotations

from typing import Any

import pytest

from seamguard.twin.policies.base import save_ahead_s
from seamguard.twin.results import RunResult
from seamguard.twin.scenario import Scenario, load_scenario, scenario_from_mapping
from seamguard.twin.sim import POLICIES as POLICY_NAMES
from seamguard.twin.sim import Twin
from seamguard.twin.windows import plan_windows
from seamguard.twin.world import build_world

# Two CDUs of four racks each; a cell is a rack. Three faults in three different cells, hours apart.
SPREAD: dict[str, Any] = {
    "name": "spread",
    "duration_h": 10,
    "cluster": {"cdus": 2, "racks_per_cdu": 4, "nodes_per_rack": 4, "gpus_per_node": 8, "storage": ["ckpt0", "ckpt1"]},
    "jobs": [
        {"name": "train", "class": "sync_training", "nodes": 24, "checkpoint_gb": 400, "fallback_storage": "ckpt1"},
        {"name": "batch", "class": "async_batch_inference", "nodes": 4},
    ],
    "faults": [
        {"kind": "hbm_ecc", "target": "gpu/n0002/1", "onset_h": 1.0, "ramp_h": 1.0},
        {"kind": "link_down", "target": "link/n0013", "onset_h": 4.0},
        {"kind": "software_crash", "target": "job/train", "onset_h": 7.0},
    ],
    "observation": {"mode": "windows", "cell_racks": 1, "quiet_step_min": 10},
}  # fmt: skip


@pytest.fixture(scope="module")
def windowed() -> Scenario:
    return scenario_from_mapping(SPREAD)


@pytest.fixture(scope="module")
def full() -> Scenario:
    data = {**SPREAD, "name": "spread-full", "observation": {"mode": "full"}}
    return scenario_from_mapping(data)


def test_windows_open_before_each_fault_in_its_cell_and_close_after(windowed: Scenario) -> None:
    world = build_world(windowed, 0)
    plan = plan_windows(world)
    by_kind = {f.kind: f for f in world.faults}
    hbm, link, crash = by_kind["hbm_ecc"], by_kind["link_down"], by_kind["software_crash"]
    warm, lead = windowed.observation.warmup_min * 60, save_ahead_s(world)
    # A fault with a precursor gets the detector's warm-up; a sudden one only the save-ahead lead.
    assert plan.open_t[hbm.fid] == pytest.approx(hbm.onset - max(warm, lead))
    assert plan.open_t[link.fid] == pytest.approx(link.onset - lead) and lead < warm
    assert plan.close_t[hbm.fid] == pytest.approx(hbm.hard_at)  # it ends hard after its ramp
    assert plan.cells[hbm.fid].tolist() == [0] and plan.cells[link.fid].tolist() == [
        3
    ]  # racks of n0002, n0013
    assert plan.cells[crash.fid].size == 0  # a job-level fault: the policy is called, no cell shown
    assert plan.next_open(world.start) == pytest.approx(min(plan.open_t))


def test_windowed_run_is_cheaper_and_its_buckets_still_sum(windowed: Scenario, full: Scenario) -> None:
    win = Twin(build_world(windowed, 0), "seamguard")
    res_w = win.run()
    res_f = Twin(build_world(full, 0), "seamguard").run()
    steps_f = round(full.duration_s / full.tick_s)
    assert res_f.engine_ticks == steps_f
    assert res_w.engine_ticks < steps_f / 2  # observed only around the three faults
    assert res_w.observed_node_days == pytest.approx(win.observed_node_s / 86400)
    assert 0 < res_w.observed_node_days < res_w.node_days / 2
    for job in res_w.jobs:
        assert sum(job.buckets) == pytest.approx(job.reserved_gpu_s, rel=1e-6), job.name
    # Both see the precursor and pull the failing node out before its double-bit error.
    for res in (res_w, res_f):
        hbm = next(f for f in res.faults if f.kind == "hbm_ecc")
        assert hbm.detected_at < hbm.hard_at, res.policy


def test_windows_open_on_fault_records_and_close_when_the_fault_is_over(windowed: Scenario) -> None:
    world = build_world(windowed, 1)
    ticks = {p: Twin(world, p).run().engine_ticks for p in POLICY_NAMES}
    # Same health checks, same repairs: the same windows.
    assert ticks["binary"] == ticks["young-daly"]
    # A window closes once its node is repaired: the oracle pulls nodes before they fail, so its
    # close sooner; the seamguard engine may hold a cell open while it still judges a node there.
    assert ticks["oracle"] <= ticks["binary"] <= ticks["seamguard"]


def test_oracle_moves_online_replicas_off_a_failing_rack() -> None:
    data: dict[str, Any] = {
        "name": "rack-power",
        "duration_h": 3,
        "cluster": {"cdus": 1, "racks_per_cdu": 4, "nodes_per_rack": 4, "gpus_per_node": 8},
        "jobs": [
            {"name": "decode", "class": "online_decode", "nodes": 8, "step_s": 0.05},
            {"name": "train", "class": "sync_training", "nodes": 4},
        ],
        "faults": [{"kind": "psu_loss", "target": "rack/r001", "onset_h": 0.5, "ramp_h": 0.1, "severity": 0.8, "duration_h": 2}],
    }  # fmt: skip
    sc = scenario_from_mapping(data)
    world = build_world(sc, 0)
    runs: dict[str, RunResult] = {p: Twin(world, p).run() for p in ("binary", "oracle")}

    def decode_lost(r: RunResult) -> float:
        job = next(j for j in r.jobs if j.name == "decode")
        return job.reserved_gpu_s - job.buckets[0]

    # Binary leaves the replicas on the power-braked rack, missing their latency objective; the
    # oracle moves them to the free rack at a replica restart each.
    assert decode_lost(runs["oracle"]) < 0.5 * decode_lost(runs["binary"])
    assert runs["oracle"].false_quarantines == 0


def test_lemons_shorten_the_nominal_mtbf_only_while_in_service() -> None:
    from seamguard.twin.jobs import TrainingJob
    from seamguard.twin.policies.base import job_mtbf_s
    from seamguard.twin.scenario import Lemons

    llama = load_scenario("llama3-16k-54d")

    def mtbf(nodes: int, multiplier: float = 10.0) -> float:
        sc = llama.model_copy(
            update={"lemons": Lemons(nodes=nodes, multiplier=multiplier), "duration_h": 1.0}
        )
        world = build_world(sc, 0)
        job = TrainingJob(0, sc.jobs[0], 8, world.start, world.end, 0, world.initial_nodes[0])
        return job_mtbf_s(world, job, None)

    base, few, many = mtbf(0), mtbf(64, 10.0), mtbf(64, 1000.0)
    assert base > few > many
    # A lemon a thousand times worse fails every few hours of service, then spends a day in
    # repair: the fleet's rate grows far less than a thousandfold share of it would say.
    assert base / many < 0.5 * (1 + 64 / 2112 * 999)


def test_seamguard_is_told_the_fleet_s_lemons_as_young_daly_is() -> None:
    """Both policies start from what an operator knows of the fleet: its hazard table raised by its
    lemons' share (``lemon_boost``), neither told which nodes they are. Without it seamguard planned
    its checkpoints at an eighth of the rate young-daly was told (held-out seed 8026)."""
    from seamguard.twin.jobs import TrainingJob
    from seamguard.twin.policies.base import job_mtbf_s, lemon_boost
    from seamguard.twin.policies.seamguard import _nominal_rates
    from seamguard.twin.scenario import Lemons

    llama = load_scenario("llama3-16k-54d")
    plain = build_world(llama.model_copy(update={"duration_h": 1.0}), 0)
    sour = build_world(
        llama.model_copy(update={"lemons": Lemons(nodes=64, multiplier=100.0), "duration_h": 1.0}), 0
    )
    boost = lemon_boost(sour)
    assert lemon_boost(plain) == 1.0 and boost > 2.0
    before, after = _nominal_rates(plain)["base_per_day"], _nominal_rates(sour)["base_per_day"]
    for kind in ("gpu", "node", "link"):
        assert after[kind] == pytest.approx(before[kind] * boost)
    assert _nominal_rates(sour)["software_per_gpu_day"] == _nominal_rates(plain)["software_per_gpu_day"]
    # young-daly's MTBF moves by the same factor, less the software share it also counts
    job = TrainingJob(0, llama.jobs[0], 8, plain.start, plain.end, 0, plain.initial_nodes[0])
    software = _nominal_rates(plain)["software_per_gpu_day"] * llama.jobs[0].nodes * 8
    hardware = 86400.0 / job_mtbf_s(plain, job, None) - software
    assert 86400.0 / job_mtbf_s(sour, job, None) == pytest.approx(hardware * boost + software)


def test_the_oracle_is_credited_only_for_the_faults_it_acts_on() -> None:
    data: dict[str, Any] = {
        "name": "same-tick",
        "duration_h": 2,
        "cluster": {"cdus": 2, "racks_per_cdu": 2, "nodes_per_rack": 4},
        "jobs": [{"name": "train", "class": "sync_training", "nodes": 8}],
        "faults": [
            {"kind": "cdu_flow_loss", "target": "cdu/cdu0", "onset_h": 1.0, "ramp_h": 0.2, "severity": 0.5, "duration_h": 0.5},
            # An idle node's slow GPU costs nobody anything: the oracle leaves it, in the same tick.
            {"kind": "slow_gpu", "target": "gpu/n0014/2", "onset_h": 1.0},
        ],
    }  # fmt: skip
    twin = Twin(build_world(scenario_from_mapping(data), 0), "oracle")
    twin.run()
    credited = {d.entity for d in twin.policy.detections}
    assert "cdu/cdu0" in credited and "gpu/n0014/2" not in credited
