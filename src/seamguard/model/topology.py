"""The fleet's entities, their integer indices and the dependency graph between them.

Every entity id is interned once into a global index; each kind also has a dense local
index (0..n_kind-1) so that a signal's values for a whole kind are one numpy vector. The
structural graph (what each GPU depends on) is a sparse matrix so that exposure and
amplification are sparse products, not Python loops, at 100k+ GPUs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from seamguard.model.entities import MIG_SEGMENT, EntityKind
from seamguard.model.inventory import Inventory, JobRecord
from seamguard.model.serving import ServingTopology, build_serving

IntArray = npt.NDArray[np.int64]
# JOB last: a change of jobs only replaces the tail of the global index (``world.with_jobs``)
KINDS: tuple[EntityKind, ...] = (*(k for k in EntityKind if k is not EntityKind.JOB), EntityKind.JOB)
KIND_CODE: dict[EntityKind, int] = {k: i for i, k in enumerate(KINDS)}


def _intern(names: Sequence[str]) -> tuple[list[str], dict[str, int]]:
    order: dict[str, int] = {}
    for name in names:
        if name and name not in order:
            order[name] = len(order)
    return list(order), order


@dataclass(frozen=True)
class Topology:
    """Entities and structure. Arrays are indexed by the child's local index."""

    ids: tuple[str, ...]
    kind_code: npt.NDArray[np.int8]  # global index -> KIND_CODE
    local: IntArray  # global index -> index within its kind
    members: dict[EntityKind, IntArray]  # kind -> global indices, in local order
    names: dict[EntityKind, tuple[str, ...]]  # kind -> bare names in local order
    gpu_node: IntArray
    gpu_slot: IntArray
    mig_gpu: IntArray  # per MIG instance: its GPU (local index)
    mig_instance: IntArray  # per MIG instance: its GPU instance id (dcgm-exporter's GPU_I_ID)
    node_rack: IntArray
    node_leaf: IntArray
    node_pdu: IntArray  # -1 when absent
    node_storage: IntArray  # -1 when absent
    node_model: IntArray  # -1 when absent; index into models
    models: tuple[str, ...]  # distinct GPU models (the inventory's optional `model` column)
    node_type: IntArray  # distinct (GPU model, GPUs per node) pairs: who is compared with whom
    rack_cdu: IntArray
    rack_row: IntArray  # -1 when absent
    jobs: tuple[JobRecord, ...]
    # entity (global) x gpu (local) : 1 where the GPU depends on the entity (itself included).
    below: sp.csr_matrix = field(repr=False)
    index: dict[str, int] = field(repr=False)
    # pools, replicas and KV-transfer paths (``model.serving``); no GPU depends on them (``below``)
    serving: ServingTopology = field(default_factory=ServingTopology, repr=False)

    @property
    def n_entities(self) -> int:
        return len(self.ids)

    @property
    def n_node_types(self) -> int:
        """Distinct node types (``node_type``): 1 or 0 in a uniform fleet."""
        return int(self.node_type.max(initial=-1)) + 1

    def count(self, kind: EntityKind) -> int:
        return int(self.members[kind].size)

    def lookup(self, eid: str) -> int | None:
        return self.index.get(eid)

    def kind_of(self, gidx: int) -> EntityKind:
        return KINDS[int(self.kind_code[gidx])]

    def global_index(self, kind: EntityKind, local: IntArray) -> IntArray:
        return self.members[kind][local]

    def local_index(self, kind: EntityKind, entities: IntArray) -> IntArray:
        """The local indices of those of ``entities`` (global) that are of ``kind``."""
        return np.asarray(self.local[entities[self.kind_code[entities] == KIND_CODE[kind]]], dtype=np.int64)

    def mig_gpus(self) -> IntArray:
        """Per MIG instance (local order): its GPU's global index."""
        return self.members[EntityKind.GPU][self.mig_gpu]

    def gpus_below(self) -> npt.NDArray[np.float64]:
        """Number of GPUs that depend on each entity (global index)."""
        return np.asarray(self.below.sum(axis=1)).ravel()


