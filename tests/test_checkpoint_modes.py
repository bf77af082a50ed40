"""Checkpoint modes: live costs from the target's throughput now, and whether the copy survives."""

from __future__ import annotations

import numpy as np
import pytest

from seamguard.economics.checkpoint_modes import (
    JobArrays,
    JobCheckpoint,
    Mode,
    ModeCost,
    StoragePath,
    Survival,
    cost_table,
    mode_costs,
)
from seamguard.model.states import State

JOB = JobCheckpoint(size_gb=1000.0, changed_share=0.25, host_copy_gbps=400.0, peer_gbps=100.0, overhead_s=5.0)
OWN_ONLY = JobCheckpoint(**{**JOB.__dict__, "peer_gbps": 0.0})
HEALTHY = StoragePath("ckpt0", write_gbps=40.0, read_gbps=60.0, state=State.HEALTHY)


def pick(costs: list[ModeCost], mode: Mode, target: str | None = None) -> ModeCost:
    return next(c for c in costs if c.mode is mode and (target is None or c.target == target))


def test_storage_saves_cost_what_the_path_delivers_now() -> None:
    costs = mode_costs(JOB, [HEALTHY], Survival())
    full, inc = pick(costs, Mode.FULL), pick(costs, Mode.INCREMENTAL)
    assert full.blocking_s == pytest.approx(1000 / 40 + 5) and full.durable_s == full.blocking_s
    # A full save, then three writing a quarter of the state: priced as the cycle's mean.
    assert inc.blocking_s == pytest.approx((full.blocking_s + 3 * (250 / 40 + 5)) / 4)
    assert inc.restore_s == pytest.approx(full.restore_s + 1.5 * 250 / 60)  # the base and half the chain
    slow = StoragePath("ckpt0", write_gbps=10.0, read_gbps=60.0, state=State.DEGRADED)
    assert pick(mode_costs(JOB, [slow], Survival()), Mode.FULL).blocking_s == pytest.approx(1000 / 10 + 5)


def test_a_recovery_unsafe_path_holds_no_valid_copy() -> None:
    unsafe = StoragePath("ckpt1", 40.0, 60.0, State.RECOVERY_UNSAFE)
    costs = mode_costs(JOB, [HEALTHY, unsafe], Survival())
    assert pick(costs, Mode.FULL, "ckpt0").validity == 1.0
    assert pick(costs, Mode.FULL, "ckpt1").validity == 0.0
    assert pick(costs, Mode.INCREMENTAL, "ckpt1").validity == 0.0


def test_a_memory_copy_is_worth_what_survives_the_likely_failure() -> None:
    host_crash_likely = Survival(host=0.2, peer=1.0)
    own = pick(mode_costs(OWN_ONLY, [HEALTHY], host_crash_likely), Mode.IN_MEMORY)
    peer = pick(mode_costs(JOB, [HEALTHY], host_crash_likely), Mode.IN_MEMORY)
    assert own.validity == pytest.approx(0.2)  # own host memory goes with the host
    assert peer.validity == pytest.approx(1.0)  # the buddy in another domain holds the shard
    assert peer.blocking_s > own.blocking_s  # the copy to peers costs
    assert own.blocking_s == pytest.approx(1000 / 400 + 5)


def test_tiered_blocks_like_memory_and_becomes_durable_in_the_background() -> None:
    costs = mode_costs(OWN_ONLY, [HEALTHY], Survival(host=0.0))
    tiered, memory, full = pick(costs, Mode.TIERED), pick(costs, Mode.IN_MEMORY), pick(costs, Mode.FULL)
    assert tiered.blocking_s == pytest.approx(memory.blocking_s)
    assert tiered.blocking_s < full.blocking_s
    assert tiered.durable_s == pytest.approx(memory.blocking_s + 1000 / 40)
    assert memory.validity == 0.0 and tiered.validity == 1.0  # once persisted, the path holds it
    assert tiered.restore_s < full.restore_s  # reads memory when it holds


def test_no_room_in_host_memory_means_storage_only() -> None:
    none = JobCheckpoint(**{**JOB.__dict__, "host_copy_gbps": 0.0})
    assert {c.mode for c in mode_costs(none, [HEALTHY], Survival())} == {Mode.FULL, Mode.INCREMENTAL}


def test_the_table_prices_many_jobs_like_one_at_a_time() -> None:
    rng = np.random.default_rng(7)
    n = 50
    arrays = JobArrays(
        size_gb=rng.uniform(10, 5000, n), changed_share=rng.uniform(0.1, 0.5, n),
        host_copy_gbps=rng.choice([0.0, 300.0], n), peer_gbps=rng.choice([0.0, 80.0], n),
        overhead_s=np.full(n, 5.0), incremental_every=np.full(n, 4.0), host_survival=rng.uniform(0, 1, n), peer_survival=np.ones(n),
        uses_path=rng.uniform(size=(n, 2)) < 0.7,
    )  # fmt: skip
    paths = [HEALTHY, StoragePath("ckpt1", 5.0, 9.0, State.DEGRADED)]
    table = cost_table(arrays, paths)
    for j in range(n):
        job = JobCheckpoint(float(arrays.size_gb[j]), float(arrays.changed_share[j]),
                            float(arrays.host_copy_gbps[j]), float(arrays.peer_gbps[j]), 5.0)  # fmt: skip
        one = mode_costs(job, paths, Survival(float(arrays.host_survival[j]), 1.0))
        for cost in table.row(j):
            if cost.mode in (Mode.IN_MEMORY, Mode.TIERED) and job.host_copy_gbps <= 0:
                assert cost.validity == 0.0  # no memory copy to speak of
                continue
            same = pick(one, cost.mode, cost.target)
            assert cost.blocking_s == pytest.approx(same.blocking_s)
            used = cost.target == "memory" or arrays.uses_path[j, [p.name for p in paths].index(cost.target)]
            if used:
                assert cost.validity == pytest.approx(same.validity)
            elif cost.mode is Mode.TIERED:  # not one of its targets: no tiered save there
                assert cost.validity == 0.0
            else:
                assert cost.validity == 0.0
