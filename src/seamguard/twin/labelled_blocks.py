"""Samples of one labelled tick, gathered per signal and then observed (dropouts, sentinels).

The labelled fleet appends one block per (entity kind, signal); ``observe`` concatenates them,
drops ``dropout`` of the samples and swaps DCGM blank sentinels (``twin.telemetry.SENTINELS``)
into a few gauges, the same observation faults the twin's emitter applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from seamguard.model.catalog import SignalCatalog, SignalKind
from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology
from seamguard.twin.telemetry import SENTINELS

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Row = tuple[
    IntArray, IntArray, FloatArray, FloatArray, BoolArray, BoolArray
]  # ent, sig, ts, val, present, gauge


@dataclass
class Blocks:
    topology: Topology
    catalog: SignalCatalog
    rows: list[Row] = field(default_factory=list)

    def add(
        self,
        kind: EntityKind,
        local: IntArray | None,
        name: str,
        ts: FloatArray,
        val: FloatArray,
        present: BoolArray | None = None,
    ) -> None:
        """Samples of ``name`` for the entities of ``kind`` at ``local`` (all of them if None)."""
        members = self.topology.members[kind]
        ent = members if local is None else members[local]
        self.add_ids(ent, name, ts, val, present)

    def add_ids(
        self, ent: IntArray, name: str, ts: FloatArray, val: FloatArray, present: BoolArray | None = None
    ) -> None:
        n = ent.size
        signal = self.catalog[name]
        self.rows.append(
            (
                ent,
                np.full(n, signal.index, np.int64),
                ts,
                val,
                np.ones(n, bool) if present is None else present,
                np.full(n, signal.kind is SignalKind.GAUGE),
            )
        )

    def observe(
        self, rng: np.random.Generator, dropout: float, sentinel_rate: float
    ) -> tuple[IntArray, IntArray, FloatArray, FloatArray]:
        """(entity, signal, ts, value) of the samples that arrive."""
        ent = np.concatenate([b[0] for b in self.rows])
        sig = np.concatenate([b[1] for b in self.rows])
        ts = np.concatenate([b[2] for b in self.rows])
        val = np.concatenate([b[3] for b in self.rows])
        keep = np.concatenate([b[4] for b in self.rows])
        gauge = np.concatenate([b[5] for b in self.rows])
        if dropout > 0:
            keep &= rng.random(keep.size) >= dropout
        if sentinel_rate > 0:
            hit = np.flatnonzero(gauge & (rng.random(gauge.size) < sentinel_rate))
            val[hit] = SENTINELS[rng.integers(0, SENTINELS.size, hit.size)]
        return ent[keep], sig[keep], ts[keep], val[keep]