def node_of(topology: Topology, gidx: int) -> int | None:
    """The local node an entity sits on: a node itself, its uplink's, a GPU's or MIG instance's
    node; None for anything wider (a rack, a CDU, a job)."""
    kind = topology.kind_of(gidx)
    local = int(topology.local[gidx])
    if kind in (EntityKind.NODE, EntityKind.LINK):  # an uplink shares its node's index
        return local
    if kind is EntityKind.GPU:
        return int(topology.gpu_node[local])
    if kind is EntityKind.MIG:
        return int(topology.gpu_node[topology.mig_gpu[local]])
    return None


def nodes_below(topology: Topology, gidx: int) -> IntArray:
    """Local indices of the nodes an entity covers: its own node (``node_of``), or every node with a
    GPU below a rack, CDU, row, leaf, PDU or storage backend (the containment matrix)."""
    one = node_of(topology, gidx)
    if one is not None:
        return np.array([one], dtype=np.int64)
    found: IntArray = np.unique(topology.gpu_node[topology.below[gidx].indices]).astype(np.int64)
    return found


def build_topology(
    inventory: Inventory, jobs: Sequence[JobRecord] = (), storage: Sequence[str] = ()
) -> Topology:
    """``storage`` names checkpoint backends beyond those the nodes and jobs name (a fallback
    target nothing uses yet is still an entity whose telemetry the engine judges)."""
    recs = inventory.nodes
    node_names = [r.node for r in recs]
    racks, rack_ix = _intern([r.rack for r in recs])
    cdus, cdu_ix = _intern([r.cdu for r in recs])
    leaves, leaf_ix = _intern([r.leaf for r in recs])
    rows, row_ix = _intern([r.row for r in recs])
    pdus, pdu_ix = _intern([r.pdu for r in recs])
    storages, sto_ix = _intern([r.storage for r in recs] + [j.storage for j in jobs] + list(storage))

    n_nodes = len(recs)
    gpu_counts = np.array([r.gpus for r in recs], dtype=np.int64)
    gpu_node = np.repeat(np.arange(n_nodes, dtype=np.int64), gpu_counts)
    starts = np.concatenate(([0], np.cumsum(gpu_counts)[:-1]))
    gpu_slot = np.arange(gpu_node.size, dtype=np.int64) - starts[gpu_node]
    gpu_names = [f"{node_names[n]}/{s}" for n, s in zip(gpu_node.tolist(), gpu_slot.tolist(), strict=True)]
    mig_gpu_list: list[int] = []
    mig_inst_list: list[int] = []
    for n, rec in enumerate(recs):
        for slot, instances in enumerate(rec.mig):
            mig_gpu_list.extend([int(starts[n]) + slot] * len(instances))
            mig_inst_list.extend(instances)
    mig_gpu = np.array(mig_gpu_list, dtype=np.int64)
    mig_instance = np.array(mig_inst_list, dtype=np.int64)
    # ids gpu/<node>/<index>/mig/<instance> (``entities.mig_id``): the kind's prefix is the GPU's
    mig_names = [f"{gpu_names[g]}{MIG_SEGMENT}{i}" for g, i in zip(mig_gpu_list, mig_inst_list, strict=True)]

    node_rack = np.array([rack_ix[r.rack] for r in recs], dtype=np.int64)
    node_leaf = np.array([leaf_ix[r.leaf] for r in recs], dtype=np.int64)
    node_pdu = np.array([pdu_ix.get(r.pdu, -1) for r in recs], dtype=np.int64)
    node_storage = np.array([sto_ix.get(r.storage, -1) for r in recs], dtype=np.int64)
    models, model_ix = _intern([r.model for r in recs])
    node_model = np.array([model_ix.get(r.model, -1) for r in recs], dtype=np.int64)
    rack_cdu = np.full(len(racks), -1, dtype=np.int64)
    rack_row = np.full(len(racks), -1, dtype=np.int64)
    for r in recs:
        ri = rack_ix[r.rack]
        rack_cdu[ri] = cdu_ix[r.cdu]
        rack_row[ri] = row_ix.get(r.row, -1)

    names: dict[EntityKind, tuple[str, ...]] = {k: () for k in KINDS}
    names.update(
        {
            EntityKind.GPU: tuple(gpu_names),
            EntityKind.MIG: tuple(mig_names),
            EntityKind.NODE: tuple(node_names),
            EntityKind.LINK: tuple(node_names),  # link/<node>: the node's uplink to its leaf
            EntityKind.RACK: tuple(racks),
            EntityKind.CDU: tuple(cdus),
            EntityKind.SWITCH: tuple(leaves),
            EntityKind.ROW: tuple(rows),
            EntityKind.PDU: tuple(pdus),
            EntityKind.STORAGE: tuple(storages),
            EntityKind.JOB: tuple(j.job for j in jobs),
        }
    )
    serving = build_serving(inventory.serving, {n: i for i, n in enumerate(node_names)})
    names.update(
        {EntityKind.POOL: serving.pools, EntityKind.REPLICA: serving.replicas, EntityKind.PATH: serving.paths}
    )
    ids: list[str] = []
    kind_code: list[int] = []
    local: list[int] = []
    members: dict[EntityKind, IntArray] = {}
    for kind in KINDS:
        kind_names = names[kind]
        base = len(ids)
        members[kind] = np.arange(base, base + len(kind_names), dtype=np.int64)
        prefix = EntityKind.GPU.value if kind is EntityKind.MIG else kind.value
        ids.extend(f"{prefix}/{nm}" for nm in kind_names)
        kind_code.extend([KIND_CODE[kind]] * len(kind_names))
        local.extend(range(len(kind_names)))
    index = {eid: i for i, eid in enumerate(ids)}

    below = _containment(
        n_entities=len(ids),
        members=members,
        gpu_node=gpu_node,
        node_rack=node_rack,
        node_leaf=node_leaf,
        node_pdu=node_pdu,
        node_storage=node_storage,
        rack_cdu=rack_cdu,
        rack_row=rack_row,
    )
    return Topology(
        ids=tuple(ids),
        kind_code=np.array(kind_code, dtype=np.int8),
        local=np.array(local, dtype=np.int64),
        members=members,
        names=names,
        gpu_node=gpu_node,
        gpu_slot=gpu_slot,
        mig_gpu=mig_gpu,
        mig_instance=mig_instance,
        node_rack=node_rack,
        node_leaf=node_leaf,
        node_pdu=node_pdu,
        node_storage=node_storage,
        node_model=node_model,
        models=tuple(models),
        node_type=_node_types(node_model, gpu_counts),
        rack_cdu=rack_cdu,
        rack_row=rack_row,
        jobs=tuple(jobs),
        below=below,
        index=index,
        serving=serving,
    )


