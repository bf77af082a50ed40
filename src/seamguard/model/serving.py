"""Serving in the inventory: pools, their replicas and the KV-transfer paths between them.

A disaggregated deployment runs prefill and decode on separate pools and moves each request's KV
cache from a prefill replica to a decode replica over the fabric. The optional serving file
(``<inventory stem>.serving.csv`` beside the inventory: ``inventory.csv`` ->
``inventory.serving.csv``) lists them, one row per replica (or per pool whose replicas are not
known)::

    pool,role,replica,nodes,prefill_from,pair
    p-llama,prefill,p0,n001,,
    p-llama,prefill,p1,n002,,
    d-llama,decode,d0,n003;n004,p-llama,p0
    d-llama,decode,d1,n005,p-llama,

Entities: ``pool/<pool>``, ``replica/<replica>``, ``path/<from>~<to>``. Pool and replica names
share one namespace (a name is a pool or a replica, never both), so a path's id says what its
ends are.

Which paths exist, and why so few: every prefill pool a decode pool is fed by (``prefill_from``,
by default every prefill pool) gives one path to each of the decode pool's replicas
(``path/<prefill-pool>~<decode-replica>``), or to the pool itself when its replicas are not known
(``path/<prefill-pool>~<decode-pool>``). vLLM's KV connectors record a transfer on the decode
instance with no label naming the prefill peer, so that is the finest path the exporters can
measure; it is linear in the decode replicas. Replica-to-replica paths
(``path/<prefill-replica>~<decode-replica>``) exist only for the pairs a decode row names in
``pair`` (a fixed pairing, or one whose samples are pushed): all P x D pairs of a 100,000-GPU fleet
(thousands of replicas a side) would be millions of entities nobody measures.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt

from seamguard.errors import InputError

SERVING_REQUIRED = ("pool", "role")
SERVING_OPTIONAL = ("replica", "nodes", "prefill_from", "pair")
PATH_SEP = "~"  # path/<from>~<to>
MAX_PAIRS_PER_REPLICA = 64  # a decode replica paired with more is not a fixed pairing: use the pool path
MAX_PATHS = 1_000_000  # one per decode replica and feeding prefill pool is ~100,000 at 100,000 GPUs

IntArray = npt.NDArray[np.int64]


class Role(StrEnum):
    PREFILL = "prefill"
    DECODE = "decode"
    BOTH = "both"  # aggregated serving: prefill and decode in one replica, no KV transfer between pools


@dataclass(frozen=True)
class ReplicaRecord:
    replica: str
    pool: str
    nodes: tuple[str, ...]
    pair: tuple[str, ...] = ()  # prefill replicas this decode replica is known to pair with


@dataclass(frozen=True)
class PoolRecord:
    pool: str
    role: Role
    prefill_from: tuple[str, ...] = ()  # decode pools: the prefill pools that feed them (empty: all)


@dataclass(frozen=True)
class ServingSpec:
    """The serving file, read and checked against the inventory's nodes."""

    pools: tuple[PoolRecord, ...]
    replicas: tuple[ReplicaRecord, ...]


def serving_path_for(inventory: Path) -> Path:
    """Where the serving file of an inventory lives: ``inv.csv`` -> ``inv.serving.csv``."""
    return inventory.with_name(f"{inventory.stem}.serving.csv")


def path_name(source: str, target: str) -> str:
    return f"{source}{PATH_SEP}{target}"


def _name(where: str, col: str, raw: str) -> str:
    value = raw.strip()
    if not value or "/" in value or PATH_SEP in value or any(ch.isspace() for ch in value):
        raise InputError(
            where, f"column {col!r} must be a non-empty name without '/', '~' or spaces, got {raw!r}"
        )
    return value


def _names(where: str, col: str, raw: str) -> tuple[str, ...]:
    return tuple(_name(where, col, part) for part in raw.split(";") if part.strip())


