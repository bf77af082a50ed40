"""A regular synthetic cluster (CDUs > racks > nodes > GPUs, leaf switches) and its job placement.

The generated inventory and job table are written in the telemetry contract's CSV format so
a synthetic run can be replayed through ``seamguard score`` exactly like recorded telemetry.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from seamguard.model.inventory import INVENTORY_OPTIONAL, INVENTORY_REQUIRED, Inventory, JobRecord, NodeRecord
from seamguard.model.states import JobClass

EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z: every synthetic run starts here (aligned to its tick)


@dataclass(frozen=True)
class ClusterSpec:
    """A regular fleet: every CDU cools the same number of racks, every rack holds the same nodes."""

    cdus: int
    racks_per_cdu: int
    nodes_per_rack: int
    gpus_per_node: int = 8
    nodes_per_leaf: int = 16
    storage: str = "ckpt0"
    gpu_model: str = "H100-SXM5-80GB"

    def __post_init__(self) -> None:
        for name in ("cdus", "racks_per_cdu", "nodes_per_rack", "gpus_per_node", "nodes_per_leaf"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ClusterSpec.{name} must be a positive integer, got {value!r}")
        if self.gpus_per_node > 64:
            raise ValueError(f"ClusterSpec.gpus_per_node must be at most 64, got {self.gpus_per_node}")
        if not self.storage or "/" in self.storage or any(c.isspace() for c in self.storage):
            raise ValueError(f"ClusterSpec.storage must be a bare name, got {self.storage!r}")

    @property
    def racks(self) -> int:
        return self.cdus * self.racks_per_cdu

    @property
    def nodes(self) -> int:
        return self.racks * self.nodes_per_rack

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


@dataclass(frozen=True)
class JobSpec:
    """A job to place; its start and end come from the scenario, its nodes from ``assign_jobs``."""

    name: str
    job_class: JobClass
    nodes: int
    storage: str = "ckpt0"

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or any(c.isspace() for c in self.name):
            raise ValueError(f"JobSpec.name must be a bare name, got {self.name!r}")
        if self.nodes < 1:
            raise ValueError(f"job {self.name!r}: nodes must be at least 1, got {self.nodes}")


def _width(count: int, least: int) -> int:
    """Zero-padding that keeps names sortable, growing past ``least`` digits for big fleets."""
    return max(least, len(str(max(count - 1, 0))))


def node_name(spec: ClusterSpec, i: int) -> str:
    """The name ``generate_cluster`` gives node ``i`` (scenarios use it to name fault targets)."""
    return f"n{i:0{_width(spec.nodes, 4)}d}"


def cdu_name(spec: ClusterSpec, i: int) -> str:
    return f"cdu{i:0{_width(spec.cdus, 1)}d}"


def generate_cluster(spec: ClusterSpec) -> Inventory:
    """Nodes numbered in rack order; one row per CDU, one PDU per rack, leaves by node number."""
    wr, wc = _width(spec.racks, 3), _width(spec.cdus, 1)
    wl = _width(-(-spec.nodes // spec.nodes_per_leaf), 2)
    records: list[NodeRecord] = []
    for i in range(spec.nodes):
        rack = i // spec.nodes_per_rack
        cdu = rack // spec.racks_per_cdu
        records.append(
            NodeRecord(
                node=node_name(spec, i),
                rack=f"r{rack:0{wr}d}",
                cdu=cdu_name(spec, cdu),
                leaf=f"leaf{i // spec.nodes_per_leaf:0{wl}d}",
                gpus=spec.gpus_per_node,
                row=f"row{cdu:0{wc}d}",
                pdu=f"pdu{rack:0{wr}d}",
                storage=spec.storage,
                model=spec.gpu_model,
            )
        )
    return Inventory(tuple(records))


def assign_jobs(
    inventory: Inventory, jobs: Sequence[JobSpec], start: float, end: float
) -> tuple[JobRecord, ...]:
    """Give each job the next contiguous block of nodes, in order, so placement is predictable."""
    if not end > start:
        raise ValueError(f"job end ({end}) must be after start ({start})")
    names = [n.node for n in inventory.nodes]
    need = sum(j.nodes for j in jobs)
    if need > len(names):
        raise ValueError(f"jobs need {need} nodes but the inventory has {len(names)}")
    seen: set[str] = set()
    out: list[JobRecord] = []
    at = 0
    for j in jobs:
        if j.name in seen:
            raise ValueError(f"job {j.name!r} listed twice")
        seen.add(j.name)
        out.append(JobRecord(j.name, j.job_class, tuple(names[at : at + j.nodes]), start, end, j.storage))
        at += j.nodes
    return tuple(out)


def write_inventory_csv(inventory: Inventory, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([*INVENTORY_REQUIRED, *INVENTORY_OPTIONAL])
        for n in inventory.nodes:
            w.writerow([getattr(n, col) for col in (*INVENTORY_REQUIRED, *INVENTORY_OPTIONAL)])


def write_jobs_csv(jobs: Sequence[JobRecord], path: Path) -> None:
    """The contract's five columns plus ``storage`` (read_jobs reads it when present) so that a
    job's checkpoint target survives the round trip."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["job", "job_class", "nodes", "start", "end", "storage"])
        for j in jobs:
            w.writerow(
                [
                    j.job,
                    j.job_class.value,
                    ";".join(j.nodes),
                    repr(float(j.start)),
                    repr(float(j.end)),
                    j.storage,
                ]
            )
