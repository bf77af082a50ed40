"""A world change: the topology the engine runs on, replaced while it runs.

Jobs start and end every Slurm poll; nodes join and leave the inventory now and then. Either way
the engine gets a new ``Topology`` and a ``WorldChange`` saying, per kind and for the global
index, which old entity each new one is (``-1``: it joined). Every stateful part of the engine
carries its arrays over with ``carry``: an entity that stays keeps its values, one that joined
starts as on a fresh start, one that left is dropped.

Two ways to a new topology: ``with_jobs`` when only the job table changed (the frequent case:
the JOB block sits at the tail of the global index, so every other entity keeps its indices and
the structure arrays, the containment matrix and the name index are shared, not rebuilt), and
``build_topology`` plus ``world_change`` when the inventory changed (rare: everything is rebuilt
and matched by entity id).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from seamguard.model.entities import EntityKind
from seamguard.model.inventory import Inventory, JobRecord, NodeRecord
from seamguard.model.topology import KIND_CODE, KINDS, IntArray, Topology

ArrayT = TypeVar("ArrayT", bound=npt.NDArray[Any])


@dataclass(frozen=True)
class WorldChange:
    """From ``old`` to ``new``: per kind, new local index -> old local index (-1: joined), and the
    same for the global index. ``jobs_only``: nothing but the JOB block moved."""

    old: Topology
    new: Topology
    kinds: dict[EntityKind, IntArray]
    entities: IntArray
    jobs_only: bool

    def kind(self, kind: EntityKind) -> IntArray:
        return self.kinds[kind]

    def same(self, kind: EntityKind) -> bool:
        """True when ``kind``'s entities kept their local indices (nothing of the kind joined or left)."""
        if self.jobs_only:
            return kind is not EntityKind.JOB
        fwd = self.kinds[kind]
        return fwd.size == self.old.count(kind) and bool(np.array_equal(fwd, np.arange(fwd.size)))

    def back(self, kind: EntityKind | None = None) -> IntArray:
        """The inverse map: old index (local of ``kind``, or global) -> new index, -1 for one that left."""
        fwd = self.entities if kind is None else self.kinds[kind]
        return invert(fwd, self.old.n_entities if kind is None else self.old.count(kind))

    def joined(self, kind: EntityKind) -> tuple[str, ...]:
        names = self.new.names[kind]
        return tuple(names[i] for i in np.flatnonzero(self.kinds[kind] < 0).tolist())

    def left(self, kind: EntityKind) -> tuple[str, ...]:
        names = self.old.names[kind]
        return tuple(names[i] for i in np.flatnonzero(self.back(kind) < 0).tolist())

    def summary(self, shown: int = 5) -> str:
        """One line: what joined and what left, per kind (nodes and jobs first), '' when nothing did."""
        parts: list[str] = []
        for kind in (
            EntityKind.NODE,
            EntityKind.JOB,
            *(k for k in KINDS if k not in (EntityKind.NODE, EntityKind.JOB)),
        ):
            if kind in (EntityKind.GPU, EntityKind.LINK, EntityKind.MIG):
                continue  # they follow their node
            for verb, names in (("joined", self.joined(kind)), ("left", self.left(kind))):
                if names:
                    more = f" and {len(names) - shown} more" if len(names) > shown else ""
                    parts.append(f"{len(names)} {kind.value}(s) {verb}: {', '.join(names[:shown])}{more}")
        return "; ".join(parts)


def invert(mapping: IntArray, size: int) -> IntArray:
    """``mapping`` (new -> old, -1: joined) turned round: old -> new for ``size`` old indices, -1
    for one that left."""
    out = np.full(size, -1, dtype=np.int64)
    kept = mapping >= 0
    out[mapping[kept]] = np.flatnonzero(kept)
    return out


