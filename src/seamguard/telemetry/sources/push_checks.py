"""What a pushed batch may carry: stamps inside a window around the daemon's clock, and values
that are measurements (counted when they are not). Vectorised: one pass per batch.

A stamp is the client's word about *when*; the engine believes it (a sample a day ahead never
goes stale, an XID stamped in 2001 still fails a GPU). So the stamps of a batch are checked
against the daemon's own clock before anything is queued, and a batch with any stamp outside the
window is refused whole, naming the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.model.catalog import SignalCatalog
from seamguard.telemetry.plausibility import ValueRanges
from seamguard.telemetry.sources.sections import DEFAULT_MAX_AGE_S, DEFAULT_MAX_FUTURE_S
from seamguard.telemetry.store import SENTINEL_THRESHOLD
from seamguard.timeparse import format_time

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class TimeWindow:
    """Stamps accepted: from ``now - max_age_s`` to ``now + max_future_s`` of the daemon's clock."""

    max_future_s: float = DEFAULT_MAX_FUTURE_S
    max_age_s: float = DEFAULT_MAX_AGE_S

    def outside(self, now: float, ts: FloatArray) -> IntArray:
        """Indices of the stamps outside the window around ``now``."""
        return np.flatnonzero((ts > now + self.max_future_s) | (ts < now - self.max_age_s))

    def describe(self, now: float) -> str:
        lo, hi = now - self.max_age_s, now + self.max_future_s
        return (
            f"accepted from {format_time(lo)} to {format_time(hi)} "
            f"(the daemon's clock {format_time(now)} minus {self.max_age_s:g} s, plus {self.max_future_s:g} s)"
        )

    def why(self, now: float, ts: float) -> str:
        """One refused stamp, in absolute and relative terms."""
        off = ts - now
        rel = f"{off:,.0f} s ahead of" if off > 0 else f"{-off:,.0f} s behind"
        when = format_time(ts)
        when = "no calendar date" if "calendar" in when else when
        return f"timestamp {ts:g} ({when}) is {rel} the daemon's clock; {self.describe(now)}"


@dataclass(frozen=True)
class ValueCounts:
    """Values that are not measurements; queued as sent, the engine reads them as missing."""

    non_finite: int  # +-inf: a JSON number past the float range (1e999)
    implausible: int  # a DCGM blank sentinel (|v| >= 2^62) or outside the signal's physical range


class ValueScreen:
    """Counts a batch's non-measurements by signal, with the store's own rules (``plausibility``)."""

    def __init__(self, catalog: SignalCatalog) -> None:
        self._ranges = ValueRanges(catalog)

    def count(self, sig: IntArray, value: FloatArray) -> ValueCounts:
        """``sig``: catalog indices of known signals only."""
        inf = np.isinf(value)
        finite = np.isfinite(value)
        with np.errstate(invalid="ignore"):
            sentinel = finite & (np.abs(value) >= SENTINEL_THRESHOLD)
        implausible = sentinel | (finite & self._ranges.outside(sig, value))
        return ValueCounts(int(np.count_nonzero(inf)), int(np.count_nonzero(implausible)))
