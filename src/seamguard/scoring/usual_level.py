"""Each entity's usual level of a signal, for trends gated on "well above its own normal".

A storage backend's p99 write latency rises for the length of every save its jobs make: a
trend in it is load unless the latency has stayed well above what this backend usually shows.
What is usual differs between backends by an order of magnitude (a flash tier at 10 ms, a disk
tier at 60), so a fixed gate in milliseconds is tuned to one site. The usual level is the
geometric mean of the entity's readings over USUAL_HALFLIFE_S, learnt only while the rule gives
the entity no evidence, after a warm-up (``learnt_average``; until then the rule does not judge it).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from seamguard.detector_config import DetectorsConfig
from seamguard.model.catalog import SignalCatalog
from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology
from seamguard.model.world import WorldChange, carry
from seamguard.scoring.learnt_average import average_in, decay_since, learnt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

USUAL_HALFLIFE_S = 6 * 3600.0
OWN = "own:"  # a usual rule's level is keyed apart from a trend gate's of the same signal: learnt always


def learnt_signals(detectors: DetectorsConfig, catalog: SignalCatalog) -> dict[str, EntityKind]:
    """Every usual level a config needs, by key: trend gates (``beyond_usual``) by signal name,
    learnt while quiet; usual rules by ``OWN`` + name, learnt from every reading, so that a change
    made on purpose (a pump's setpoint) becomes the new usual over hours, while a fault that
    lasts stays evidence for most of a half-life."""
    keys = {n: catalog[n].entity for n, r in detectors.trend.items() if r.beyond_usual is not None}
    return keys | {OWN + n: catalog[n].entity for n in detectors.usual}


class UsualLevels:
    def __init__(self, topology: Topology, kinds: dict[str, EntityKind]) -> None:
        self._kinds = kinds
        self._log = {name: np.zeros(topology.count(kind)) for name, kind in kinds.items()}
        self._seen = {name: np.zeros(topology.count(kind), dtype=np.int64) for name, kind in kinds.items()}
        self._at = dict.fromkeys(kinds, -np.inf)

    def carry_over(self, change: WorldChange) -> None:
        """Entities that stay keep their usual level; joiners learn theirs from nothing."""
        for name, kind in self._kinds.items():
            if not change.same(kind):
                self._log[name] = carry(self._log[name], change.kind(kind), 0.0)
                self._seen[name] = carry(self._seen[name], change.kind(kind), 0)

    def forget(self, topology: Topology, entities: IntArray) -> None:
        """A repaired part's usual level is learnt again (a rebuilt array is a new normal)."""
        for name, kind in self._kinds.items():
            pick = topology.local_index(kind, entities)
            self._log[name][pick] = 0.0
            self._seen[name][pick] = 0

    def usual(self, name: str) -> FloatArray:
        """Per entity: its usual level (NaN until learnt)."""
        return np.where(learnt(self._seen[name]), np.exp(self._log[name]), np.nan)

    def learn(self, name: str, value: FloatArray, quiet: BoolArray, now: float) -> None:
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.log(value)
        ok = quiet & np.isfinite(y)
        average_in(
            self._seen[name], ok, decay_since(self._at[name], now, USUAL_HALFLIFE_S), (self._log[name], y)
        )
        self._at[name] = now
