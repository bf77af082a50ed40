"""Lemon nodes: repaired, back in service, and failing again.

A few such nodes cause a large share of a fleet's job interruptions (Kokolis et al., "Revisiting
Reliability in Large-Scale ML Research Clusters", 2024): each time one comes back from repair the
scheduler hands it to the next job, which it stops again. Every hard failure of a node, its GPUs
or its uplink (an entry into ``failed``, at most one per node and tick) counts once, decayed with
``classifier.lemon_halflife_s``; a node at ``lemon_failures`` or more is a lemon. With the
defaults that is two hard failures within a week, against a base rate of about one a year.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from seamguard.config import ClassifierConfig
from seamguard.control.classifier import Changes
from seamguard.model.entities import EntityKind
from seamguard.model.states import State
from seamguard.model.topology import KIND_CODE, Topology
from seamguard.model.world import WorldChange, carry

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass
class LemonMemory:
    failures: FloatArray  # per node, decayed count of hard failures
    halflife_s: float
    threshold: float
    last: float = field(default=-math.inf)

    @classmethod
    def create(cls, topology: Topology, config: ClassifierConfig) -> LemonMemory:
        return cls(np.zeros(topology.count(EntityKind.NODE)), config.lemon_halflife_s, config.lemon_failures)

    def carry_over(self, change: WorldChange) -> LemonMemory:
        """A node that stays keeps its failure count (a lemon is not forgiven by a job change)."""
        if change.same(EntityKind.NODE):
            return self
        return replace(self, failures=carry(self.failures, change.kind(EntityKind.NODE), 0.0))

    def record(self, now: float, topology: Topology, changes: Changes) -> None:
        if math.isfinite(self.last):
            self.failures *= 0.5 ** (max(now - self.last, 0.0) / self.halflife_s)
        self.last = now
        hit = changes.index[(changes.after == int(State.FAILED)) & (changes.before != int(State.FAILED))]
        if hit.size == 0:
            return
        code, local = topology.kind_code[hit], topology.local[hit]
        nodes = np.concatenate([
            local[code == KIND_CODE[EntityKind.NODE]],
            local[code == KIND_CODE[EntityKind.LINK]],  # a node's uplink shares its local index
            topology.gpu_node[local[code == KIND_CODE[EntityKind.GPU]]],
        ])  # fmt: skip
        self.failures[np.unique(nodes)] += 1.0

    def lemons(self) -> BoolArray:
        out: BoolArray = self.failures >= self.threshold
        return out
