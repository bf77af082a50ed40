"""How samples reach the engine: cadences, scrape phases, source clocks, delivery and loss.

Each *stream* samples one entity kind at a fixed period; each entity belongs to a *source*
(a node's exporter, a BMS controller, the storage appliance...) with its own scrape phase,
clock error and delivery latency. A sample taken at true time t carries the timestamp
t + clock error and arrives at t + latency; ``Inbox`` hands out what arrived by a given time,
so a tick sees what a live daemon would: late samples, skewed timestamps, missing scrapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.model.entities import EntityKind
from seamguard.telemetry.batch import TelemetryBatch

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
MISS_RATE = 0.005  # a source's scrape silently missing
DROP_RATE = 0.001  # one row lost on the way


@dataclass(frozen=True)
class Stream:
    """Entities of ``kind`` sampled every ``period_s``, at their source's phase."""

    name: str
    period_s: float
    kind: EntityKind
    source: IntArray  # per entity (local index): its source
    phase: FloatArray  # per source, within [0, period)
    clock: FloatArray  # per source: clock error added to timestamps
    delay: FloatArray  # per source: delivery latency
    start: float

    def slot_start(self, k: int) -> float:
        return self.start + k * self.period_s

    def times(self, k: int) -> FloatArray:
        """True sample time of every entity in slot ``k``."""
        return np.asarray(self.slot_start(k) + self.phase[self.source])


@dataclass(frozen=True)
class Rows:
    """Samples in flight: the batch columns plus the arrival time."""

    entity: IntArray
    signal: IntArray
    timestamp: FloatArray
    value: FloatArray
    arrival: FloatArray

    @staticmethod
    def concat(parts: list[Rows]) -> Rows:
        if not parts:
            z = np.zeros(0)
            return Rows(np.zeros(0, np.int64), np.zeros(0, np.int64), z, z, z)
        return Rows(
            np.concatenate([p.entity for p in parts]),
            np.concatenate([p.signal for p in parts]),
            np.concatenate([p.timestamp for p in parts]),
            np.concatenate([p.value for p in parts]),
            np.concatenate([p.arrival for p in parts]),
        )

    def select(self, keep: npt.NDArray[np.bool_]) -> Rows:
        return Rows(
            self.entity[keep], self.signal[keep], self.timestamp[keep], self.value[keep], self.arrival[keep]
        )


class Inbox:
    """Samples generated but not yet arrived; ``take(now)`` returns those that have."""

    def __init__(self) -> None:
        self._parts: list[Rows] = []

    def put(self, rows: Rows) -> None:
        if rows.entity.size:
            self._parts.append(rows)

    def take(self, now: float, since: float = -np.inf) -> TelemetryBatch:
        """Rows that arrived in (since, now], in arrival order; older ones are discarded."""
        rows = Rows.concat(self._parts)
        due = rows.arrival <= now
        later = rows.select(~due)
        self._parts = [later] if later.entity.size else []
        out = rows.select(due & (rows.arrival > since))
        order = np.argsort(out.arrival, kind="stable")
        return TelemetryBatch(out.entity[order], out.signal[order], out.timestamp[order], out.value[order])
