"""Shared fixtures: a small fleet built through the real inventory and topology code."""

from __future__ import annotations

from pathlib import Path

import pytest

from seamguard.model.inventory import Inventory, JobRecord, NodeRecord
from seamguard.model.states import JobClass
from seamguard.model.topology import Topology, build_topology


def small_inventory(
    nodes: int = 8, gpus: int = 4, racks_per_cdu: int = 2, nodes_per_rack: int = 2
) -> Inventory:
    records = []
    for i in range(nodes):
        rack = i // nodes_per_rack
        records.append(
            NodeRecord(
                node=f"n{i:02d}", rack=f"r{rack}", cdu=f"c{rack // racks_per_cdu}", leaf=f"l{i // 4}",
                gpus=gpus, storage="ckpt0",
            )
        )  # fmt: skip
    return Inventory(tuple(records))


def small_jobs(start: float = 0.0) -> tuple[JobRecord, ...]:
    return (
        JobRecord("train", JobClass.SYNC_TRAINING, ("n00", "n01", "n02", "n03", "n04"), start, start + 1e7),
        JobRecord("batch", JobClass.ASYNC_BATCH_INFERENCE, ("n05", "n06"), start, start + 1e7),
    )


@pytest.fixture
def topology() -> Topology:
    return build_topology(small_inventory(), small_jobs())


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path
