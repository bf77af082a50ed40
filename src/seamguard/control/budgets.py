"""Quarantine budgets: how many nodes may be out at once, per failure domain, per hour, per partition.

Domain membership is a sparse node x domain incidence matrix built once from the topology
(rack, row, cdu, leaf switch, pdu, job); the quarantined count of every domain is one sparse
product per tick, so a 100,000-GPU fleet costs O(nodes) per tick, not a Python loop over domains.
Admitting candidates is sequential by nature (each admission changes the counts the next one is
judged against), so ``check`` looks only at the few domains a candidate's nodes belong to.
"""

from __future__ import annotations

import fnmatch
import math
from collections import deque
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from pydantic import Field

from seamguard.errors import InputError
from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology
from seamguard.model.world import carry
from seamguard.strict_model import StrictModel

IntArray = npt.NDArray[np.int64]
DomainKind = Literal["rack", "row", "cdu", "switch", "pdu", "job"]
HOUR_S = 3600.0


class PartitionConfig(StrictModel):
    """A named set of nodes (fnmatch patterns on node names; empty: the whole fleet) that must keep
    at least this much capacity in service (not quarantined, not failed)."""

    nodes: tuple[str, ...] = ()
    min_in_service_pct: float = Field(default=0.0, ge=0.0, le=100.0)
    min_in_service_nodes: int = Field(default=0, ge=0)


class BudgetConfig(StrictModel):
    max_nodes: int = Field(default=16, ge=0, description="nodes quarantined at once, fleet-wide")
    max_fleet_pct: float = Field(default=5.0, ge=0.0, le=100.0, description="same, as a share of the fleet")
    domain_pct: float = Field(default=25.0, ge=0.0, le=100.0, description="share of any one failure domain")
    domain_floor: int = Field(default=1, ge=0, description="nodes any domain may lose whatever its size")
    domain_kinds: tuple[DomainKind, ...] = ("rack", "row", "cdu", "switch", "pdu", "job")
    per_hour: int = Field(default=8, ge=0, description="new quarantines in any rolling hour")
    per_hour_pct: float = Field(default=2.0, ge=0.0, le=100.0, description="same, as a share of the fleet")
    partitions: dict[str, PartitionConfig] = Field(
        default_factory=lambda: {"fleet": PartitionConfig(min_in_service_pct=80.0)}
    )


def _pct_bound(pct: float, size: int, floor: int) -> int:
    """A percentage bound in nodes; never below ``floor`` so that small domains are not frozen."""
    return max(floor, math.floor(pct / 100.0 * size + 1e-9))


def _incidence(rows: IntArray, cols: IntArray, shape: tuple[int, int]) -> sp.csr_matrix:
    ok = (rows >= 0) & (cols >= 0)
    data = np.ones(int(ok.sum()), dtype=np.float64)
    m = sp.csr_matrix((data, (rows[ok], cols[ok])), shape=shape)
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def domain_incidence(topology: Topology, kinds: Sequence[DomainKind]) -> tuple[sp.csr_matrix, list[str]]:
    """Node x domain incidence (1 where the node belongs to the domain) and each domain's entity id."""
    n_nodes = topology.count(EntityKind.NODE)
    nodes = np.arange(n_nodes, dtype=np.int64)
    node_index = {name: i for i, name in enumerate(topology.names[EntityKind.NODE])}
    blocks: list[sp.csr_matrix] = []
    labels: list[str] = []
    for kind in kinds:
        if kind == "job":
            names = [j.job for j in topology.jobs]
            placed = [n for j in topology.jobs for n in j.nodes]
            r = np.fromiter((node_index.get(n, -1) for n in placed), dtype=np.int64, count=len(placed))
            c = np.repeat(np.arange(len(names), dtype=np.int64), [len(j.nodes) for j in topology.jobs])
        else:
            ekind = EntityKind(kind)
            names = list(topology.names[ekind])
            parent = {
                "rack": topology.node_rack,
                "row": topology.rack_row[topology.node_rack] if topology.rack_row.size else nodes * 0 - 1,
                "cdu": topology.rack_cdu[topology.node_rack],
                "switch": topology.node_leaf,
                "pdu": topology.node_pdu,
            }[kind]
            r, c = nodes, parent.astype(np.int64)
        blocks.append(_incidence(r, c, (n_nodes, len(names))))
        labels.extend(f"{kind}/{name}" for name in names)
    matrix = sp.hstack(blocks, format="csr") if blocks else sp.csr_matrix((n_nodes, 0))
    return matrix, labels


