"""The one way learnt normals are averaged: a running mean over a warm-up, then an exponential
average with a half-life. The warm-up gives a first estimate as good as its readings allow (an
exponential average seeded by its first reading keeps that reading's noise for hours); the
half-life lets a normal follow slow, legitimate change."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

WARMUP = 20  # readings averaged before an entity is judged against what was learnt


def decay_since(last: float, now: float, halflife_s: float) -> float:
    """The weight a new reading gets after ``now - last`` seconds (0 before any reading)."""
    return 0.0 if not np.isfinite(last) else 1.0 - 0.5 ** (max(now - last, 0.0) / halflife_s)


def average_in(seen: IntArray, ok: BoolArray, decay: float, *pairs: tuple[FloatArray, FloatArray]) -> None:
    """Fold this tick's readings into their averages, in place, where ``ok``: each pair is
    (average, reading), all indexed like ``seen`` (how many readings each average holds)."""
    seen[ok] += 1
    step = np.where(seen[ok] <= WARMUP, 1.0 / np.maximum(seen[ok], 1), decay)
    for average, reading in pairs:
        average[ok] += step * (reading[ok] - average[ok])


def learnt(seen: IntArray) -> BoolArray:
    return np.asarray(seen >= WARMUP, dtype=bool)
