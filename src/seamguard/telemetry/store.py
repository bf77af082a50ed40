"""Columnar telemetry store: one numpy vector per signal over the entities of its kind.

Samples are aligned to ticks: within one tick the latest sample of a series wins (bitmasks
are OR-ed, events are all kept). Missing data stays NaN; a value is carried forward only
until it is ``stale_after_s`` old. Signals that a trend detector reads also keep a ring
buffer of the last ``window`` ticks, so the store's memory is bounded whatever the input size.
Sensor faults are screened here (``plausibility``): a value outside its signal's physical range
makes that value missing, a counter going down gives no rate, a flatlined reading is missing
until it moves.

Time has two uses here. Where a sample sits (staleness, windows, which sample is newer) reads
its stamp re-timed by the clock aligner (``clock.py``), so a skewed node is not stale early. A
counter's rate divides by the interval between the source's *own* stamps: both come from one
clock, so their difference is exact whatever the re-timing did in between (the correction follows
each tick's estimate, which moves with the phase of the domain's newest sample).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from seamguard.columns import nanmedian_columns
from seamguard.model.catalog import SignalCatalog, SignalKind
from seamguard.model.topology import KIND_CODE, KINDS, Topology
from seamguard.model.world import WorldChange, carry
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.clock import ClockAligner
from seamguard.telemetry.plausibility import Flatlines, ValueRanges, counter_increase

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# DCGM reports "field not supported / blank" as values near 2^63 (e.g. 0x7ff0000000000000 - n);
# anything at or above 2^62 in magnitude is such a sentinel, never a measurement.
SENTINEL_THRESHOLD = float(2**62)


@dataclass
class IngestReport:
    accepted: int = 0
    sentinel: int = 0
    nonfinite: int = 0
    kind_mismatch: int = 0
    out_of_range: int = 0
    implausible: int = 0  # outside the signal's physical range: not a measurement, read as missing
    resets: int = 0  # counter samples below the previous value (reboot, driver reload): no rate

    def merge(self, other: IngestReport) -> None:
        self.accepted += other.accepted
        self.sentinel += other.sentinel
        self.nonfinite += other.nonfinite
        self.kind_mismatch += other.kind_mismatch
        self.out_of_range += other.out_of_range
        self.implausible += other.implausible
        self.resets += other.resets


@dataclass(frozen=True)
class TickEvents:
    """The events (e.g. XIDs) of one signal received in the current tick, all of them."""

    local: IntArray
    code: IntArray
    timestamp: FloatArray


@dataclass
class _Series:
    kind: SignalKind
    size: int
    last_value: FloatArray
    last_seen: FloatArray
    ring: FloatArray | None = None  # (window, size)
    rate: FloatArray | None = None  # counters: per-second rate at the last sample
    stamp: FloatArray | None = None  # counters: the last sample's stamp as the source sent it
    events: TickEvents | None = None
    extras: dict[str, FloatArray] = field(default_factory=dict)
    interval_s: float = np.nan  # the series' sampling cadence, learnt from what arrives


class TelemetryStore:
    def __init__(
        self,
        topology: Topology,
        catalog: SignalCatalog,
        *,
        window: int = 20,
        stale_after_s: float = 180.0,
        history_signals: Iterable[str] = (),
        clock_skew_s: float | None = None,
        tick_s: float = 0.0,
        flatline: Mapping[str, float] | None = None,
        flatline_alarms: tuple[Mapping[str, float], Mapping[str, float]] | None = None,
    ) -> None:
        if window < 2:
            raise ValueError("window must hold at least 2 ticks")
        self.topology = topology
        self.catalog = catalog
        self.window = window
        self.stale_after_s = stale_after_s
        history = set(history_signals)
        self._signal_kind_code = np.array([KIND_CODE[s.entity] for s in catalog.signals], dtype=np.int8)
        self._series: list[_Series] = []
        for sig in catalog.signals:
            n = topology.count(sig.entity)
            series = _Series(
                kind=sig.kind,
                size=n,
                last_value=np.full(n, np.nan),
                last_seen=np.full(n, -np.inf),
            )
            if sig.name in history and sig.kind is not SignalKind.EVENT:
                series.ring = np.full((window, n), np.nan)
            if sig.kind is SignalKind.COUNTER:
                series.rate = np.full(n, np.nan)
                series.stamp = np.full(n, -np.inf)
            self._series.append(series)
        self._ranges = ValueRanges(catalog)
        sizes = {name: topology.count(catalog[name].entity) for name in flatline or {}}
        self.flatlines = Flatlines(catalog, sizes, flatline or {}, *(flatline_alarms or ({}, {})))
        self.tick_ts = np.full(window, np.nan)
        # None: sample times are taken as stamped (a replay binned by its own stamps)
        self.clock = ClockAligner(topology, clock_skew_s, tick_s) if clock_skew_s is not None else None
        self._slot = -1
        self.now = -np.inf
        self.ticks = 0

    # ---- ingest -------------------------------------------------------------------------
    def ingest(self, now: float, batch: TelemetryBatch) -> IngestReport:
        """Align ``batch`` to the tick at ``now``; returns what was accepted and what was dropped."""
        report = IngestReport()
        self._slot = (self._slot + 1) % self.window
        self.tick_ts[self._slot] = now
        self.now = now
        self.ticks += 1
        for series in self._series:
            if series.ring is not None:
                series.ring[self._slot].fill(np.nan)
            series.events = None
        if len(batch) == 0:
            return report

        ent, sig, ts, val = batch.entity, batch.signal, batch.timestamp, batch.value
        in_range = (ent >= 0) & (ent < self.topology.n_entities) & (sig >= 0) & (sig < len(self._series))
        report.out_of_range = int(np.count_nonzero(~in_range))
        if report.out_of_range:
            ent, sig, ts, val = ent[in_range], sig[in_range], ts[in_range], val[in_range]
        stamp = ts  # as the source sent it: a counter's interval is measured on this clock
        if self.clock is not None:
            ts = self.clock.correct(now, ent, ts)
        kind_ok = self.topology.kind_code[ent] == self._signal_kind_code[sig]
        report.kind_mismatch = int(np.count_nonzero(~kind_ok))
        finite = np.isfinite(val) & np.isfinite(ts)
        sentinel = finite & (np.abs(val) >= SENTINEL_THRESHOLD)
        report.nonfinite = int(np.count_nonzero(kind_ok & ~finite))
        report.sentinel = int(np.count_nonzero(kind_ok & sentinel))
        keep = kind_ok & finite & ~sentinel
        implausible = keep & self._ranges.outside(sig, val)
        report.implausible = int(np.count_nonzero(implausible))
        if report.implausible:
            self._blank(sig[implausible], self.topology.local[ent[implausible]])
            keep &= ~implausible
        ent, sig, ts, val, stamp = ent[keep], sig[keep], ts[keep], val[keep], stamp[keep]
        report.accepted = int(ent.size)
        if ent.size == 0:
            return report

        order = np.argsort(sig, kind="stable")
        sig_sorted = sig[order]
        bounds = np.flatnonzero(np.diff(sig_sorted)) + 1
        starts = np.concatenate(([0], bounds))
        ends = np.concatenate((bounds, [sig_sorted.size]))
        local_all = self.topology.local[ent]
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            idx = order[a:b]
            report.resets += self._ingest_signal(
                int(sig_sorted[a]), local_all[idx], ts[idx], val[idx], stamp[idx]
            )
        return report

    def _blank(self, sig: IntArray, local: IntArray) -> None:
        """Implausible samples: the value is missing, not the one before it carried forward (a
        plausible sample of the same tick, ingested after, still counts)."""
        for s in np.unique(sig).tolist():
            self._series[s].last_value[local[sig == s]] = np.nan

    def _ingest_signal(
        self, s: int, local: IntArray, ts: FloatArray, val: FloatArray, stamp: FloatArray
    ) -> int:
        """``ts``: re-timed stamps, ``stamp``: the source's own. Returns the counter resets seen."""
        series = self._series[s]
        if series.kind is SignalKind.EVENT:
            series.events = TickEvents(local=local, code=val.astype(np.int64), timestamp=ts)
            newest = np.full(series.size, -np.inf)
            np.maximum.at(newest, local, ts)
            hit = newest > series.last_seen
            series.last_seen[hit] = newest[hit]
            return 0
        if np.bincount(local, minlength=series.size).max(initial=0) > 1:
            order = np.lexsort((ts, local))
            local, ts, val, stamp = local[order], ts[order], val[order], stamp[order]
            same = local[1:] == local[:-1]
            first = np.concatenate(([True], ~same))
            gaps = np.where(first, ts - series.last_seen[local], np.concatenate(([0.0], np.diff(ts))))
            _learn_cadence(series, gaps)
            pick, val = _latest_per_entity(local, val, first, bitwise_or=series.kind is SignalKind.BITMASK)
            local, ts, stamp = local[pick], ts[pick], stamp[pick]
        else:
            _learn_cadence(series, ts - series.last_seen[local])
        if series.kind is not SignalKind.COUNTER:  # (counters drop them below, with their rate)
            newer = ts >= series.last_seen[local]  # a late, older sample never replaces a newer one
            local, ts, val = local[newer], ts[newer], val[newer]
        resets = 0
        if series.kind is SignalKind.COUNTER and series.rate is not None and series.stamp is not None:
            prev_v = series.last_value[local]
            dt = stamp - series.stamp[local]  # one clock: exact, whatever the re-timing did
            usable = np.isfinite(prev_v) & (dt > 0)
            # A counter that went down was reset (reboot, driver reload, exporter restart): what
            # happened across the reset is unknown, so that sample has no rate (NaN); the next
            # sample's rate is taken from the value after the reset.
            increase, reset = counter_increase(prev_v, val)
            resets = int(np.count_nonzero(usable & reset))
            with np.errstate(invalid="ignore", divide="ignore"):
                rate = np.where(usable, increase / np.where(usable, dt, 1.0), np.nan)
            series.rate[local] = np.where(usable, rate, series.rate[local])
            newer = ~(dt <= 0)
            local, ts, val = local[newer], ts[newer], val[newer]
            series.stamp[local] = stamp[newer]
            history = rate[newer]  # a counter's history is its per-interval rates
        else:
            history = val
        self.flatlines.observe(s, local, ts, val)
        series.last_value[local] = val
        series.last_seen[local] = ts
        if series.ring is not None:
            series.ring[self._slot, local] = history
        return resets

    def forget(self, entities: IntArray) -> None:
        """Drop all that is known of these entities (global indices): a repaired part starts a
        fresh history, so what its counters did while out for repair is not read as a fault."""
        kinds, local = self.topology.kind_code[entities], self.topology.local[entities]
        for s, series in enumerate(self._series):
            pick = local[kinds == self._signal_kind_code[s]]
            if pick.size == 0:
                continue
            series.last_value[pick] = np.nan
            series.last_seen[pick] = -np.inf
            if series.rate is not None:
                series.rate[pick] = np.nan
            if series.stamp is not None:
                series.stamp[pick] = -np.inf
            if series.ring is not None:
                series.ring[:, pick] = np.nan
            self.flatlines.forget(s, pick)

    def carry_over(self, change: WorldChange) -> None:
        """Onto ``change.new``: each series of a kind that moved is re-indexed (``model.world``);
        the series of kinds that did not (every kind but JOB on a job change) are left as they are."""
        for s, series in enumerate(self._series):
            kind = KINDS[int(self._signal_kind_code[s])]
            if change.same(kind):
                continue
            fwd = change.kind(kind)
            series.size = int(fwd.size)
            series.last_value = carry(series.last_value, fwd, np.nan)
            series.last_seen = carry(series.last_seen, fwd, -np.inf)
            if series.ring is not None:
                series.ring = carry(series.ring, fwd, np.nan, axis=1)
            if series.rate is not None:
                series.rate = carry(series.rate, fwd, np.nan)
            if series.stamp is not None:
                series.stamp = carry(series.stamp, fwd, -np.inf)
            series.events = None  # this tick's only: the next ingest replaces them
            series.extras = {k: carry(v, fwd, np.nan) for k, v in series.extras.items()}
            self.flatlines.carry_over(s, fwd)
        if self.clock is not None:
            self.clock.carry_over(change)
        self.topology = change.new

    # ---- reads --------------------------------------------------------------------------
    def _index(self, name: str) -> _Series:
        return self._series[self.catalog[name].index]

    def fresh(self, name: str) -> npt.NDArray[np.bool_]:
        series = self._index(name)
        with np.errstate(invalid="ignore"):  # before the first tick: -inf - -inf, nothing is fresh
            return (self.now - series.last_seen) <= self.stale_after_s

    def current(self, name: str) -> FloatArray:
        """Latest value per entity, NaN where missing, stale or flatlined."""
        series = self._index(name)
        value = np.where(self.fresh(name), series.last_value, np.nan)
        s = self.catalog[name].index
        if self.flatlines.tracks(s):
            value[self.flatlines.flat(s, series.last_seen)] = np.nan
        return value

    def flatlined(self, name: str) -> tuple[npt.NDArray[np.bool_], FloatArray, FloatArray]:
        """(fresh readings stuck at one value past the signal's flatline limit, that value, for
        how many seconds); all False for a signal without a limit."""
        series = self._index(name)
        s = self.catalog[name].index
        flat = self.flatlines.flat(s, series.last_seen) & self.fresh(name)
        value = self.flatlines.value.get(s, series.last_value)  # the stuck value, even if blanked since
        return flat, value, self.flatlines.held_for(s, series.last_seen)

    def last_seen(self, name: str) -> FloatArray:
        return self._index(name).last_seen

    def reported(self, name: str) -> FloatArray | None:
        """``current``, or None until some entity has reported the signal (a site may send none of
        it, or the catalog not know it): then a missing value says nothing about its entity."""
        if self.catalog.get(name) is None or not np.isfinite(self._index(name).last_seen).any():
            return None
        return self.current(name)

    def tick_samples(self, name: str) -> FloatArray:
        """The values that arrived in the current tick (NaN where none did): a history signal."""
        _tick_ts, ring = self.history(name)
        return np.array(ring[self._slot], dtype=np.float64)

    def cadence(self, name: str) -> float:
        """The series' typical sampling interval in seconds (NaN until two samples arrived)."""
        return self._index(name).interval_s

    def windowed_median(self, name: str, seconds: float, min_samples: int = 3) -> FloatArray:
        """Per entity: the median of its samples of the last ``seconds``, NaN where fewer than
        ``min_samples`` arrived or the series is stale. One spike among three or more samples
        never moves it."""
        return self._windowed(name, seconds, min_samples, nanmedian_columns)

    def windowed_rate(self, name: str, seconds: float, min_samples: int = 3) -> FloatArray:
        """Per entity: a counter's mean rate over the last ``seconds`` (the events counted over
        the window, all of them: at a few events a minute every one is information)."""
        return self._windowed(name, seconds, min_samples, lambda x: np.nanmean(x, axis=0))

    def _windowed(
        self, name: str, seconds: float, min_samples: int, reduce: Callable[..., FloatArray]
    ) -> FloatArray:
        tick_ts, ring = self.history(name)
        rows = np.flatnonzero(tick_ts >= self.now - seconds)
        recent = ring[rows]
        enough = np.count_nonzero(np.isfinite(recent), axis=0) >= min_samples
        out = np.full(recent.shape[1], np.nan)
        if enough.any():
            cols = np.flatnonzero(enough & self.fresh(name))
            out[cols] = reduce(recent[:, cols])
        return out

    def rate(self, name: str) -> FloatArray:
        """Per-second rate of a counter, reset-aware, NaN where unknown or stale."""
        series = self._index(name)
        if series.rate is None:
            raise KeyError(f"{name} is not a counter")
        return np.where(self.fresh(name), series.rate, np.nan)

    def events(self, name: str) -> TickEvents | None:
        return self._index(name).events

    def history(self, name: str) -> tuple[FloatArray, FloatArray]:
        """(tick timestamps (W,), values (W, n)) in ring order; slots never written are NaN.
        A counter's history holds its per-interval rates (per second), not its totals."""
        series = self._index(name)
        if series.ring is None:
            raise KeyError(f"{name} keeps no history; list it in history_signals")
        return self.tick_ts, series.ring

    def fresh_any(self, names: Iterable[str], size: int) -> npt.NDArray[np.bool_]:
        """Entities with at least one fresh signal among ``names`` (event signals excluded)."""
        out = np.zeros(size, dtype=bool)
        for name in names:
            if self.catalog[name].kind is SignalKind.EVENT:
                continue
            out |= self.fresh(name)
        return out

    def nbytes(self) -> int:
        total = self.tick_ts.nbytes
        for s in self._series:
            total += s.last_value.nbytes + s.last_seen.nbytes
            total += s.ring.nbytes if s.ring is not None else 0
            total += s.rate.nbytes if s.rate is not None else 0
            total += s.stamp.nbytes if s.stamp is not None else 0
        return total + self.flatlines.nbytes()


