"""XID events from what dcgm-exporter publishes about them, three ways, merged without counting
one XID twice.

- ``DCGM_EXP_XID_ERRORS_TOTAL{xid}`` (exporter 4.8.3 and later, opt-in): a counter per GPU and
  code since the exporter started; its series appears with a GPU's first XID of that code. A rise
  is as many new events; a fall is the exporter's restart, after which the value counts anew.
- ``DCGM_EXP_XID_ERRORS_COUNT{xid,window_size_in_ms}`` (opt-in): a gauge, the records of each code
  inside a sliding window, plus one 0-valued series without ``xid`` for a GPU with none. A record
  leaves ``W`` after it arrived, so a rise is news, a fall is expiry (never a recovery), and a
  count that stays flat while one record leaves and another comes hides an event. Each record
  counted is kept as the interval in which it arrived, ``(lo, hi]`` (after the GPU's previous
  read, by the read that counted it), in groups ``[lo, hi, k]``: a record whose ``hi`` lies more
  than ``W + slack`` back has surely left (``slack`` covers the exporter's collect interval, a
  Prometheus in between, and clock skew), so the count can hold at most the records not surely
  gone, and anything beyond that is new. A fall releases only records that could have left; a
  code absent from a read releases nothing unless the GPU's 0-valued row says its window is
  empty (a lost line is not an expiry). This never counts a record twice. It can miss some of
  a steady stream of one code (each new record is seen late, so later ones hide behind it); the
  first of a burst is always seen, at most one read plus ``slack`` late.
- ``DCGM_FI_DEV_XID_ERRORS`` (stock): the last XID's code; a change to a new non-zero code is
  one event. It cannot see a repeat of a code, nor two codes between reads.

Each way keeps, per (GPU, code), how many events it has seen since its baseline; the events
emitted are the largest of the three counts, so a record the total, the window and the gauge all
see is one event, and whichever sees it first reports it. A GPU read for the first time only
sets the baseline: what its counters hold may be hours old. XIDs are rare, so the per-record
bookkeeping is plain Python over the few GPUs with something to say; a fleet's quiet GPUs are
array updates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from seamguard.model.world import WorldChange, carry

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

MAX_EVENTS_PER_READ = 8  # rows emitted per GPU and code and read: a storm is one strong signal
MAX_COUNT = 1_000_000  # a count past this is a storm, or garbage: held as this many
TOTAL, WINDOW, GAUGE = 0, 1, 2  # the three ways, as indices into a merged row


@dataclass
class Detections:
    """New events per (GPU, code) seen by one way in one read; ``t`` is when they were read."""

    gpu: list[int] = field(default_factory=list)
    code: list[int] = field(default_factory=list)
    count: list[int] = field(default_factory=list)
    t: list[float] = field(default_factory=list)

    def add(self, gpu: int, code: int, count: int, t: float) -> None:
        self.gpu.append(gpu)
        self.code.append(code)
        self.count.append(count)
        self.t.append(t)


@dataclass
class XidEvents:
    """The XID state of one source: the window's held records, the last totals and gauge codes,
    and what each way has seen per (GPU, code)."""

    size: int  # entity indices are below this
    slack_s: float  # xid_window_slack_s of the source's config
    held: dict[int, dict[int, list[list[float]]]] = field(default_factory=dict)  # gpu -> code -> [lo, hi, k]
    totals: dict[tuple[int, int], float] = field(default_factory=dict)  # (gpu, code) -> last total
    # (gpu, code) -> [seen by total, by window, by gauge, emitted, when last seen]
    merged: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    window_read_at: FloatArray = field(init=False)  # per GPU: last window read (NaN: never)
    gauge_last: FloatArray = field(init=False)  # per GPU: the gauge's last code (NaN: never read)

    def __post_init__(self) -> None:
        self.window_read_at = np.full(self.size, np.nan)
        self.gauge_last = np.full(self.size, np.nan)

    def carried(self, change: WorldChange) -> XidEvents:
        """This state in ``change.new``'s entity indices; GPUs that left are forgotten."""
        back = change.back()
        out = XidEvents(change.new.n_entities, self.slack_s)
        out.held = {int(back[g]): v for g, v in self.held.items() if back[g] >= 0}
        out.totals = {(int(back[g]), c): v for (g, c), v in self.totals.items() if back[g] >= 0}
        out.merged = {(int(back[g]), c): v for (g, c), v in self.merged.items() if back[g] >= 0}
        out.window_read_at = carry(self.window_read_at, change.entities, np.nan)
        out.gauge_last = carry(self.gauge_last, change.entities, np.nan)
        return out

    # ---- the three ways ---------------------------------------------------------------------
    def read_totals(self, gpu: IntArray, code: IntArray, total: FloatArray, t: FloatArray,
                    known: BoolArray) -> Detections:  # fmt: skip
        """One row per (GPU, code) with a total. ``known``: the GPU was read before this poll, so
        a series it had not shown yet is news (its first XID of that code since the exporter
        started), not history."""
        out = Detections()
        for g, c, v, when, old in zip(gpu.tolist(), code.tolist(), np.minimum(total, MAX_COUNT).tolist(),
                                      t.tolist(), known.tolist(), strict=True):  # fmt: skip
            if c <= 0:
                continue
            prev = self.totals.get((g, c))
            self.totals[(g, c)] = v
            # a series first seen counts if its GPU was read before; a fall is the exporter's restart
            new = (v if old else 0.0) if prev is None else (v - prev if v >= prev else v)
            if new > 0:
                out.add(g, c, int(new), when)
        return out

    def read_window(self, gpu: IntArray, code: IntArray, count: FloatArray, t: FloatArray,
                    window_s: FloatArray) -> Detections:  # fmt: skip
        """One row per (GPU, code) of the windowed count; code 0 is a GPU's "window empty" row."""
        out = Detections()
        gpus, inv = np.unique(gpu, return_inverse=True)
        t_gpu = np.full(gpus.size, -np.inf)
        np.maximum.at(t_gpu, inv, t)
        w_gpu = np.zeros(gpus.size)
        np.maximum.at(w_gpu, inv, window_s)
        busy = np.zeros(gpus.size, dtype=bool)
        busy[inv[(count > 0) & (code > 0)]] = True
        if self.held:
            busy |= np.isin(gpus, np.fromiter(self.held, np.int64, len(self.held)))
        rows: dict[int, dict[int, int]] = {}
        empty: set[int] = set()
        for r in np.flatnonzero(busy[inv]).tolist():
            g, c = int(gpu[r]), int(code[r])
            if c <= 0:
                empty.add(g)
            else:
                rows.setdefault(g, {})[c] = int(min(count[r], MAX_COUNT))
        for k in np.flatnonzero(busy).tolist():
            g, now, w = int(gpus[k]), float(t_gpu[k]), float(w_gpu[k])
            prev = float(self.window_read_at[g])
            seen = rows.get(g, {})
            kept: dict[int, list[list[float]]] = {}
            for c in set(seen) | set(self.held.get(g, {})):
                groups = [grp for grp in self.held.get(g, {}).get(c, []) if grp[1] > now - w - self.slack_s]
                n = seen.get(c, 0 if g in empty else None)
                if n is not None:
                    groups = self._count(g, c, n, groups, now, w, prev, out)
                if groups:
                    kept[c] = groups
            if kept:
                self.held[g] = kept
            else:
                self.held.pop(g, None)
        self.window_read_at[gpus] = t_gpu
        return out

    def _count(self, g: int, c: int, n: int, groups: list[list[float]], now: float, w: float,
               prev: float, out: Detections) -> list[list[float]]:  # fmt: skip
        """One code's count against the records held for it: what is new, what has left."""
        held = int(sum(grp[2] for grp in groups))
        if np.isnan(prev):  # the GPU's first window read: these arrived some time in the window
            return [[now - w, now, float(n)]] if n else []
        if n > held:
            out.add(g, c, n - held, now)
            return [*groups, [prev, now, float(n - held)]]
        excess = held - n  # some left: only records that could have left, the oldest first
        for grp in sorted(groups, key=lambda x: x[1]):
            if excess <= 0:
                break
            if grp[0] < now - w + self.slack_s:
                gone = min(excess, int(grp[2]))
                grp[2] -= gone
                excess -= gone
        return [grp for grp in groups if grp[2] > 0]

    def read_gauge(self, gpu: IntArray, value: FloatArray, t: FloatArray) -> Detections:
        """One row per GPU of the last XID's code: a change to a new non-zero code is an event;
        the GPU's first gauge read is its baseline."""
        prev = self.gauge_last[gpu]
        fired = np.isfinite(prev) & (value > 0) & (value != prev)
        self.gauge_last[gpu] = value
        out = Detections()
        for g, c, when in zip(gpu[fired].tolist(), value[fired].astype(np.int64).tolist(), t[fired].tolist(),
                              strict=True):  # fmt: skip
            out.add(g, c, 1, when)
        return out

    # ---- merged ---------------------------------------------------------------------------------
    def merge(
        self, found: dict[int, Detections], now: float, horizon_s: float
    ) -> tuple[IntArray, IntArray, FloatArray]:
        """The events to emit, as (gpu, code, timestamp): per (GPU, code), the largest count any
        way has seen, less what was already emitted. A (GPU, code) nothing has seen for
        ``horizon_s`` (past the longest a way can lag another) is forgotten."""
        out_g: list[int] = []
        out_c: list[int] = []
        out_t: list[float] = []
        touched: dict[tuple[int, int], float] = {}
        for way, det in found.items():
            for g, c, n, when in zip(det.gpu, det.code, det.count, det.t, strict=True):
                row = self.merged.setdefault((g, c), [0.0, 0.0, 0.0, 0.0, now])
                row[way] += n
                row[4] = now
                touched[(g, c)] = max(touched.get((g, c), -np.inf), when)
        for key, when in touched.items():
            row = self.merged[key]
            new = int(max(row[TOTAL], row[WINDOW], row[GAUGE]) - row[3])
            if new > 0:
                row[3] += new
                shown = min(new, MAX_EVENTS_PER_READ)
                out_g.extend([key[0]] * shown)
                out_c.extend([key[1]] * shown)
                out_t.extend([when] * shown)
        stale = [k for k, row in self.merged.items() if now - row[4] > horizon_s]
        for k in stale:
            del self.merged[k]
        return np.asarray(out_g, dtype=np.int64), np.asarray(out_c, dtype=np.int64), np.asarray(out_t)
