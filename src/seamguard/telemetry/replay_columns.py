"""One block of raw columns mapped to integer rows: numbers parsed and names looked up with Arrow
and numpy (each distinct name once per block), malformed rows found, counted and worded."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from seamguard.model.catalog import SignalCatalog
from seamguard.model.topology import Topology
from seamguard.telemetry.replay_files import CONTRACT_COLUMNS, FileState
from seamguard.telemetry.replay_report import MAX_EXAMPLES, ReplayReport
from seamguard.telemetry.replay_runs import Run

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
MAX_ABS_TICK = float(2**53)  # beyond this a tick number is no longer an exact integer
# A strict subset of what Arrow's string->float64 cast accepts: whatever passes is castable.
_FLOAT_RE = r"(?i)^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|nan|inf|infinity)$"
_UNKNOWN, _EMPTY = -1, -2  # codes for names outside the topology/catalog and for empty names


def _numbers(col: Any) -> tuple[FloatArray, BoolArray, BoolArray]:
    """A column as float64 with a mask of parsed cells and a mask of empty cells (NaN in both cases).

    Strings go through Arrow's vectorised cast; only a block that holds an unparsable cell
    takes the slower (still vectorised) path that finds which cells are bad.
    """
    typ = col.type
    if pa.types.is_dictionary(typ):
        col = col.dictionary_decode()
        typ = col.type
    n = len(col)
    if pa.types.is_timestamp(typ):
        per_s = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[typ.unit]
        empty = _np_bool(col.is_null())
        ints = np.asarray(pc.fill_null(col.cast(pa.int64()), 0).to_numpy(zero_copy_only=False))
        return np.where(empty, np.nan, ints.astype(np.float64) / per_s), ~empty, empty
    if pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ):
        return _np_float(col.cast(pa.float64())), _np_bool(col.is_valid()), _np_bool(col.is_null())
    if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
        return np.full(n, np.nan), np.zeros(n, np.bool_), np.zeros(n, np.bool_)
    blank = pc.fill_null(pc.equal(col, ""), True)
    null = pa.scalar(None, type=typ)
    try:  # the common case: every non-empty cell is a plain number
        values = _np_float(pc.if_else(blank, null, col).cast(pa.float64()))
        empty = _np_bool(blank)
        return values, ~empty, empty
    except pa.ArrowInvalid:
        pass
    trimmed = pc.ascii_trim_whitespace(col)  # unlike utf8_*, safe on invalid UTF-8
    empty = _np_bool(pc.fill_null(pc.equal(trimmed, ""), True))
    ok = pc.fill_null(pc.match_substring_regex(trimmed, _FLOAT_RE), False)
    values = _np_float(pc.if_else(ok, trimmed, null).cast(pa.float64()))
    return values, _np_bool(ok), empty


def _np_float(arr: Any) -> FloatArray:
    """Arrow float64 to numpy, nulls as NaN."""
    return np.asarray(pc.fill_null(arr, np.nan).to_numpy(zero_copy_only=False), dtype=np.float64)


def _np_bool(arr: Any) -> BoolArray:
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.bool_)


def _codes(col: Any, lookup: Callable[[str], int | None]) -> tuple[IntArray, IntArray, list[str]]:
    """Names to integer codes by looking up each distinct name once (per block), not each row.

    Returns per-row codes (``_UNKNOWN``, ``_EMPTY`` or an index), per-row positions into the
    distinct names, and the distinct names (stripped).
    """
    if pa.types.is_dictionary(col.type):
        enc = col
    else:
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            col = col.cast(pa.string())
        enc = pc.dictionary_encode(col)
    # Via bytes: invalid UTF-8 (not checked while parsing) becomes U+FFFD, an unknown name, not a crash.
    names = [b.decode("utf-8", "replace").strip() if b is not None else "" for b in _as_bytes(enc.dictionary)]
    lut = np.array(
        [(_EMPTY if not s else (code if (code := lookup(s)) is not None else _UNKNOWN)) for s in names]
        + [_EMPTY],  # the slot for null cells
        dtype=np.int64,
    )
    pos = np.asarray(
        pc.fill_null(enc.indices.cast(pa.int64()), len(names)).to_numpy(zero_copy_only=False), dtype=np.int64
    )
    return lut[pos], pos, names


def _as_bytes(col: Any) -> list[bytes | None]:
    if pa.types.is_large_string(col.type):
        col = col.cast(pa.large_binary())
    elif pa.types.is_string(col.type):
        col = col.cast(pa.binary())
    return [v if v is None or isinstance(v, bytes) else str(v).encode() for v in col.to_pylist()]


def _raw(col: Any, i: int) -> str:
    """One cell as text for a message, whatever its type or encoding."""
    (cell,) = _as_bytes(col.slice(i, 1))
    text = cell.decode("utf-8", "replace") if cell is not None else ""
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class _Checks:
    """Why the cells of one block are bad, kept to word the examples of malformed rows."""

    ts_col: Any
    val_col: Any
    ts_empty: BoolArray
    ts_parsed: BoolArray
    ts_finite: BoolArray
    ts_in_range: BoolArray
    entity_empty: BoolArray
    signal_empty: BoolArray

    def why(self, i: int) -> str:
        if self.ts_empty[i]:
            return "timestamp is empty"
        if not self.ts_parsed[i]:
            return f"timestamp {_raw(self.ts_col, i)!r} is not a number (unix seconds)"
        if not self.ts_finite[i]:
            return f"timestamp {_raw(self.ts_col, i)!r} is not finite"
        if not self.ts_in_range[i]:
            return f"timestamp {_raw(self.ts_col, i)!r} is out of range"
        if self.entity_empty[i]:
            return "entity is empty"
        if self.signal_empty[i]:
            return "signal is empty"
        return f"value {_raw(self.val_col, i)!r} is not a number"


def _empty_run() -> Run:
    ints = np.zeros(0, np.int64)
    return Run(ints, ints, ints, np.zeros(0, np.float64), np.zeros(0, np.float64))


class Mapper:
    """Turns blocks of raw columns into mapped, tick-numbered rows and keeps the report."""

    def __init__(
        self, topology: Topology, catalog: SignalCatalog, tick_s: float, report: ReplayReport
    ) -> None:
        self._entities: Mapping[str, int] = topology.index
        self._catalog = catalog
        self._tick_s = tick_s
        self._report = report

    def _signal(self, name: str) -> int | None:
        sig = self._catalog.get(name)
        return sig.index if sig is not None else None

    def map_block(self, state: FileState, batch: Any) -> Run:
        n = int(batch.num_rows)
        ts_col, ent_col, sig_col, val_col = (batch.column(c) for c in CONTRACT_COLUMNS)
        ts, ts_parsed, ts_empty = _numbers(ts_col)
        value, val_parsed, val_empty = _numbers(val_col)
        entity, ent_pos, ent_names = _codes(ent_col, self._entities.get)
        signal, sig_pos, sig_names = _codes(sig_col, self._signal)
        with np.errstate(invalid="ignore", over="ignore"):
            ts_finite = np.isfinite(ts)
            in_range = np.abs(ts / self._tick_s) < MAX_ABS_TICK
        ent_empty, sig_empty = entity == _EMPTY, signal == _EMPTY
        # Blank lines (pyarrow delivers them as rows of empty fields) carry nothing: not even malformed.
        blank = ts_empty & ent_empty & sig_empty & val_empty
        bad = (
            ~(ts_parsed & ~ts_empty & ts_finite & in_range)
            | ent_empty
            | sig_empty
            | ~(val_parsed | val_empty)
        )
        bad &= ~blank
        n_blank = int(np.count_nonzero(blank))
        n_bad = int(np.count_nonzero(bad))
        if n_bad:
            checks = _Checks(ts_col, val_col, ts_empty, ts_parsed, ts_finite, in_range, ent_empty, sig_empty)
            for i in np.flatnonzero(bad)[:MAX_EXAMPLES].tolist():
                state.problem(state.line_of(state.delivered + i), checks.why(i))
        rep = self._report
        rep.rows += n - n_blank
        rep.malformed += n_bad
        good = ~bad & ~blank
        for kind, codes, pos, names in (
            ("signal", signal, sig_pos, sig_names),
            ("entity", entity, ent_pos, ent_names),
        ):
            unknown = good & (codes == _UNKNOWN)
            if unknown.any():
                counts = np.bincount(pos[unknown], minlength=len(names) + 1)
                for k in np.flatnonzero(counts).tolist():
                    rep.count_unknown(kind, names[k], int(counts[k]))
        state.delivered_block(n, n_blank, n_bad)
        used = good & (entity >= 0) & (signal >= 0)
        if not used.any():
            return _empty_run()
        ts_used = ts[used]
        val_used = value[used]
        rep.rows_used += int(ts_used.size)
        rep.missing_values += int(np.count_nonzero(np.isnan(val_used)))
        rep.non_finite += int(np.count_nonzero(np.isinf(val_used)))
        lo, hi = float(ts_used.min()), float(ts_used.max())
        rep.first_ts = lo if rep.first_ts is None else min(rep.first_ts, lo)
        rep.last_ts = hi if rep.last_ts is None else max(rep.last_ts, hi)
        ticks = np.ceil(ts_used / self._tick_s).astype(np.int64)
        return Run(ticks, entity[used], signal[used], ts_used, val_used)
