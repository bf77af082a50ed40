"""Is a sample a measurement at all? The store's checks against sensor faults, all vectorised.

* **Physical range**: every gauge has one in the catalog (``signals.yaml``); a value outside it
  (a garbled read, a wrong unit, a driver's 2^32-1) is *implausible*: not a measurement.
* **Counter resets**: a monotone total that goes down was reset (reboot, driver reload,
  exporter restart). The sample gives no rate at all: the increase across a reset is unknown,
  and guessing it (Prometheus' ``rate()`` takes the new value as the increase) turns a
  driver reload with a nonzero uncorrectable-ECC count into a hard failure.
* **Flatlines**: a reading that stays *exactly* the same for far longer than its noise allows is
  a stuck sensor. ``Flatlines`` keeps, per entity and configured signal, the last value and when
  it last changed; the store blanks a flatlined value until the reading moves again.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from seamguard.model.catalog import SignalCatalog, SignalKind
from seamguard.model.world import carry

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


class Flatlines:
    """When each entity's reading of each configured gauge last changed.

    ``limits``: signal name -> seconds a reading may stay exactly the same. A reading is
    flatlined once the samples received have carried one value for at least that long; it
    stays so until a sample carries another value.
    """

    def __init__(
        self,
        catalog: SignalCatalog,
        sizes: Mapping[str, int],
        limits: Mapping[str, float],
        alarm_below: Mapping[str, float] | None = None,
        alarm_above: Mapping[str, float] | None = None,
    ) -> None:
        self.limit: dict[int, float] = {}
        # A reading held at or past an alarm bound (its physical range's edge, or the soft limit
        # of its level rule) is never taken for a stuck sensor: a backend whose every write hits
        # the client timeout, a stopped pump at 0 L/min, read the same value for good reasons.
        self.low: dict[int, float] = {}
        self.high: dict[int, float] = {}
        self.value: dict[int, FloatArray] = {}
        self.changed_at: dict[int, FloatArray] = {}
        for name, seconds in limits.items():
            sig = catalog[name]
            if sig.kind is not SignalKind.GAUGE:
                raise ValueError(f"flatline: {name} is {sig.kind.with_article}; only a gauge can flatline")
            if not seconds > 0:
                raise ValueError(f"flatline: {name} needs a positive number of seconds, got {seconds}")
            n = sizes[name]
            self.limit[sig.index] = float(seconds)
            lo, hi = sig.range if sig.range is not None else (-np.inf, np.inf)
            self.low[sig.index] = max(lo, (alarm_below or {}).get(name, -np.inf))
            self.high[sig.index] = min(hi, (alarm_above or {}).get(name, np.inf))
            self.value[sig.index] = np.full(n, np.nan)
            self.changed_at[sig.index] = np.full(n, np.inf)

    def tracks(self, s: int) -> bool:
        return s in self.limit

    def observe(self, s: int, local: IntArray, ts: FloatArray, val: FloatArray) -> None:
        """The plausible samples of signal ``s`` this tick, at most one per entity."""
        if s not in self.limit:
            return
        value, changed = self.value[s], self.changed_at[s]
        moved = val != value[local]  # NaN (nothing seen yet) compares unequal: a first value
        changed[local[moved]] = ts[moved]
        value[local] = val

    def flat(self, s: int, last_seen: FloatArray) -> BoolArray:
        """Per entity: the reading has stayed exactly the same for at least the limit (received
        samples only: ``last_seen`` is the newest sample's time)."""
        if s not in self.limit:
            return np.zeros(last_seen.size, dtype=bool)
        held = self.value[s]
        with np.errstate(invalid="ignore"):
            alarming = (held <= self.low[s]) | (held >= self.high[s])
            out: BoolArray = ((last_seen - self.changed_at[s]) >= self.limit[s]) & ~alarming
        return out

    def held_for(self, s: int, last_seen: FloatArray) -> FloatArray:
        """Seconds the current value has been reported unchanged (NaN for untracked signals)."""
        if s not in self.limit:
            return np.full(last_seen.size, np.nan)
        return last_seen - self.changed_at[s]

    def forget(self, s: int, local: IntArray) -> None:
        if s in self.limit:
            self.value[s][local] = np.nan
            self.changed_at[s][local] = np.inf

    def carry_over(self, s: int, fwd: IntArray) -> None:
        """Signal ``s``'s entities re-indexed by ``fwd`` (new -> old, -1: joined, nothing seen yet)."""
        if s in self.limit:
            self.value[s] = carry(self.value[s], fwd, np.nan)
            self.changed_at[s] = carry(self.changed_at[s], fwd, np.inf)

    def nbytes(self) -> int:
        return sum(v.nbytes for v in self.value.values()) + sum(c.nbytes for c in self.changed_at.values())
