"""Evidence: what one detector concluded about one signal across all entities of a kind."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.model.entities import EntityKind

FloatArray = npt.NDArray[np.float64]
Formatter = Callable[[float, float], str]


@dataclass(frozen=True)
class Evidence:
    """Per-entity evidence in [0, 1] (never NaN) plus the measurement behind it.

    ``measure`` and ``extra`` are kept so that an explanation can be written later for the
    handful of entities that change state, instead of formatting text for the whole fleet.
    """

    detector: str
    signal: str
    kind: EntityKind
    weight: float
    evidence: FloatArray
    measure: FloatArray
    extra: FloatArray
    formatter: Formatter
    recovery: bool = False
    # What the reading says before any load gate (a trend's ``beyond``): a coupled reading that
    # moves the fault's way corroborates another even while its own evidence is held back.
    support: FloatArray | None = None

    def describe(self, local: int) -> str:
        return self.formatter(float(self.measure[local]), float(self.extra[local]))


def unit(x: FloatArray) -> FloatArray:
    """Clipped to [0, 1] with NaN as 0, in two ufuncs (``nan_to_num`` costs ten times more per
    call, and the engine calls this for every rule of every tick of every cell)."""
    return np.where(x > 0.0, np.minimum(x, 1.0), 0.0)


def ramp(x: FloatArray, lo: float, hi: float) -> FloatArray:
    """0 at or below ``lo``, 1 at or above ``hi``, linear between; NaN maps to 0."""
    return unit((x - lo) / (hi - lo))


def make_evidence(
    detector: str,
    signal: str,
    kind: EntityKind,
    weight: float,
    evidence: FloatArray,
    measure: FloatArray,
    formatter: Formatter,
    *,
    extra: FloatArray | None = None,
    recovery: bool = False,
    support: FloatArray | None = None,
) -> Evidence:
    ev = unit(evidence)
    return Evidence(
        detector=detector,
        signal=signal,
        kind=kind,
        weight=weight,
        evidence=ev,
        measure=measure,
        extra=extra if extra is not None else np.zeros_like(measure),
        formatter=formatter,
        recovery=recovery,
        support=None if support is None else unit(support),
    )
