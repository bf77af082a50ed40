"""Is a sample a measurement at all? The store's checks against sensor faults, all vectorised.

* **Physical range**: every gauge has one in the catalog (``signals.yaml``); a value outside it
  (a garbled read, a wrong unit, a driver's 2^32-1) is *implausible*: not a measurement.
* **Counter resets**: a monotone total that goes down was reset (reboot, driver reload,
  exporter restart). The sample gives no rate at all: the increase across a reset is unknown,
  and guessing it (Prometheus' ``rate()`` takes the new value as the increase) turns a
  driver reload with a nonzero uncorrectable-ECC count into a hard failure.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from seamguard.model.catalog import SignalCatalog

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class ValueRanges:
    """Each signal's physical range by catalog index (unbounded for signals without one)."""

    def __init__(self, catalog: SignalCatalog) -> None:
        self.lo = np.array([s.range[0] if s.range else -np.inf for s in catalog.signals])
        self.hi = np.array([s.range[1] if s.range else np.inf for s in catalog.signals])

    def outside(self, sig: IntArray, val: FloatArray) -> BoolArray:
        """Per sample: a finite value outside its signal's range (NaN is not judged here)."""
        with np.errstate(invalid="ignore"):
            out: BoolArray = (val < self.lo[sig]) | (val > self.hi[sig])
        return out


def counter_increase(previous: FloatArray, value: FloatArray) -> tuple[FloatArray, BoolArray]:
    """(increase since the previous sample, NaN across a reset; the reset mask)."""
    delta = value - previous
    with np.errstate(invalid="ignore"):
        reset: BoolArray = delta < 0
    return np.where(reset, np.nan, delta), reset
