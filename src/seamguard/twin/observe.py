"""The observation stage both telemetry generators share: what an exporter fleet does to values.

The twin's emitter (``telemetry.Emitter``, values from the stateful plant) and the labelled
generator (``labelled.SyntheticFleet``, values in closed form) each compute the true value of
every sample, append them here one block per (entity kind, signal), and ``Blocks.observe``
turns them into what arrives: ~``dropout`` of the samples lost, DCGM's blank sentinels (≥ 2^62)
in a few gauges. ``app_xids`` adds the harmless application XIDs (13, 31, 43) busy GPUs raise.
The noise and scrape-phase constants here are the same for both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from seamguard.model.catalog import SignalCatalog, SignalKind
from seamguard.model.entities import EntityKind

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
# DCGM "blank" values (int64 fields surfaced as float): all >= 2**62, never a measurement.
SENTINELS = np.array(
    [2**63 - 1, 0x7FF0000000000000, 0x7FF0000000000001, 0x7FF0000000000002], dtype=np.float64
)
GPU_TEMP_NOISE_C, CLOCK_NOISE_MHZ, INLET_NOISE_C, FACILITY_NOISE = 0.4, 5.0, 0.1, 0.003
RANK_NOISE, JOB_NOISE, HEARTBEAT_MAX_S = 0.004, 0.003, 15.0
APP_XID_PER_H = 0.002  # application XIDs (13/31/43): evidence 0, a confounder the engine must ignore
APP_XIDS = np.array([13, 31, 43], dtype=np.int64)
# Sample timestamps: entity phase in [PHASE_MIN, PHASE_MAX) x tick, plus jitter below JITTER x tick.
PHASE_MIN, PHASE_MAX, JITTER = 0.02, 0.8, 0.1
Row = tuple[
    IntArray, IntArray, FloatArray, FloatArray, BoolArray, BoolArray
]  # ent, sig, ts, val, present, gauge


@dataclass
class Blocks:
    members: Mapping[EntityKind, IntArray]  # global index of each kind's entities (Topology.members)
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
        members = self.members[kind]
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
        val = np.concatenate([b[3] for b in self.rows]).astype(np.float64)
        keep = np.concatenate([b[4] for b in self.rows])
        gauge = np.concatenate([b[5] for b in self.rows])
        if dropout > 0:
            keep &= rng.random(keep.size) >= dropout
        if sentinel_rate > 0:
            hit = np.flatnonzero(gauge & (rng.random(gauge.size) < sentinel_rate))
            val[hit] = SENTINELS[rng.integers(0, SENTINELS.size, hit.size)]
        return ent[keep], sig[keep], ts[keep], val[keep]


def app_xids(
    rng: np.random.Generator, eligible: BoolArray, tick_s: float, t: float
) -> tuple[IntArray, IntArray, FloatArray]:
    """(position in ``eligible``, code, time) of the application XIDs raised in the tick ending at
    ``t`` by the busy, reporting GPUs ``eligible`` marks."""
    idx = np.flatnonzero(eligible & (rng.random(eligible.size) < APP_XID_PER_H * tick_s / 3600.0))
    code = APP_XIDS[rng.integers(0, APP_XIDS.size, idx.size)]
    return idx, code, t - rng.random(idx.size) * tick_s * 0.999