def read_serving(path: Path, nodes: frozenset[str]) -> ServingSpec:
    """Read and check the serving file; InputError naming the file, line and column of the first
    problem (an unknown node, a replica in two pools, a pair with a replica that is not prefill)."""
    pools: dict[str, PoolRecord] = {}
    pool_line: dict[str, int] = {}
    replicas: dict[str, ReplicaRecord] = {}
    replica_line: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            raise InputError(str(path), f"empty file; expected a header with {','.join(SERVING_REQUIRED)}")
        cols = [h.strip() for h in header]
        missing = [c for c in SERVING_REQUIRED if c not in cols]
        unknown = [c for c in cols if c not in SERVING_REQUIRED + SERVING_OPTIONAL]
        if missing or unknown:
            what = (
                f"lacks column(s) {', '.join(missing)}"
                if missing
                else f"has unknown column(s) {', '.join(unknown)}"
            )
            raise InputError(
                f"{path}:1", f"header {what}; expected {','.join(SERVING_REQUIRED + SERVING_OPTIONAL)}"
            )
        for line, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
                continue
            where = f"{path}:{line}"
            if len(row) != len(cols):
                raise InputError(where, f"expected {len(cols)} fields, got {len(row)}")
            rec = {c: v.strip() for c, v in zip(cols, row, strict=True)}
            pool = _name(where, "pool", rec["pool"])
            try:
                role = Role(rec["role"].lower())
            except ValueError:
                raise InputError(
                    where,
                    f"column 'role' must be one of {', '.join(r.value for r in Role)}, got {rec['role']!r}",
                ) from None
            feeds = _names(where, "prefill_from", rec.get("prefill_from", ""))
            if feeds and role is not Role.DECODE:
                raise InputError(
                    where, f"column 'prefill_from' is for decode pools; pool {pool!r} is {role.value}"
                )
            seen = pools.get(pool)
            if seen is None:
                pools[pool], pool_line[pool] = PoolRecord(pool, role, feeds), line
            elif seen.role is not role:
                raise InputError(
                    where, f"pool {pool!r} is {seen.role.value} on line {pool_line[pool]}, {role.value} here"
                )
            elif feeds and seen.prefill_from and feeds != seen.prefill_from:
                raise InputError(where, f"pool {pool!r}: 'prefill_from' differs from line {pool_line[pool]}")
            elif feeds:
                pools[pool] = PoolRecord(pool, role, feeds)
            raw_replica = rec.get("replica", "")
            pair = tuple(dict.fromkeys(_names(where, "pair", rec.get("pair", ""))))
            if not raw_replica:
                if rec.get("nodes") or pair:
                    raise InputError(
                        where, "columns 'nodes' and 'pair' belong to a replica; column 'replica' is empty"
                    )
                continue
            replica = _name(where, "replica", raw_replica)
            if replica in replicas:
                raise InputError(where, f"replica {replica!r} already listed on line {replica_line[replica]}")
            on = _names(where, "nodes", rec.get("nodes", ""))
            if not on:
                raise InputError(
                    where,
                    f"replica {replica!r}: column 'nodes' is empty; expected node names separated by ';'",
                )
            strange = [n for n in on if n not in nodes]
            if strange:
                raise InputError(
                    where, f"column 'nodes': node(s) not in the inventory: {', '.join(strange[:5])}"
                )
            if pair and role is not Role.DECODE:
                raise InputError(
                    where, f"column 'pair' is for decode replicas; pool {pool!r} is {role.value}"
                )
            if len(pair) > MAX_PAIRS_PER_REPLICA:
                raise InputError(
                    where, f"column 'pair': {len(pair)} prefill replicas, at most {MAX_PAIRS_PER_REPLICA} "
                    "(a replica paired with any is measured through its pool path)"
                )  # fmt: skip
            replicas[replica], replica_line[replica] = ReplicaRecord(replica, pool, on, pair), line
    _check_names(path, pools, replicas, pool_line, replica_line)
    if not pools:
        raise InputError(str(path), "no pools listed")
    return ServingSpec(tuple(pools.values()), tuple(replicas.values()))


def _check_names(
    path: Path,
    pools: dict[str, PoolRecord],
    replicas: dict[str, ReplicaRecord],
    pool_line: dict[str, int],
    replica_line: dict[str, int],
) -> None:
    both = sorted(set(pools) & set(replicas))
    if both:
        raise InputError(
            f"{path}:{replica_line[both[0]]}",
            f"{both[0]!r} names both a pool (line {pool_line[both[0]]}) and a replica: path ids need one namespace",
        )
    for p in pools.values():
        for src in p.prefill_from:
            feeder = pools.get(src)
            if feeder is None or feeder.role is not Role.PREFILL:
                why = "not a pool of the file" if feeder is None else f"a {feeder.role.value} pool"
                raise InputError(f"{path}:{pool_line[p.pool]}", f"column 'prefill_from': {src!r} is {why}")
    for r in replicas.values():
        for src in r.pair:
            other = replicas.get(src)
            if other is None or pools[other.pool].role is not Role.PREFILL:
                why = (
                    "not a replica of the file"
                    if other is None
                    else f"a replica of {pools[other.pool].role.value} pool {other.pool!r}"
                )
                raise InputError(f"{path}:{replica_line[r.replica]}", f"column 'pair': {src!r} is {why}")