def check_partitions(partitions: dict[str, PartitionConfig], names: Sequence[str]) -> None:
    """Raise InputError naming the first partition whose patterns match none of ``names``: what
    a new inventory is checked against before the daemon takes it (``live_world``)."""
    for pname, part in partitions.items():
        if part.nodes and not any(fnmatch.filter(names, pattern) for pattern in part.nodes):
            raise InputError(f"safety.budgets.partitions.{pname}.nodes", f"{part.nodes} match no node")


def partition_incidence(topology: Topology, partitions: dict[str, PartitionConfig]) -> sp.csr_matrix:
    """Node x partition incidence; a pattern list that matches no node is a config error."""
    names = topology.names[EntityKind.NODE]
    check_partitions(partitions, names)
    n_nodes = len(names)
    index = {n: i for i, n in enumerate(names)}
    rows: list[IntArray] = []
    cols: list[IntArray] = []
    for k, part in enumerate(partitions.values()):
        if not part.nodes:
            members = np.arange(n_nodes, dtype=np.int64)
        else:
            matched = {n for pattern in part.nodes for n in fnmatch.filter(names, pattern)}
            members = np.array(sorted(index[n] for n in matched), dtype=np.int64)
        rows.append(members)
        cols.append(np.full(members.size, k, dtype=np.int64))
    r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    return _incidence(r, c, (n_nodes, len(partitions)))


