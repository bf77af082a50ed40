"""Labels of the field suite and the *reach* of a fault: what it may legitimately push out of healthy.

A fault's reach follows the physical dependency, never the engine's opinion: a GPU reaches its
node, the node's uplink, its MIG instances and the jobs on the node; a link reaches its node,
the node's GPUs and jobs; a leaf switch its links, nodes, GPUs and jobs; a CDU its racks and
everything in them; a storage backend the jobs that save to it. Jobs count when they run on
those parts at any time from the fault's onset to the end of the run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from seamguard.fieldsim.fleet import Fleet
from seamguard.model.entities import EntityKind
from seamguard.model.states import TRAINING_CLASSES


@dataclass(frozen=True)
class FaultLabel:
    kind: str
    entity: str
    reach: frozenset[str]  # includes ``entity``
    onset: float
    impact: float  # when it starts costing a job; lead = impact - detection
    sudden: bool


@dataclass(frozen=True)
class ConfounderLabel:
    """A benign happening; an action in ``scope`` between ``onset`` and ``end`` would be because
    of it (the end includes the time it can still mislead a trend or a counter rate)."""

    kind: str
    entity: str  # its target, or "fleet" for the fleet-wide ones
    scope: frozenset[str]
    onset: float
    end: float

    @property
    def name(self) -> str:
        return self.kind if self.entity == "fleet" else f"{self.kind}({self.entity})"


class Reach:
    """Entity-id sets of one fleet, built from its topology."""

    def __init__(self, fleet: Fleet, run_end: float) -> None:
        self.fleet = fleet
        self.topo = fleet.topology
        self.run_end = run_end

    def _ids(self, kind: EntityKind, local: Iterable[int]) -> set[str]:
        members = self.topo.members[kind]
        return {self.topo.ids[int(members[i])] for i in local}

    def jobs_on(self, nodes: Iterable[int], since: float) -> set[str]:
        """Job records that run on any of ``nodes`` at some time in [since, end of run)."""
        wanted = set(nodes)
        out: set[str] = set()
        for j, rec in enumerate(self.fleet.jobs):
            if (
                rec.end > since
                and rec.start < self.run_end
                and wanted.intersection(self.fleet.job_nodes[j].tolist())
            ):
                out.add(self.fleet.gid(EntityKind.JOB, j))
        return out

    def hardware(self, nodes: Iterable[int]) -> set[str]:
        """Nodes with their uplinks, GPUs and MIG instances."""
        nodes = sorted(set(nodes))
        gpus = np.flatnonzero(np.isin(self.topo.gpu_node, nodes))
        migs = np.flatnonzero(np.isin(self.topo.mig_gpu, gpus))
        return (
            self._ids(EntityKind.NODE, nodes)
            | self._ids(EntityKind.LINK, nodes)
            | self._ids(EntityKind.GPU, gpus.tolist())
            | self._ids(EntityKind.MIG, migs.tolist())
        )

    def host(self, nodes: Iterable[int]) -> set[str]:
        """Nodes with their GPUs and MIG instances: what a node's own exporter reports on."""
        return {e for e in self.hardware(nodes) if not e.startswith("link/")}

    def nodes(self, nodes: Iterable[int], since: float) -> set[str]:
        """Nodes with their hardware and the jobs on them from ``since``."""
        nodes = list(nodes)
        return self.hardware(nodes) | self.jobs_on(nodes, since)

    def facility(self, cdu: int) -> set[str]:
        """A CDU and its racks: what a facilities reading could mislead the engine about."""
        racks = np.flatnonzero(self.topo.rack_cdu == cdu).tolist()
        return self._ids(EntityKind.CDU, [cdu]) | self._ids(EntityKind.RACK, racks)

    def gpu(self, gpu: int, since: float) -> frozenset[str]:
        node = int(self.topo.gpu_node[gpu])
        migs = np.flatnonzero(self.topo.mig_gpu == gpu).tolist()
        ids = self._ids(EntityKind.GPU, [gpu]) | self._ids(EntityKind.MIG, migs)
        ids |= self._ids(EntityKind.NODE, [node]) | self._ids(EntityKind.LINK, [node])
        return frozenset(ids | self.jobs_on([node], since))

    def node(self, node: int, since: float) -> frozenset[str]:
        return frozenset(self.nodes([node], since))

    def link(self, node: int, since: float) -> frozenset[str]:
        return self.node(node, since)

    def switch(self, switch: int, since: float) -> frozenset[str]:
        nodes = np.flatnonzero(self.topo.node_leaf == switch).tolist()
        return frozenset(self._ids(EntityKind.SWITCH, [switch]) | self.nodes(nodes, since))

    def cdu(self, cdu: int, since: float) -> frozenset[str]:
        racks = np.flatnonzero(self.topo.rack_cdu == cdu).tolist()
        nodes = np.flatnonzero(np.isin(self.topo.node_rack, racks)).tolist()
        return frozenset(
            self._ids(EntityKind.CDU, [cdu]) | self._ids(EntityKind.RACK, racks) | self.nodes(nodes, since)
        )

    def storage(self, storage: int, since: float) -> frozenset[str]:
        """The backend and the training jobs that save to it."""
        ids = self._ids(EntityKind.STORAGE, [storage])
        for j, rec in enumerate(self.fleet.jobs):
            if (
                rec.job_class in TRAINING_CLASSES
                and int(self.fleet.storage_of_job[j]) == storage
                and rec.end > since
                and rec.start < self.run_end
            ):
                ids.add(self.fleet.gid(EntityKind.JOB, j))
        return frozenset(ids)