@dataclass(frozen=True)
class ServingTopology:
    """The serving entities' structure, in local indices (the topology's POOL, REPLICA, PATH blocks)."""

    spec: ServingSpec | None = None
    pools: tuple[str, ...] = ()
    pool_role: tuple[Role, ...] = ()
    replicas: tuple[str, ...] = ()
    replica_pool: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    replica_nodes: tuple[tuple[int, ...], ...] = ()  # per replica: local node indices
    # the same as (replica, node) rows, for per-replica reductions over node arrays in one call
    replica_node_rows: IntArray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    paths: tuple[str, ...] = ()  # bare names: <from>~<to>
    # per path: its ends; a replica end is its local replica index, a pool end -1 (and the pool's index)
    path_src_replica: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    path_src_pool: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    path_dst_replica: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    path_dst_pool: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # decode replica -> the one pool path into it, where a single prefill pool feeds it (-1: none or several):
    # where a decode instance's own KV-transfer metrics (no peer label) are attributed
    inbound: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def path_nodes(self, path: int) -> tuple[int, ...]:
        """The local nodes both ends of a path run on (a pool end: its known replicas' nodes)."""
        out: list[int] = []
        for rep, pool in ((self.path_src_replica[path], self.path_src_pool[path]),
                          (self.path_dst_replica[path], self.path_dst_pool[path])):  # fmt: skip
            reps = [int(rep)] if rep >= 0 else np.flatnonzero(self.replica_pool == pool).tolist()
            for r in reps:
                out.extend(self.replica_nodes[r])
        return tuple(dict.fromkeys(out))


def build_serving(spec: ServingSpec | None, node_index: dict[str, int]) -> ServingTopology:
    """Pools, replicas and the bounded set of paths (module docstring) of ``spec``."""
    if spec is None:
        return ServingTopology()
    pools = tuple(p.pool for p in spec.pools)
    pool_ix = {p: i for i, p in enumerate(pools)}
    roles = tuple(p.role for p in spec.pools)
    replicas = tuple(r.replica for r in spec.replicas)
    rep_ix = {r: i for i, r in enumerate(replicas)}
    replica_pool = np.array([pool_ix[r.pool] for r in spec.replicas], dtype=np.int64)
    by_pool: dict[str, list[ReplicaRecord]] = {}
    for r in spec.replicas:
        by_pool.setdefault(r.pool, []).append(r)
    prefill = [p.pool for p in spec.pools if p.role is Role.PREFILL]
    names: list[str] = []
    ends: list[tuple[int, int, int, int]] = []
    inbound = np.full(len(replicas), -1, dtype=np.int64)
    for p in spec.pools:
        if p.role is not Role.DECODE:
            continue
        feeds = p.prefill_from or tuple(prefill)
        for src in feeds:
            targets = by_pool.get(p.pool, [])
            if not targets:
                names.append(path_name(src, p.pool))
                ends.append((-1, pool_ix[src], -1, pool_ix[p.pool]))
            for r in targets:
                if len(feeds) == 1:
                    inbound[rep_ix[r.replica]] = len(names)
                names.append(path_name(src, r.replica))
                ends.append((-1, pool_ix[src], rep_ix[r.replica], pool_ix[p.pool]))
        for r in by_pool.get(p.pool, []):
            for src in r.pair:
                names.append(path_name(src, r.replica))
                ends.append((rep_ix[src], int(replica_pool[rep_ix[src]]), rep_ix[r.replica], pool_ix[p.pool]))
    if len(names) > MAX_PATHS:
        raise InputError("serving", f"{len(names)} paths, at most {MAX_PATHS}: list fewer pairs")
    cols = np.array(ends, dtype=np.int64).reshape(-1, 4)
    replica_nodes = tuple(tuple(node_index[n] for n in r.nodes if n in node_index) for r in spec.replicas)
    rows = [(r, n) for r, nodes in enumerate(replica_nodes) for n in nodes]
    return ServingTopology(
        spec=spec,
        pools=pools,
        pool_role=roles,
        replicas=replicas,
        replica_pool=replica_pool,
        replica_nodes=replica_nodes,
        replica_node_rows=np.array(rows, dtype=np.int64).reshape(-1, 2),
        paths=tuple(names),
        path_src_replica=cols[:, 0].copy(),
        path_src_pool=cols[:, 1].copy(),
        path_dst_replica=cols[:, 2].copy(),
        path_dst_pool=cols[:, 3].copy(),
        inbound=inbound,
    )
