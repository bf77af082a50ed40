"""Blast radius on a fleet whose answer can be counted by hand (tests/conftest.py's small fleet:
8 nodes of 4 GPUs, leaves l0 = n00-n03 and l1 = n04-n07, racks of two nodes, CDU c1 = r2 + r3;
``train`` is synchronous on n00-n04, ``batch`` asynchronous on n05-n06)."""

from __future__ import annotations

import math

import pytest

from seamguard.diagnose.blast import domain_blast, part_blast, with_held_back
from seamguard.diagnose.modes import Finding, Mode
from seamguard.model.topology import build_topology
from seamguard.model.workload import build_workload
from tests.conftest import small_inventory, small_jobs

TOPO = build_topology(small_inventory(), small_jobs())
WL = build_workload(TOPO, (0, 1))


def finding(job: str, mode: Mode, entities: tuple[str, ...], rate: float) -> Finding:
    return Finding(job, mode, 0.8, entities, (), 0.0, 0.0, rate, "", None)


def test_a_domain_takes_down_its_gpus_and_every_synchronous_job_with_a_rank_under_it() -> None:
    by = {
        b.entity: b
        for b in domain_blast(TOPO, WL, ["switch/l1", "switch/l0", "cdu/c1", "rack/r3", "node/n07"])
    }
    # l1: 16 GPUs, 12 busy (train's n04 and batch's two nodes); train's 16 GPUs outside stop with it
    assert (by["switch/l1"].gpus, by["switch/l1"].busy_gpus, by["switch/l1"].takes_down_gpus) == (16, 12, 32)
    assert (by["switch/l1"].jobs, by["switch/l1"].n_jobs) == (("batch", "train"), 2)
    assert by["switch/l0"].takes_down_gpus == 16 + 4
    assert by["cdu/c1"].takes_down_gpus == 32
    # an asynchronous job loses only the ranks under the domain: the rack takes down its own 8
    assert (by["rack/r3"].takes_down_gpus, by["rack/r3"].jobs) == (8, ("batch",))
    assert (by["node/n07"].busy_gpus, by["node/n07"].takes_down_gpus, by["node/n07"].jobs) == (0, 4, ())


def test_the_fleet_top_is_ordered_by_what_it_takes_down() -> None:
    top = domain_blast(TOPO, WL, top=3)
    assert len(top) == 3
    assert [b.takes_down_gpus for b in top] == sorted((b.takes_down_gpus for b in top), reverse=True)
    assert top[0].takes_down_gpus == 32  # the CDU, the row or the leaf under the synchronous job's edge


def test_a_suspect_part_holds_back_the_healthy_gpus_of_every_job_it_slows() -> None:
    # train slowed 25 % by l1, where 4 of its 20 GPUs sit: each GPU loses 0.25/1.25 of its time
    train = finding("train", Mode.NETWORK, ("switch/l1",), 20 * 0.25 / 1.25)
    [f] = with_held_back(TOPO, WL, [train])
    assert f.held_back_gpu_s_per_s == pytest.approx(16 * 0.2)
    assert f.to_json()["held_back_gpu_s_per_s"] == pytest.approx(3.2)
    # the same leaf slowing batch (all 8 of its GPUs under it) holds back none of batch's
    batch = finding("batch", Mode.NETWORK, ("switch/l1",), 8 * 0.1)
    [b] = part_blast(TOPO, WL, [train, batch])
    assert (b.entity, b.jobs) == ("switch/l1", ("train", "batch"))
    assert b.held_back_gpu_s_per_s == pytest.approx(3.2)


def test_one_straggling_gpu_holds_back_the_rest_of_its_job() -> None:
    hung = finding("train", Mode.HANG, ("gpu/n02/1",), 20.0)  # a hang: every GPU loses all its time
    [f] = with_held_back(TOPO, WL, [hung])
    assert f.held_back_gpu_s_per_s == pytest.approx(19.0)


def test_an_input_stall_holds_back_nobody_for_a_parts_sake_and_a_healthy_job_is_not_valued() -> None:
    stall = finding("train", Mode.INPUT_STALL, (), 4.0)
    healthy = finding("batch", Mode.HEALTHY, (), 0.0)
    f, h = with_held_back(TOPO, WL, [stall, healthy])
    assert f.held_back_gpu_s_per_s == 0.0 and math.isnan(h.held_back_gpu_s_per_s)
    assert part_blast(TOPO, WL, [stall, healthy]) == []
