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

    slack_s: float = DEFAULT_SLACK_S
    held: dict[int, dict[int, list[tuple[float, float]]]] = field(default_factory=dict)
    seen_at: dict[int, float] = field(default_factory=dict)  # GPU -> time of its last window read

    def update(
        self, entity: IntArray, code: IntArray, count: FloatArray, ts: FloatArray, window_s: FloatArray
    ) -> tuple[IntArray, IntArray, FloatArray]:
        """One read's rows, one per (GPU, code); code 0 is a GPU's "no XID in the window" row.

        Returns the new events as (entity, code, timestamp). A GPU read for the first time only
        sets the baseline: what its window holds may be minutes old, and is not news."""
        out_e: list[int] = []
        out_c: list[int] = []
        out_t: list[float] = []
        order = np.lexsort((code, entity))
        ent_s, code_s, n_s, t_s, w_s = (
            entity[order].tolist(),
            code[order].tolist(),
            count[order].tolist(),
            ts[order].tolist(),
            window_s[order].tolist(),
        )
        i = 0
        while i < len(ent_s):
            gpu = ent_s[i]
            j = i
            while j < len(ent_s) and ent_s[j] == gpu:
                j += 1
            t = max(t_s[i:j])
            previous = self.seen_at.get(gpu)
            kept: dict[int, list[tuple[float, float]]] = {}
            old = self.held.get(gpu, {})
            for k in range(i, j):
                c = code_s[k]
                n = int(n_s[k])
                if c <= 0 or n <= 0:
                    continue
                gone_before = t - w_s[k] - self.slack_s
                records = [r for r in old.get(c, ()) if r[1] > gone_before]
                if previous is None:  # baseline: these arrived some time in the window
                    records = [(t - w_s[k], t)] * n
                elif n > len(records):
                    new = n - len(records)
                    records.extend([(previous, t)] * new)
                    out_e.extend([gpu] * min(new, MAX_EVENTS_PER_READ))
                    out_c.extend([c] * min(new, MAX_EVENTS_PER_READ))
                    out_t.extend([t_s[k]] * min(new, MAX_EVENTS_PER_READ))
                else:  # some left the window: the oldest go first
                    records = sorted(records, key=lambda r: r[1])[len(records) - n :]
                kept[c] = records
            if kept:
                self.held[gpu] = kept
            else:
                self.held.pop(gpu, None)  # codes absent from the read have left the window
            self.seen_at[gpu] = t
            i = j
        return (
            np.asarray(out_e, dtype=np.int64),
            np.asarray(out_c, dtype=np.int64),
            np.asarray(out_t, dtype=np.float64),
        )