class Budgets:
    """The quarantine ledger and its bounds. Node arguments are local node indices."""

    def __init__(self, topology: Topology, config: BudgetConfig) -> None:
        self.config = config
        self.n_nodes = topology.count(EntityKind.NODE)
        self.domains, self.domain_labels = domain_incidence(topology, config.domain_kinds)
        self._domains_csc = self.domains.tocsc()  # column slices: the domains one candidate touches
        self.domain_size = np.asarray(self.domains.sum(axis=0)).ravel().astype(np.int64)
        self.domain_allowed = np.array(
            [_pct_bound(config.domain_pct, int(s), config.domain_floor) for s in self.domain_size],
            dtype=np.int64,
        )
        self.partition_names = list(config.partitions)
        self.partitions = partition_incidence(topology, config.partitions)
        psize = np.asarray(self.partitions.sum(axis=0)).ravel().astype(np.int64)
        self.partition_size = psize
        self.partition_min = np.array(
            [
                max(p.min_in_service_nodes, math.ceil(p.min_in_service_pct / 100.0 * int(s) - 1e-9))
                for p, s in zip(config.partitions.values(), psize.tolist(), strict=True)
            ],
            dtype=np.int64,
        )
        self.quarantined = np.zeros(self.n_nodes, dtype=bool)
        self.failed = np.zeros(self.n_nodes, dtype=bool)  # hard-down: out of service, not by us
        self._starts: deque[tuple[float, int]] = deque()  # (when, nodes) of each quarantine taken

    def carried_over(self, topology: Topology, nodes: IntArray) -> Budgets:
        """These budgets on ``topology`` (``nodes``: new -> old local index, -1: joined): the
        bounds are recomputed for the new domains, the ledger kept for nodes that stay."""
        out = Budgets(topology, self.config)
        out.quarantined = carry(self.quarantined, nodes, False)
        out.failed = carry(self.failed, nodes, False)
        out._starts = deque(self._starts)  # quarantines taken in the last hour count whoever left since
        return out

    # -- counts (vectorised) ----------------------------------------------------------------
    def domain_counts(self) -> IntArray:
        """Quarantined nodes per domain: one sparse product."""
        return np.asarray(self.domains.T @ self.quarantined.astype(np.float64)).ravel().astype(np.int64)

    def in_service(self) -> IntArray:
        """Nodes in service per partition."""
        up = (~self.quarantined & ~self.failed).astype(np.float64)
        return np.asarray(self.partitions.T @ up).ravel().astype(np.int64)

    def started_last_hour(self, now: float) -> int:
        while self._starts and self._starts[0][0] <= now - HOUR_S:
            self._starts.popleft()
        return sum(n for _, n in self._starts)

    def fleet_bound(self) -> int:
        """Nodes quarantined at once at most: ``max_nodes`` or ``max_fleet_pct``, the lower."""
        return min(self.config.max_nodes, _pct_bound(self.config.max_fleet_pct, self.n_nodes, 1))

    def hour_bound(self) -> int:
        """New quarantines in any rolling hour at most: ``per_hour`` or ``per_hour_pct``, the lower."""
        return min(self.config.per_hour, _pct_bound(self.config.per_hour_pct, self.n_nodes, 1))

    # -- decisions --------------------------------------------------------------------------
    def check(
        self, nodes: IntArray, now: float, *, containment: bool = False, hard: bool = False
    ) -> str | None:
        """None if quarantining ``nodes`` keeps every bound, else the refusing budget and why.

        A drain of a ``hard``-failed part (a GPU off the bus, a node down) takes no working
        capacity from its domain: its job cannot run there whatever we do, so the per-domain bound
        does not count it, and a rack with one node already quarantined still gets its dead node
        drained rather than rescheduled onto. The fleet's and the hour's bounds, which hold a flood
        of failures (or of forged ones) for an operator, and every partition's minimum, hold as for
        any quarantine.

        A ``containment`` (a whole rack, CDU or leaf taken out at once, its jobs moved) is one
        decision: it counts once against the hourly bound, and the per-domain bound does not apply
        to it; the fleet's bounds and every partition's minimum in service hold as for any
        quarantine. The per-domain bound stops piecemeal drains from adding up to a domain's loss,
        which is a domain-level decision; a containment is that decision. Under the per-domain
        bound no domain could ever be contained: its own bound (or a leaf it shares) refuses it."""
        cfg = self.config
        new = nodes[~self.quarantined[nodes]]
        if new.size == 0:
            return None
        k = int(new.size)
        held = int(self.quarantined.sum())
        fleet_allowed = _pct_bound(cfg.max_fleet_pct, self.n_nodes, 1)
        if held + k > cfg.max_nodes:
            return f"budget max_nodes: {held} of at most {cfg.max_nodes} nodes already quarantined"
        if held + k > fleet_allowed:
            return (
                f"budget max_fleet_pct: {held} of {self.n_nodes} nodes already quarantined"
                f" (at most {cfg.max_fleet_pct:g}% = {fleet_allowed})"
            )
        recent = self.started_last_hour(now)
        hour_allowed = _pct_bound(cfg.per_hour_pct, self.n_nodes, 1)
        starts = 1 if containment else k
        if recent + starts > cfg.per_hour:
            return f"budget per_hour: {recent} quarantines in the last hour (at most {cfg.per_hour})"
        if recent + starts > hour_allowed:
            return (
                f"budget per_hour_pct: {recent} quarantines in the last hour"
                f" (at most {cfg.per_hour_pct:g}% of {self.n_nodes} = {hour_allowed})"
            )
        sub = self.domains[new]
        touched = np.unique(sub.indices) if not (containment or hard) else np.zeros(0, dtype=np.int64)
        if touched.size:
            delta = np.asarray(sub.sum(axis=0)).ravel()[touched].astype(np.int64)
            counts = np.asarray(
                self._domains_csc[:, touched].T @ self.quarantined.astype(np.float64)
            ).ravel().astype(np.int64)  # fmt: skip
            over = counts + delta > self.domain_allowed[touched]
            if over.any():
                i = int(np.flatnonzero(over)[0])
                d = int(touched[i])
                return (
                    f"budget domain_pct: {self.domain_labels[d]} has {counts[i]} of {self.domain_size[d]} nodes"
                    f" quarantined (at most {cfg.domain_pct:g}% = {self.domain_allowed[d]})"
                )
        psub = self.partitions[new]
        ptouched = np.unique(psub.indices)
        if ptouched.size:
            up_new = (~self.failed[new]).astype(np.float64)
            lose = np.asarray(psub.T @ up_new).ravel()[ptouched].astype(np.int64)
            now_up = self.in_service()[ptouched]
            short = now_up - lose < self.partition_min[ptouched]
            if short.any():
                i = int(np.flatnonzero(short)[0])
                p = int(ptouched[i])
                return (
                    f"budget min_in_service: partition {self.partition_names[p]} has {now_up[i]} of"
                    f" {self.partition_size[p]} nodes in service and must keep {self.partition_min[p]}"
                )
        return None

    def take(self, nodes: IntArray, now: float, *, containment: bool = False) -> None:
        new = nodes[~self.quarantined[nodes]]
        if new.size:
            self.quarantined[new] = True
            self._starts.append((now, 1 if containment else int(new.size)))

    def release(self, nodes: IntArray) -> None:
        self.quarantined[nodes] = False
