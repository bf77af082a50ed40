"""Checkpoint modes: live costs from the target's throughput now, and whether the copy survives."""

from __future__ import annotations

import numpy as np
import pytest

from seamguard.economics.checkpoint_modes import (
    JobCheckpoint,
    Mode,
    ModeCost,
    StoragePath,
    Threat,
    mode_costs,
)
from seamguard.model.states import State

# Four nodes in racks 0 and 1; their buddies (peer memory) in racks 2 and 3.
JOB = JobCheckpoint(
    size_gb=1000.0, changed_share=0.25, host_copy_gbps=400.0, overhead_s=5.0,
    nodes=np.array([0, 1, 2, 3]), racks=np.array([0, 0, 1, 1]),
    buddy_nodes=np.array([8, 9, 10, 11]), buddy_racks=np.array([2, 2, 3, 3]), peer_gbps=100.0,
)  # fmt: skip
OWN_ONLY = JobCheckpoint(
    **{**JOB.__dict__, "buddy_nodes": np.zeros(0, np.int64), "buddy_racks": np.zeros(0, np.int64)}
)
HEALTHY = StoragePath("ckpt0", write_gbps=40.0, read_gbps=60.0, state=State.HEALTHY)


def pick(costs: list[ModeCost], mode: Mode, target: str | None = None) -> ModeCost:
    return next(c for c in costs if c.mode is mode and (target is None or c.target == target))


def test_storage_saves_cost_what_the_path_delivers_now() -> None:
    costs = mode_costs(JOB, [HEALTHY], Threat())
    full, inc = pick(costs, Mode.FULL), pick(costs, Mode.INCREMENTAL)
    assert full.blocking_s == pytest.approx(1000 / 40 + 5) and full.durable_s == full.blocking_s
    assert inc.blocking_s == pytest.approx(250 / 40 + 5)
    assert inc.restore_s > full.restore_s  # restore replays the chain on top of the full copy
    slow = StoragePath("ckpt0", write_gbps=10.0, read_gbps=60.0, state=State.DEGRADED)
    assert pick(mode_costs(JOB, [slow], Threat()), Mode.FULL).blocking_s == pytest.approx(1000 / 10 + 5)


def test_a_recovery_unsafe_path_holds_no_valid_copy() -> None:
    unsafe = StoragePath("ckpt1", 40.0, 60.0, State.RECOVERY_UNSAFE)
    costs = mode_costs(JOB, [HEALTHY, unsafe], Threat())
    assert pick(costs, Mode.FULL, "ckpt0").validity == 1.0
    assert pick(costs, Mode.FULL, "ckpt1").validity == 0.0
    assert pick(costs, Mode.INCREMENTAL, "ckpt1").validity == 0.0
    failing = mode_costs(JOB, [HEALTHY], Threat(storage="ckpt0"))  # the path itself is the threat
    assert pick(failing, Mode.FULL).validity == 0.0


def test_a_memory_copy_survives_what_does_not_take_its_memory() -> None:
    gpu_off_the_bus = Threat()  # the host stays up: its memory with it
    rack_thermal = Threat(racks=frozenset({1}))
    host_crash = Threat(nodes=frozenset({2}))
    cdu_event = Threat(racks=frozenset({1, 3}))  # one CDU feeds racks 1 and 3
    own = {
        t: pick(mode_costs(OWN_ONLY, [HEALTHY], t), Mode.IN_MEMORY)
        for t in (gpu_off_the_bus, rack_thermal, host_crash)
    }
    assert own[gpu_off_the_bus].validity == 1.0 and own[gpu_off_the_bus].target == "host"
    assert own[rack_thermal].validity == 0.0 and own[host_crash].validity == 0.0
    peer = {
        t: pick(mode_costs(JOB, [HEALTHY], t), Mode.IN_MEMORY) for t in (rack_thermal, host_crash, cdu_event)
    }
    assert peer[rack_thermal].validity == 1.0 and peer[host_crash].validity == 1.0  # the buddies hold
    assert peer[cdu_event].validity == 0.0  # nodes 2, 3 and their buddies 10, 11 all under it
    assert peer[rack_thermal].target == "peer"
    assert peer[rack_thermal].blocking_s > own[rack_thermal].blocking_s  # the copy to peers costs


def test_tiered_blocks_like_memory_and_becomes_durable_in_the_background() -> None:
    costs = mode_costs(JOB, [HEALTHY], Threat(racks=frozenset({0, 1, 2, 3})))
    tiered, memory, full = pick(costs, Mode.TIERED), pick(costs, Mode.IN_MEMORY), pick(costs, Mode.FULL)
    assert tiered.blocking_s == pytest.approx(memory.blocking_s)
    assert tiered.blocking_s < full.blocking_s
    assert tiered.durable_s == pytest.approx(memory.blocking_s + 1000 / 40)
    assert memory.validity == 0.0 and tiered.validity == 1.0  # once persisted, the path holds it


def test_no_room_in_host_memory_means_storage_only() -> None:
    none = JobCheckpoint(**{**JOB.__dict__, "host_copy_gbps": 0.0})
    assert {c.mode for c in mode_costs(none, [HEALTHY], Threat())} == {Mode.FULL, Mode.INCREMENTAL}