def carry(values: ArrayT, mapping: IntArray, fill: object, axis: int = 0) -> ArrayT:
    """``values`` re-indexed along ``axis`` by ``mapping`` (new -> old, -1: joined), joiners set to
    ``fill``: what an entity that stays had, and what a fresh start gives one that joined."""
    shape = list(values.shape)
    shape[axis] = mapping.size
    if values.shape[axis] == 0 or mapping.size == 0:
        return cast(ArrayT, np.full(shape, fill, dtype=values.dtype))
    out = np.take(values, np.maximum(mapping, 0), axis=axis)
    joined = mapping < 0
    if joined.any():
        index: list[slice | IntArray] = [slice(None)] * values.ndim
        index[axis] = np.flatnonzero(joined)
        out[tuple(index)] = fill
    return cast(ArrayT, out)


def world_change(old: Topology, new: Topology) -> WorldChange:
    """Match two topologies by entity id (any change: the inventory's included). A node whose GPU
    model or GPU count changed under the same name is other hardware: it, its GPUs, their MIG
    instances and its uplink count as having left and joined (nothing learnt of the old carries)."""
    kinds = {kind: by_name(old, new, kind) for kind in KINDS}
    _rebuilt_nodes_join(old, new, kinds)
    return WorldChange(old, new, kinds, _global_map(old, new, kinds), jobs_only=False)


def by_name(old: Topology, new: Topology, kind: EntityKind) -> IntArray:
    """New local index -> old local index of the same name (-1: none), for one kind."""
    where = {name: i for i, name in enumerate(old.names[kind])}
    names = new.names[kind]
    return np.fromiter((where.get(name, -1) for name in names), dtype=np.int64, count=len(names))


def by_id(old: Topology, new: Topology) -> IntArray:
    """Old global index -> new, by entity id alone (-1: no such id now): where a sample about an
    entity goes. Unlike ``WorldChange.back``, hardware replaced under its name keeps its index,
    since a reading names the entity, not what was learnt of it."""
    return np.fromiter((new.index.get(eid, -1) for eid in old.ids), dtype=np.int64, count=old.n_entities)


def _rebuilt_nodes_join(old: Topology, new: Topology, kinds: dict[EntityKind, IntArray]) -> None:
    """Unmatch (``-1``) the nodes whose GPU model or count changed, and what sits on them."""
    nodes = kinds[EntityKind.NODE]
    kept = np.flatnonzero(nodes >= 0)
    if kept.size == 0:
        return
    before = nodes[kept]
    old_models = np.array([*old.models, ""], dtype=object)[old.node_model[before]]
    new_models = np.array([*new.models, ""], dtype=object)[new.node_model[kept]]
    old_gpus = np.bincount(old.gpu_node, minlength=old.count(EntityKind.NODE))[before]
    new_gpus = np.bincount(new.gpu_node, minlength=new.count(EntityKind.NODE))[kept]
    other = kept[(old_models != new_models) | (old_gpus != new_gpus)]
    if other.size == 0:
        return
    rebuilt = np.zeros(new.count(EntityKind.NODE), dtype=bool)
    rebuilt[other] = True
    nodes[other] = -1
    kinds[EntityKind.LINK][rebuilt] = -1  # link/<node>: one per node, in node order
    gpus = rebuilt[new.gpu_node]
    kinds[EntityKind.GPU][gpus] = -1
    kinds[EntityKind.MIG][gpus[new.mig_gpu]] = -1


def _global_map(old: Topology, new: Topology, kinds: dict[EntityKind, IntArray]) -> IntArray:
    out = np.full(new.n_entities, -1, dtype=np.int64)
    for kind in KINDS:
        local = kinds[kind]
        kept = local >= 0
        out[new.members[kind][kept]] = old.members[kind][local[kept]]
    return out