CADENCE_SAMPLE = 4096  # intervals looked at per tick: the median of a few thousand is the fleet's
CADENCE_SMOOTHING = 0.2
# Gaps shorter than this are one sample delivered twice (two scrapers of one exporter a second
# apart, a push retried), not a cadence; a series sampled faster has no learnt cadence.
MIN_GAP_S = 2.0


def _learn_cadence(series: _Series, dt: FloatArray) -> None:
    """Smooth the median interval between consecutive samples into ``series.interval_s``."""
    gaps = dt[:CADENCE_SAMPLE]
    gaps = gaps[np.isfinite(gaps) & (gaps >= MIN_GAP_S)]
    if gaps.size == 0:
        return
    med = float(np.median(gaps))
    prev = series.interval_s
    series.interval_s = med if not np.isfinite(prev) else prev + CADENCE_SMOOTHING * (med - prev)


def _latest_per_entity(
    local: IntArray, val: FloatArray, first: npt.NDArray[np.bool_], *, bitwise_or: bool
) -> tuple[IntArray, FloatArray]:
    """Collapse duplicate samples of one series within a tick: latest wins, bitmasks OR.
    ``local`` and ``val`` come sorted by (entity, time), ``first`` marks each entity's first
    sample. Returns the index of each entity's latest sample (so the caller picks its other
    columns) and the value kept for it."""
    last = np.ones(local.size, dtype=bool)
    last[:-1] = first[1:]
    pick = np.flatnonzero(last)
    if bitwise_or:
        ored = np.bitwise_or.reduceat(val.astype(np.int64), np.flatnonzero(first))
        return pick, ored.astype(np.float64)
    return pick, val[pick]
