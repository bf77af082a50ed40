"""A batch of telemetry samples as four parallel numpy columns: the engine's only input."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class TelemetryBatch:
    entity: npt.NDArray[np.int64]  # global entity index (Topology)
    signal: npt.NDArray[np.int64]  # signal index (SignalCatalog)
    timestamp: npt.NDArray[np.float64]  # unix seconds
    value: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        n = self.entity.size
        if not (self.signal.size == n and self.timestamp.size == n and self.value.size == n):
            raise ValueError("TelemetryBatch columns must have equal length")

    def __len__(self) -> int:
        return int(self.entity.size)

    @staticmethod
    def empty() -> TelemetryBatch:
        return TelemetryBatch(
            np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.float64)
        )

    def reindexed(self, back: npt.NDArray[np.int64]) -> TelemetryBatch:
        """Entities re-indexed by ``back`` (an old world's index -> the new one's, -1 for an entity
        that left: its rows are dropped); see ``model.world``."""
        if self.entity.size == 0:
            return self
        ent = back[self.entity]
        keep = ent >= 0
        return TelemetryBatch(ent[keep], self.signal[keep], self.timestamp[keep], self.value[keep])

    @staticmethod
    def concat(batches: list[TelemetryBatch]) -> TelemetryBatch:
        if not batches:
            return TelemetryBatch.empty()
        return TelemetryBatch(
            np.concatenate([b.entity for b in batches]),
            np.concatenate([b.signal for b in batches]),
            np.concatenate([b.timestamp for b in batches]),
            np.concatenate([b.value for b in batches]),
        )
