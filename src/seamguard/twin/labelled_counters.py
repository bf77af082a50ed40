"""The labelled fleet's monotone counters, closed-form so a tick never depends on earlier ones.

A counter reads ``floor(expected count + per-series phase + jitter smaller than one tick's
baseline increment)``: deterministic, monotone and averaging to the intended rate without
replaying history. Faults add their closed-form event counts (``labelled_physics.fault_count``);
a ``counter_reset`` confounder restarts the GPU's error counters from zero at its onset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.twin import labelled_physics as lp
from seamguard.twin.faults import Fault
from seamguard.twin.labelled_physics import fault_count
from seamguard.twin.observe import JITTER

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Counter:
    rate_per_s: float
    phase: FloatArray  # per-series fractional offset in [0, 1)
    origin: FloatArray  # per-series time the counter started (its uptime)


def expected(
    c: Counter, name: str, by_kind: Mapping[str, Sequence[Fault]], local: IntArray | None, times: FloatArray
) -> FloatArray:
    """Baseline events plus what the faults that feed ``name`` added, at ``times``."""
    phase = c.phase if local is None else c.phase[local]
    origin = c.origin if local is None else c.origin[local]
    lam = c.rate_per_s * (times - origin) + phase
    for f in (f for kind in lp.COUNTER_FAULTS[name] for f in by_kind.get(kind, [])):
        if local is None:
            lam[f.local] += fault_count(name, f, times[f.local : f.local + 1])[0]
        else:
            sel = local == f.local
            if np.any(sel):
                lam[sel] += fault_count(name, f, times[sel])
    return np.asarray(lam, dtype=np.float64)


def count(
    c: Counter,
    name: str,
    by_kind: Mapping[str, Sequence[Fault]],
    tick_s: float,
    times: FloatArray,
    eps: FloatArray | None,
) -> FloatArray:
    """floor(expected + jitter): the jitter stays below one tick's baseline increment, so the
    series is monotone (apart from injected resets) without depending on earlier ticks."""
    lam = expected(c, name, by_kind, None, times)
    if eps is not None and c.rate_per_s > 0:
        lam += eps * (c.rate_per_s * (1 - 2 * JITTER) * tick_s)
    value = np.floor(lam)
    if name in lp.RESET_COUNTERS:
        for f in by_kind.get("counter_reset", []):
            if times[f.local] >= f.onset:
                at = np.array([f.local], np.int64)
                value[f.local] -= np.floor(expected(c, name, by_kind, at, np.array([f.onset]))[0])
    return value