def with_jobs(old: Topology, jobs: Sequence[JobRecord]) -> tuple[Topology, WorldChange] | None:
    """``old`` with its job table replaced, every other entity kept at its index; None when that
    cannot be done without a rebuild (a job names a storage backend the topology lacks, or a kind
    after JOB holds entities)."""
    job_kind = EntityKind.JOB
    storages = set(old.names[EntityKind.STORAGE])
    if any(j.storage and j.storage not in storages for j in jobs):
        return None
    base = int(old.members[job_kind][0]) if old.count(job_kind) else _block_start(old, job_kind)
    if base + old.count(job_kind) != old.n_entities:
        return None
    names = tuple(j.job for j in jobs)
    old_names = old.names[job_kind]
    where = {name: i for i, name in enumerate(old_names)}
    job_map = np.fromiter((where.get(n, -1) for n in names), dtype=np.int64, count=len(names))
    job_ids = [f"{job_kind.value}/{n}" for n in names]
    index = dict(old.index)
    for eid in old.ids[base:]:
        del index[eid]
    index.update({eid: base + i for i, eid in enumerate(job_ids)})
    n = base + len(names)
    # Job rows of the containment matrix are empty (no GPU depends on a job): extend the row pointer.
    indptr = np.concatenate(
        [old.below.indptr[: base + 1], np.full(len(names), old.below.nnz, dtype=old.below.indptr.dtype)]
    )
    below = sp.csr_matrix((old.below.data, old.below.indices, indptr), shape=(n, old.below.shape[1]))
    members = dict(old.members)
    members[job_kind] = np.arange(base, n, dtype=np.int64)
    topo = replace(
        old,
        ids=old.ids[:base] + tuple(job_ids),
        kind_code=np.concatenate(
            [old.kind_code[:base], np.full(len(names), KIND_CODE[job_kind], dtype=np.int8)]
        ),
        local=np.concatenate([old.local[:base], np.arange(len(names), dtype=np.int64)]),
        members=members,
        names={**old.names, job_kind: names},
        jobs=tuple(jobs),
        below=below,
        index=index,
    )
    kinds = {k: np.arange(old.count(k), dtype=np.int64) for k in KINDS if k is not job_kind}
    kinds[job_kind] = job_map
    entities = np.concatenate([np.arange(base, dtype=np.int64), np.where(job_map >= 0, base + job_map, -1)])
    return topo, WorldChange(old, topo, kinds, entities, jobs_only=True)


def _block_start(topology: Topology, kind: EntityKind) -> int:
    """Where ``kind``'s block starts in the global index (the count of every kind before it)."""
    return sum(topology.count(k) for k in KINDS[: KINDS.index(kind)])


def inventory_of(topology: Topology) -> Inventory:
    """The inventory ``topology`` was built from (what a rebuild starts from when only a
    topology is at hand: a daemon started without an inventory file)."""
    names = topology.names
    gpus = np.bincount(topology.gpu_node, minlength=topology.count(EntityKind.NODE))
    mig: list[list[list[int]]] = [[[] for _ in range(int(g))] for g in gpus.tolist()]
    for gpu, instance in zip(topology.mig_gpu.tolist(), topology.mig_instance.tolist(), strict=True):
        mig[int(topology.gpu_node[gpu])][int(topology.gpu_slot[gpu])].append(instance)

    def pick(kind: EntityKind, i: int) -> str:
        return names[kind][i] if i >= 0 else ""

    records = []
    for n, name in enumerate(names[EntityKind.NODE]):
        rack = int(topology.node_rack[n])
        model = int(topology.node_model[n])
        records.append(
            NodeRecord(
                node=name, rack=names[EntityKind.RACK][rack], cdu=pick(EntityKind.CDU, int(topology.rack_cdu[rack])),
                leaf=names[EntityKind.SWITCH][int(topology.node_leaf[n])], gpus=int(gpus[n]),
                row=pick(EntityKind.ROW, int(topology.rack_row[rack])), pdu=pick(EntityKind.PDU, int(topology.node_pdu[n])),
                storage=pick(EntityKind.STORAGE, int(topology.node_storage[n])),
                model=topology.models[model] if model >= 0 else "",
                mig=tuple(tuple(m) for m in mig[n]) if any(mig[n]) else (),
            )
        )  # fmt: skip
    return Inventory(tuple(records), topology.serving.spec)