def _node_types(node_model: IntArray, gpus: IntArray) -> IntArray:
    """A 4-GPU L40S node and an 8-GPU H100 node run at different paces and temperatures."""
    if node_model.size == 0:
        return np.zeros(0, dtype=np.int64)
    _u, inverse = np.unique(np.stack((node_model, gpus), axis=1), axis=0, return_inverse=True)
    return np.asarray(inverse, dtype=np.int64).ravel()


def _containment(
    *,
    n_entities: int,
    members: dict[EntityKind, IntArray],
    gpu_node: IntArray,
    node_rack: IntArray,
    node_leaf: IntArray,
    node_pdu: IntArray,
    node_storage: IntArray,
    rack_cdu: IntArray,
    rack_row: IntArray,
) -> sp.csr_matrix:
    """Entity x GPU incidence: which GPUs sit below (depend on) each entity."""
    n_gpu = gpu_node.size
    gpus = np.arange(n_gpu, dtype=np.int64)
    gpu_rack = node_rack[gpu_node]
    parents: list[tuple[EntityKind, IntArray]] = [
        (EntityKind.GPU, gpus),
        (EntityKind.NODE, gpu_node),
        (EntityKind.LINK, gpu_node),
        (EntityKind.RACK, gpu_rack),
        (EntityKind.CDU, rack_cdu[gpu_rack]),
        (EntityKind.ROW, rack_row[gpu_rack]),
        (EntityKind.SWITCH, node_leaf[gpu_node]),
        (EntityKind.PDU, node_pdu[gpu_node]),
        (EntityKind.STORAGE, node_storage[gpu_node]),
    ]
    rows: list[IntArray] = []
    cols: list[IntArray] = []
    for kind, local_parent in parents:
        ok = local_parent >= 0
        if members[kind].size == 0 or not ok.any():
            continue
        rows.append(members[kind][local_parent[ok]])
        cols.append(gpus[ok])
    r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    data = np.ones(r.size, dtype=np.float64)
    return sp.csr_matrix((data, (r, c)), shape=(n_entities, n_gpu))
