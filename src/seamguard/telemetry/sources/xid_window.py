"""XID events from dcgm-exporter's windowed count (``DCGM_EXP_XID_ERRORS_COUNT``).

The exporter publishes, per GPU and XID code, how many XID records DCGM holds from the last
``W`` ms (``--xid-count-window-size``; the series' ``window_size_in_ms`` label), plus one
0-valued series without an ``xid`` label per GPU that has none. It is a gauge: a record leaves
the count ``W`` after it arrived. So a count that rises is news and a count that falls is the
window's expiry, never a recovery; and when an old record leaves while a new one arrives, the
count stays flat although something happened.

To see that case too, each (GPU, code) keeps the records it has counted as arrival intervals
``(lo, hi]``: the record arrived after the GPU's previous read and by the read that first
counted it. At a read at ``t`` a record whose ``hi`` lies more than ``W + slack`` back must
have left the window; ``slack`` covers the exporter's collect interval (what it serves may be
that old) and clock skew. The count can therefore hold at most the records not yet surely
gone, and anything beyond that is new. This never counts an event twice, and misses none by
more than one read. XIDs are rare, so the bookkeeping is plain Python over the few GPUs with a
non-zero count, not a per-sample path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

MAX_EVENTS_PER_READ = 8  # per GPU and code: an XID storm is one strong signal, not 10,000 rows
DEFAULT_SLACK_S = 60.0  # dcgm-exporter collects every 30 s by default; plus clock skew


@dataclass
class XidWindows:
    """Per GPU (entity index): per code, the arrival intervals of the records counted."""

    size: int  # entity indices are below this
    slack_s: float = DEFAULT_SLACK_S
    held: dict[int, dict[int, list[tuple[float, float]]]] = field(default_factory=dict)
    seen_at: FloatArray = field(init=False)  # per entity: time of its last window read (NaN: never)

    def __post_init__(self) -> None:
        self.seen_at = np.full(self.size, np.nan)

    def update(
        self, entity: IntArray, code: IntArray, count: FloatArray, ts: FloatArray, window_s: FloatArray
    ) -> tuple[IntArray, IntArray, FloatArray]:
        """One read's rows, one per (GPU, code); code 0 is a GPU's "no XID in the window" row.

        Returns the new events as (entity, code, timestamp). A GPU read for the first time only
        sets the baseline: what its window holds may be minutes old, and is not news. Only GPUs
        with a count or with records still held take the per-record path; a fleet's quiet GPUs
        (one 0-valued row each) are one array update."""
        gpus, inv = np.unique(entity, return_inverse=True)
        t_gpu = np.full(gpus.size, -np.inf)
        np.maximum.at(t_gpu, inv, ts)
        busy = np.zeros(gpus.size, dtype=bool)
        busy[inv[(count > 0) & (code > 0)]] = True
        if self.held:
            busy |= np.isin(gpus, np.fromiter(self.held, np.int64, len(self.held)))
        out_e: list[int] = []
        out_c: list[int] = []
        out_t: list[float] = []
        rows_of = np.flatnonzero(busy[inv])
        by_gpu: dict[int, list[int]] = {}
        for r in rows_of.tolist():
            by_gpu.setdefault(int(entity[r]), []).append(r)
        for k in np.flatnonzero(busy).tolist():
            gpu, t = int(gpus[k]), float(t_gpu[k])
            prev = float(self.seen_at[gpu])
            kept: dict[int, list[tuple[float, float]]] = {}
            old = self.held.get(gpu, {})
            for r in by_gpu.get(gpu, []):
                c, n = int(code[r]), int(count[r])
                if c <= 0 or n <= 0:
                    continue
                w = float(window_s[r])
                records = [rec for rec in old.get(c, ()) if rec[1] > t - w - self.slack_s]
                if np.isnan(prev):  # baseline: these arrived some time in the window
                    records = [(t - w, t)] * n
                elif n > len(records):
                    new = n - len(records)
                    records.extend([(prev, t)] * new)
                    shown = min(new, MAX_EVENTS_PER_READ)
                    out_e.extend([gpu] * shown)
                    out_c.extend([c] * shown)
                    out_t.extend([float(ts[r])] * shown)
                else:  # some left the window: the oldest go first
                    records = sorted(records, key=lambda rec: rec[1])[len(records) - n :]
                kept[c] = records
            if kept:
                self.held[gpu] = kept
            else:
                self.held.pop(gpu, None)  # codes absent from the read have left the window
        self.seen_at[gpus] = t_gpu
        return (
            np.asarray(out_e, dtype=np.int64),
            np.asarray(out_c, dtype=np.int64),
            np.asarray(out_t, dtype=np.float64),
        )
