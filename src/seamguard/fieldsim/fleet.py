"""The field fleet: 448 GPUs of two models, its racks, CDUs, leaves, storage and job table.

40 H100 nodes (8 GPUs) and 32 L40S nodes (4 GPUs), four nodes to a rack, a leaf switch per
rack (top of rack), four CDUs (two per model), two storage backends. Work is laid out in
rack-sized *slots* so that faults and confounders can be placed on disjoint parts of the
fleet; each slot's job starts, ends and restarts at its own times (job churn), and some
nodes stay idle. Per seed only the churn times and which slots checkpoint to which backend
change; the inventory's shape is fixed so that runs are comparable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.fieldsim.hardware import H100, L40S, MODEL_BY_NAME, GpuModel
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import Inventory, JobRecord, NodeRecord
from seamguard.model.states import TRAINING_CLASSES, JobClass
from seamguard.model.topology import Topology, build_topology

IntArray = npt.NDArray[np.int64]
NODES_PER_RACK = 4
HOUR = 3600.0
MINUTE = 60.0

# (prefix, model, nodes, racks per CDU)
_GROUPS: tuple[tuple[str, GpuModel, int, int], ...] = (("hn", H100, 40, 5), ("ln", L40S, 32, 4))


@dataclass(frozen=True)
class Slot:
    """A rack-aligned piece of work; ``pattern`` says how its job comes and goes."""

    name: str
    job_class: JobClass
    nodes: tuple[str, ...]
    pattern: str  # always | restart | restart2 | late_start | early_end | window

    @property
    def training(self) -> bool:
        return self.job_class in TRAINING_CLASSES


def _names(prefix: str, first: int, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i:02d}" for i in range(first, first + count))


SYNC, ASYNC = JobClass.SYNC_TRAINING, JobClass.ASYNC_BATCH_INFERENCE
SLOTS: tuple[Slot, ...] = (
    Slot("llm-a", SYNC, _names("hn", 0, 8), "always"),
    Slot("llm-b", SYNC, _names("hn", 8, 4), "restart"),
    Slot("ft-c", SYNC, _names("hn", 12, 4), "late_start"),
    Slot("serve-h", ASYNC, _names("hn", 16, 2), "always"),  # hn18, hn19 idle
    Slot("llm-d", SYNC, _names("hn", 20, 8), "always"),
    Slot("llm-e", SYNC, _names("hn", 28, 4), "always"),
    Slot("ft-f", SYNC, _names("hn", 32, 4), "early_end"),
    Slot("sweep-g", SYNC, _names("hn", 36, 4), "window"),
    Slot("vis-h", SYNC, _names("ln", 0, 8), "always"),
    Slot("vis-i", SYNC, _names("ln", 8, 4), "restart2"),
    Slot("serve-l", ASYNC, _names("ln", 12, 4), "always"),
    Slot("vis-j", SYNC, _names("ln", 16, 4), "always"),
    Slot("vis-k", SYNC, _names("ln", 20, 4), "late_start"),
    Slot("serve-m", ASYNC, _names("ln", 24, 2), "always"),  # ln26, ln27 idle
    Slot("vis-n", SYNC, _names("ln", 28, 4), "always"),
)
TRAINING_SLOTS: tuple[str, ...] = tuple(s.name for s in SLOTS if s.training)
SLOT_BY_NAME: dict[str, Slot] = {s.name: s for s in SLOTS}
STORAGE_NAMES: tuple[str, str] = ("ckpt-a", "ckpt-b")


@dataclass(frozen=True)
class StoragePlan:
    """Which backend most slots checkpoint to, and the few that use the other one."""

    main: str
    minor: str
    minor_slots: frozenset[str]

    def of(self, slot: str) -> str:
        return self.minor if slot in self.minor_slots else self.main


def inventory(storage: StoragePlan) -> Inventory:
    """Nodes in rack order; a node's ``storage`` is its slot's checkpoint backend."""
    slot_of = {n: s.name for s in SLOTS for n in s.nodes}
    records: list[NodeRecord] = []
    rack0 = cdu0 = 0
    for prefix, model, count, racks_per_cdu in _GROUPS:
        for i in range(count):
            node = f"{prefix}{i:02d}"
            rack = rack0 + i // NODES_PER_RACK
            cdu = cdu0 + (i // NODES_PER_RACK) // racks_per_cdu
            slot = slot_of.get(node)
            records.append(
                NodeRecord(
                    node=node, rack=f"r{rack:02d}", cdu=f"cdu{cdu}", leaf=f"leaf{rack:02d}",
                    gpus=model.gpus_per_node, row=f"row{cdu}", pdu=f"pdu{rack:02d}",
                    storage=storage.of(slot) if slot else storage.main, model=model.name,
                )
            )  # fmt: skip
        rack0 += count // NODES_PER_RACK
        cdu0 += (count // NODES_PER_RACK) // racks_per_cdu
    return Inventory(tuple(records))


def job_records(
    rng: np.random.Generator, start: float, duration_s: float, storage: StoragePlan
) -> tuple[tuple[JobRecord, ...], tuple[str, ...]]:
    """Each slot's job records (a restart is a new record on the same nodes) and their slots.

    Churn times are fractions of the run so that a short run still sees jobs come and go;
    a restart follows its end by 5-15 minutes (less in a short run)."""
    d = duration_s
    far = start + d
    out: list[JobRecord] = []
    slots: list[str] = []

    def gap() -> float:
        return float(min(rng.uniform(5 * MINUTE, 15 * MINUTE), 0.05 * d))

    for s in SLOTS:
        before = start - float(rng.uniform(1 * HOUR, 20 * HOUR))
        after = far + float(rng.uniform(1 * HOUR, 20 * HOUR))
        if s.pattern == "always":
            windows = [(before, after)]
        elif s.pattern == "restart":
            cut = start + float(rng.uniform(0.35, 0.5)) * d
            windows = [(before, cut), (cut + gap(), after)]
        elif s.pattern == "restart2":
            cut1, cut2 = start + float(rng.uniform(0.25, 0.35)) * d, start + float(rng.uniform(0.6, 0.7)) * d
            back1 = cut1 + gap()
            windows = [(before, cut1), (back1, cut2), (cut2 + gap(), after)]
        elif s.pattern == "late_start":
            windows = [(start + float(rng.uniform(0.15, 0.3)) * d, after)]
        elif s.pattern == "early_end":
            windows = [(before, start + float(rng.uniform(0.6, 0.75)) * d)]
        elif s.pattern == "window":
            windows = [
                (start + float(rng.uniform(0.25, 0.35)) * d, start + float(rng.uniform(0.55, 0.65)) * d)
            ]
        else:  # pragma: no cover - SLOTS is a constant
            raise ValueError(f"unknown churn pattern {s.pattern!r}")
        for i, (a, b) in enumerate(windows):
            name = s.name if i == 0 else f"{s.name}.r{i}"
            out.append(JobRecord(name, s.job_class, s.nodes, a, b, storage.of(s.name)))
            slots.append(s.name)
    return tuple(out), tuple(slots)


@dataclass(frozen=True)
class Fleet:
    """The inventory, job table and topology, with per-entity hardware facts as arrays."""

    inventory: Inventory
    jobs: tuple[JobRecord, ...]
    job_slot: tuple[str, ...]  # per job record: its slot
    topology: Topology
    node_model: tuple[GpuModel, ...]  # per node (local index)
    node_is_h100: npt.NDArray[np.bool_]  # per node
    gpu_is_h100: npt.NDArray[np.bool_]  # per GPU
    job_nodes: tuple[IntArray, ...]  # per job record: node local indices
    job_gpus: tuple[IntArray, ...]  # per job record: GPU local indices
    storage_of_job: IntArray  # per job record: storage local index

    @property
    def n_gpus(self) -> int:
        return self.topology.count(EntityKind.GPU)

    @property
    def n_nodes(self) -> int:
        return self.topology.count(EntityKind.NODE)

    def gid(self, kind: EntityKind, local: int) -> str:
        """The entity id of local index ``local`` of ``kind``."""
        return self.topology.ids[int(self.topology.members[kind][local])]


def build_fleet(rng: np.random.Generator, start: float, duration_s: float, storage: StoragePlan) -> Fleet:
    inv = inventory(storage)
    jobs, job_slot = job_records(rng, start, duration_s, storage)
    topo = build_topology(inv, jobs)
    node_model = tuple(MODEL_BY_NAME[r.model] for r in inv.nodes)
    node_is_h100 = np.array([m is H100 for m in node_model], dtype=bool)
    node_ix = {n: i for i, n in enumerate(topo.names[EntityKind.NODE])}
    sto_ix = {n: i for i, n in enumerate(topo.names[EntityKind.STORAGE])}
    job_nodes = tuple(np.array([node_ix[n] for n in j.nodes], dtype=np.int64) for j in jobs)
    job_gpus = tuple(np.flatnonzero(np.isin(topo.gpu_node, nodes)).astype(np.int64) for nodes in job_nodes)
    return Fleet(
        inventory=inv,
        jobs=jobs,
        job_slot=job_slot,
        topology=topo,
        node_model=node_model,
        node_is_h100=node_is_h100,
        gpu_is_h100=node_is_h100[topo.gpu_node],
        job_nodes=job_nodes,
        job_gpus=job_gpus,
        storage_of_job=np.array([sto_ix[j.storage] for j in jobs], dtype=np.int64),
    )
