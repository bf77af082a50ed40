"""Injected faults and the ground-truth labels the engine is scored against.

A fault is named by kind and target entity id; its label says when it began (onset), when it
began to cost something (impact: lead time is measured against it) and which entities it may
legitimately push out of ``healthy`` (anything else that leaves healthy is a false positive).
Benign confounders are labelled too, so the evaluation can check they were *not* acted on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from seamguard.model.entities import EntityKind, kind_of
from seamguard.model.inventory import JobRecord
from seamguard.model.topology import Topology

FAULT_KINDS: tuple[str, ...] = (
    "cdu_flow_loss",
    "hbm_ecc",
    "link_retransmits",
    "pcie_downtrain",
    "storage_tail",
    "xid79",
    "hw_thermal",
)
BENIGN_KINDS: tuple[str, ...] = ("slow_gpu", "exporter_silent", "counter_reset")

TARGET_KIND: dict[str, EntityKind] = {
    "cdu_flow_loss": EntityKind.CDU,
    "hbm_ecc": EntityKind.GPU,
    "link_retransmits": EntityKind.LINK,
    "pcie_downtrain": EntityKind.GPU,
    "storage_tail": EntityKind.STORAGE,
    "xid79": EntityKind.GPU,
    "hw_thermal": EntityKind.GPU,
    "slow_gpu": EntityKind.GPU,
    "exporter_silent": EntityKind.NODE,
    "counter_reset": EntityKind.GPU,
}
# Kinds that develop over ramp_s (for exporter_silent, ramp_s is how long it stays silent).
RAMPED_KINDS: frozenset[str] = frozenset(
    {"cdu_flow_loss", "hbm_ecc", "link_retransmits", "storage_tail", "exporter_silent"}
)
# Faults that strike at onset: the engine must classify them within one tick.
SUDDEN_KINDS: frozenset[str] = frozenset(FAULT_KINDS) - RAMPED_KINDS
MAX_SEVERITY = 2.0


@dataclass(frozen=True)
class FaultSpec:
    """One injected fault: ``onset_s`` is seconds after the fleet's start."""

    kind: str
    target: str
    onset_s: float
    ramp_s: float = 0.0
    severity: float = 1.0

    def __post_init__(self) -> None:
        want = TARGET_KIND.get(self.kind)
        if want is None:
            raise ValueError(
                f"unknown fault kind {self.kind!r}; expected one of {', '.join((*FAULT_KINDS, *BENIGN_KINDS))}"
            )
        try:
            got = kind_of(self.target)
        except ValueError as exc:
            raise ValueError(f"fault {self.kind}: {exc}") from None
        if got is not want:
            raise ValueError(
                f"fault {self.kind}: target {self.target!r} is a {got.value}, expected a {want.value} id"
            )
        if not (math.isfinite(self.onset_s) and self.onset_s >= 0):
            raise ValueError(f"fault {self.kind} on {self.target}: onset_s must be >= 0, got {self.onset_s}")
        if not (math.isfinite(self.ramp_s) and self.ramp_s >= 0):
            raise ValueError(f"fault {self.kind} on {self.target}: ramp_s must be >= 0, got {self.ramp_s}")
        if self.kind in RAMPED_KINDS and self.ramp_s <= 0:
            raise ValueError(f"fault {self.kind} on {self.target}: needs ramp_s > 0")
        if not (math.isfinite(self.severity) and 0 < self.severity <= MAX_SEVERITY):
            raise ValueError(
                f"fault {self.kind} on {self.target}: severity must be in (0, {MAX_SEVERITY:g}], got {self.severity}"
            )

    @property
    def benign(self) -> bool:
        return self.kind in BENIGN_KINDS


@dataclass(frozen=True)
class Label:
    """Ground truth for one FaultSpec; times are absolute unix seconds."""

    kind: str
    entity: str
    onset: float
    impact: float
    benign: bool
    affected: tuple[str, ...]


def check_targets(faults: Sequence[FaultSpec], topology: Topology) -> None:
    """Every target must exist: a typo would otherwise inject nothing and score as a miss."""
    for f in faults:
        if topology.lookup(f.target) is None:
            raise ValueError(f"fault {f.kind}: target {f.target!r} is not in the topology")


def _ids(topology: Topology, kind: EntityKind, local: Sequence[int] | np.ndarray) -> list[str]:
    members = topology.members[kind]
    return [topology.ids[int(members[i])] for i in np.asarray(local, dtype=np.int64).tolist()]


def _jobs_on(topology: Topology, jobs: Sequence[JobRecord], nodes: set[str], onset: float) -> list[str]:
    """Jobs placed on any of ``nodes`` that are still running at or after the onset."""
    return [f"job/{j.job}" for j in jobs if j.end > onset and nodes.intersection(j.nodes)]


def affected_entities(
    fault: FaultSpec, topology: Topology, jobs: Sequence[JobRecord], onset: float
) -> tuple[str, ...]:
    """The entities a fault may legitimately push out of healthy (the target excluded)."""
    gidx = topology.lookup(fault.target)
    if gidx is None:
        raise ValueError(f"fault {fault.kind}: target {fault.target!r} is not in the topology")
    local = int(topology.local[gidx])
    node_names = topology.names[EntityKind.NODE]
    out: list[str] = []
    if fault.kind == "cdu_flow_loss":
        racks = np.flatnonzero(topology.rack_cdu == local)
        nodes = np.flatnonzero(np.isin(topology.node_rack, racks))
        gpus = np.flatnonzero(np.isin(topology.gpu_node, nodes))
        out += _ids(topology, EntityKind.RACK, racks)
        pdus = np.unique(topology.node_pdu[nodes])
        out += _ids(topology, EntityKind.PDU, pdus[pdus >= 0])
        rows = np.unique(topology.rack_row[racks])
        for row in rows[rows >= 0].tolist():
            if np.all(topology.rack_cdu[topology.rack_row == row] == local):  # a row cooled only by it
                out += _ids(topology, EntityKind.ROW, [row])
        out += _ids(topology, EntityKind.NODE, nodes)
        out += _ids(topology, EntityKind.GPU, gpus)
        out += _jobs_on(topology, jobs, {node_names[n] for n in nodes.tolist()}, onset)
    elif fault.kind == "storage_tail":
        name = topology.names[EntityKind.STORAGE][local]
        node_sto = {node_names[n]: int(s) for n, s in enumerate(topology.node_storage.tolist())}
        for j in jobs:
            uses = j.storage == name or (not j.storage and any(node_sto.get(n, -1) == local for n in j.nodes))
            if uses and j.end > onset:
                out.append(f"job/{j.job}")
    elif fault.kind in ("link_retransmits", "exporter_silent"):
        node = local
        out.append(f"node/{node_names[node]}")
        out += _ids(topology, EntityKind.GPU, np.flatnonzero(topology.gpu_node == node))
        if fault.kind == "exporter_silent":
            out.append(f"link/{node_names[node]}")
        out += _jobs_on(topology, jobs, {node_names[node]}, onset)
    elif fault.kind == "slow_gpu":
        out += _jobs_on(topology, jobs, {node_names[int(topology.gpu_node[local])]}, onset)
    elif fault.kind == "counter_reset":
        pass
    else:  # GPU faults: the node gets drained, the job loses or waits for the rank
        host = node_names[int(topology.gpu_node[local])]
        out.append(f"node/{host}")
        out += _jobs_on(topology, jobs, {host}, onset)
    return tuple(e for e in dict.fromkeys(out) if e != fault.target)
