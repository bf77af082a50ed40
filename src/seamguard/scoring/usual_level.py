"""Each entity's usual level of a signal, for trends gated on "well above its own normal".

A storage backend's p99 write latency rises for the length of every save its jobs make: a
trend in it is load unless the latency has stayed well above what this backend usually shows.
What is usual differs between backends by an order of magnitude (a flash tier at 10 ms, a disk
tier at 60), so a fixed gate in milliseconds is tuned to one site. The usual level is the
geometric mean of the entity's readings over USUAL_HALFLIFE_S, learnt only while the rule gives
the entity no evidence, after WARMUP readings (until then the rule does not judge it).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from seamguard.model.entities import EntityKind
from seamguard.model.topology import KIND_CODE, Topology

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

USUAL_HALFLIFE_S = 6 * 3600.0
WARMUP = 20


class UsualLevels:
    def __init__(self, topology: Topology, kinds: dict[str, EntityKind]) -> None:
        self._kinds = kinds
        self._log = {name: np.zeros(topology.count(kind)) for name, kind in kinds.items()}
        self._seen = {name: np.zeros(topology.count(kind), dtype=np.int64) for name, kind in kinds.items()}
        self._at = dict.fromkeys(kinds, -np.inf)

    def forget(self, topology: Topology, entities: IntArray) -> None:
        """A repaired part's usual level is learnt again (a rebuilt array is a new normal)."""
        for name, kind in self._kinds.items():
            pick = topology.local[entities[topology.kind_code[entities] == KIND_CODE[kind]]]
            self._log[name][pick] = 0.0
            self._seen[name][pick] = 0

    def usual(self, name: str) -> FloatArray:
        """Per entity: its usual level (NaN until learnt)."""
        return np.where(self._seen[name] >= WARMUP, np.exp(self._log[name]), np.nan)

    def learn(self, name: str, value: FloatArray, quiet: BoolArray, now: float) -> None:
        log, seen = self._log[name], self._seen[name]
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.log(value)
        ok = quiet & np.isfinite(y)
        last = self._at[name]
        decay = 0.0 if not np.isfinite(last) else 1.0 - 0.5 ** (max(now - last, 0.0) / USUAL_HALFLIFE_S)
        seen[ok] += 1
        step = np.where(seen[ok] <= WARMUP, 1.0 / np.maximum(seen[ok], 1), decay)
        log[ok] += step * (y[ok] - log[ok])
        self._at[name] = now
