"""Replaying recorded telemetry (the contract's long CSV/Parquet files) as tick-aligned batches.

Rows may come in any order and the input may be larger than memory, so reading is an
external sort: files stream through pyarrow block by block, each block is mapped to integer
columns with numpy (strings are looked up once per distinct value, never per row), mapped
rows gather into sorted runs of ``chunk_rows`` that spill to temporary ``.npy`` files, and
iteration merges the runs tick by tick, reading each tick's slice of a spilled run on demand. Memory is bounded by
``chunk_rows`` and one block, whatever the input size.

Contract details this module decides:

* A file's header must name ``timestamp``, ``entity``, ``signal`` and ``value``; other
  columns (CSV or Parquet) are ignored, so exports with extra fields need no rewriting.
* Names are stripped of surrounding whitespace; an empty or NaN ``value`` is missing data
  and passes through as NaN; a timestamp must be a finite number of unix seconds. Blank
  lines are skipped; bytes that are not UTF-8 spoil the name or number they are in.
* A file is refused when more than ``max_malformed_fraction`` of its rows are malformed,
  judged after its first 1000 rows and again at its end.
* In a directory, files whose names start with ``.`` or ``_`` (``_SUCCESS``, ``.crc``
  markers of Spark/Hive exports) and files of other types are skipped.
* Malformed CSV lines are located by their 1-based line (the header is line 1); Parquet
  rows by ``row N`` (1-based data row).
"""

from __future__ import annotations

import bisect
import csv
import gzip
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from seamguard.errors import InputError
from seamguard.model.catalog import SignalCatalog
from seamguard.model.topology import Topology
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.timeparse import format_time

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
ProgressFn = Callable[[int, int], None]

CONTRACT_COLUMNS = ("timestamp", "entity", "signal", "value")
MAX_EXAMPLES = 5
MAX_UNKNOWN_KEYS = 1000  # distinct unknown names remembered; rows beyond are still counted
SUMMARY_UNKNOWN_LINES = 10
FRACTION_CHECK_ROWS = 1000  # a file is judged "mostly malformed" once this many rows (or its end) are seen
CSV_BLOCK_BYTES = 1 << 22
PARQUET_BATCH_ROWS = 1 << 16
MAX_TICKS = 2_000_000  # ~2 years at 30 s: more is a stray timestamp, not a recording
MAX_ABS_TICK = float(2**53)  # beyond this a tick number is no longer an exact integer
# A strict subset of what Arrow's string->float64 cast accepts: whatever passes is castable.
_FLOAT_RE = r"(?i)^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|nan|inf|infinity)$"
_UNKNOWN, _EMPTY = -1, -2  # codes for names outside the topology/catalog and for empty names


def _format_of(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".csv.gz"):
        return "csv.gz"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".parquet"):
        return "parquet"
    return None


@dataclass(frozen=True)
class _Source:
    path: Path
    fmt: str  # "csv", "csv.gz" or "parquet"
    size: int
    columns: tuple[str, ...]  # CSV: header names (extras renamed); Parquet: schema names
    has_rows: bool


def _rows(n: int, what: str = "") -> str:
    return f"{n:,} {what}{'row' if n == 1 else 'rows'}"


@dataclass
class ReplayReport:
    """What the replay read and what it had to skip; filled while reading, complete at the first tick."""

    files: int = 0
    rows: int = 0  # data rows read, malformed ones included
    rows_used: int = 0  # well formed, known entity and signal: handed to the engine
    malformed: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    unknown_signals: dict[str, int] = field(default_factory=dict)
    unknown_entities: dict[str, int] = field(default_factory=dict)
    unknown_signal_rows: int = 0
    unknown_entity_rows: int = 0
    missing_values: int = 0  # used rows whose value is empty or NaN (passed through as NaN)
    non_finite: int = 0  # used rows whose value is +-inf ("inf", 1e999): the engine reads them as missing
    first_ts: float | None = None  # over used rows
    last_ts: float | None = None
    spilled_runs: int = 0  # sorted runs written to disk; 0 when everything fitted in memory
    _examples: list[tuple[int, int, str]] = field(default_factory=list, repr=False)

    def add_example(self, file_no: int, line: int, text: str) -> None:
        """Keep the first examples in file order, whatever order pyarrow reports them in."""
        if len(self._examples) >= MAX_EXAMPLES and (file_no, line) >= self._examples[-1][:2]:
            return
        bisect.insort(self._examples, (file_no, line, text))
        del self._examples[MAX_EXAMPLES:]
        self.malformed_examples = [t for _, _, t in self._examples]

    def count_unknown(self, kind: str, name: str, rows: int) -> None:
        counts = self.unknown_signals if kind == "signal" else self.unknown_entities
        if name in counts or len(counts) < MAX_UNKNOWN_KEYS:
            counts[name] = counts.get(name, 0) + rows
        if kind == "signal":
            self.unknown_signal_rows += rows
        else:
            self.unknown_entity_rows += rows

    def summary_lines(self) -> list[str]:
        span = ""
        if self.first_ts is not None and self.last_ts is not None:
            span = f", {format_time(self.first_ts)} to {format_time(self.last_ts)}"
        files = "file" if self.files == 1 else "files"
        lines = [f"read {_rows(self.rows)} from {self.files} {files}{span}; {self.rows_used:,} used"]
        if self.malformed:
            lines.append(f"{_rows(self.malformed, 'malformed ')} skipped, e.g. {self.malformed_examples[0]}")
            lines.extend(f"  also {ex}" for ex in self.malformed_examples[1:])
        for kind, counts, total in (
            ("signal", self.unknown_signals, self.unknown_signal_rows),
            ("entity", self.unknown_entities, self.unknown_entity_rows),
        ):
            top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:SUMMARY_UNKNOWN_LINES]
            lines.extend(f"unknown {kind} {name!r} ({_rows(n)}) ignored" for name, n in top)
            rest = total - sum(n for _, n in top)
            if rest:
                plural = "signals" if kind == "signal" else "entities"
                lines.append(f"... and more unknown {plural} ({_rows(rest)}) ignored")
        if self.rows and self.unknown_entity_rows * 2 > self.rows:
            lines.append(
                f"{self.unknown_entity_rows:,} of {self.rows:,} rows name entities missing from the "
                "inventory: is it the inventory of this telemetry?"
            )
        if self.missing_values:
            lines.append(f"{self.missing_values:,} empty or NaN values passed through as missing data")
        if self.non_finite:
            lines.append(f"{self.non_finite:,} infinite values (inf, -inf, 1e999) read as missing data")
        return lines


@dataclass(frozen=True)
class _Run:
    """Mapped rows as parallel columns; sorted by (tick, timestamp) once it is a run."""

    tick: IntArray
    entity: IntArray
    signal: IntArray
    timestamp: FloatArray
    value: FloatArray

    @property
    def size(self) -> int:
        return int(self.tick.size)

    def copy(self) -> _Run:
        return _Run(
            self.tick.copy(), self.entity.copy(), self.signal.copy(), self.timestamp.copy(), self.value.copy()
        )

    def take(self, sel: IntArray | slice) -> _Run:
        return _Run(self.tick[sel], self.entity[sel], self.signal[sel], self.timestamp[sel], self.value[sel])

    @staticmethod
    def concat(parts: Sequence[_Run]) -> _Run:
        if len(parts) == 1:
            return parts[0]
        return _Run(
            np.concatenate([p.tick for p in parts]),
            np.concatenate([p.entity for p in parts]),
            np.concatenate([p.signal for p in parts]),
            np.concatenate([p.timestamp for p in parts]),
            np.concatenate([p.value for p in parts]),
        )


_COLUMNS = ("tick", "entity", "signal", "timestamp", "value")


@dataclass(frozen=True)
class _SpilledRun:
    """A sorted run on disk plus its tick index (distinct ticks and where each starts).

    Only the index stays in memory; a tick's slice is read on demand and the file mapping is
    dropped straight after, so resident memory does not grow with the input (a mapping kept
    open would count every page it ever touched).
    """

    base: Path
    ticks: IntArray  # distinct ticks, ascending
    starts: IntArray  # row offset of each tick; starts[-1] is the run's size

    def rows_of(self, pos: int) -> _Run:
        a, b = int(self.starts[pos]), int(self.starts[pos + 1])
        cols = {}
        for name in _COLUMNS:
            mapped = np.load(self.base.with_name(f"{self.base.name}_{name}.npy"), mmap_mode="r")
            cols[name] = np.array(mapped[a:b])
            del mapped
        return _Run(**cols)


def _index(run: _Run) -> tuple[IntArray, IntArray]:
    ticks, first = np.unique(run.tick, return_index=True)
    return ticks.astype(np.int64), np.append(first, run.size).astype(np.int64)


class _RunBuilder:
    """Cuts the mapped rows into sorted runs of ``chunk_rows``, spilling all but the last to disk.

    A run is spilled only once a further row arrives, so an input that fits in one run never
    touches the disk.
    """

    def __init__(self, chunk_rows: int, spill_dir: Callable[[], Path], report: ReplayReport) -> None:
        self._chunk_rows = chunk_rows
        self._spill_dir = spill_dir
        self._report = report
        self._pending: list[_Run] = []
        self._pending_rows = 0
        self.runs: list[_Run | _SpilledRun] = []

    def add(self, rows: _Run) -> None:
        if rows.size == 0:
            return
        self._pending.append(rows)
        self._pending_rows += rows.size
        if self._pending_rows <= self._chunk_rows:
            return
        allrows = _Run.concat(self._pending)
        start = 0
        while allrows.size - start > self._chunk_rows:
            self._spill(_sorted(allrows.take(slice(start, start + self._chunk_rows))))
            start += self._chunk_rows
        rest = allrows.take(slice(start, None)).copy()  # a view would keep all of `allrows` alive
        self._pending = [rest]
        self._pending_rows = rest.size

    def finish(self) -> list[_Run | _SpilledRun]:
        if self._pending_rows:
            self.runs.append(_sorted(_Run.concat(self._pending)))
        self._pending, self._pending_rows = [], 0
        return self.runs

    def _spill(self, run: _Run) -> None:
        base = self._spill_dir() / f"run{len(self.runs):06d}"
        for name in _COLUMNS:
            np.save(base.with_name(f"{base.name}_{name}.npy"), getattr(run, name))
        ticks, starts = _index(run)
        self.runs.append(_SpilledRun(base, ticks, starts))
        self._report.spilled_runs += 1


def _sorted(run: _Run) -> _Run:
    # lexsort is stable: equal (tick, timestamp) keep input order, so later rows still win.
    return run.take(np.lexsort((run.timestamp, run.tick)).astype(np.int64))


def _merge(runs: Sequence[_Run | _SpilledRun], tick_s: float) -> Iterator[tuple[float, TelemetryBatch]]:
    """K-way merge of the sorted runs, one tick at a time, empty ticks included.

    Hand-written because no library merges spilled numpy runs by a key column: each run is
    sorted by tick, so a tick's rows are one contiguous slice per run, located through the
    run's tick index; only that tick's rows are ever read into memory.
    """
    indexed: list[tuple[_Run | _SpilledRun, IntArray, IntArray]] = []
    for run in runs:
        ticks, starts = (run.ticks, run.starts) if isinstance(run, _SpilledRun) else _index(run)
        if ticks.size:
            indexed.append((run, ticks, starts))
    if not indexed:
        return
    first = min(int(t[0]) for _, t, _ in indexed)
    last = max(int(t[-1]) for _, t, _ in indexed)
    cursor = [0] * len(indexed)
    for tick in range(first, last + 1):
        parts: list[_Run] = []
        for i, (run, ticks, starts) in enumerate(indexed):
            pos = cursor[i]
            if pos < ticks.size and int(ticks[pos]) == tick:
                if isinstance(run, _SpilledRun):
                    parts.append(run.rows_of(pos))
                else:
                    parts.append(run.take(slice(int(starts[pos]), int(starts[pos + 1]))))
                cursor[i] = pos + 1
        yield float(tick) * tick_s, _tick_batch(parts)


def _tick_batch(parts: list[_Run]) -> TelemetryBatch:
    if not parts:
        return TelemetryBatch.empty()
    rows = _Run.concat(parts)
    if len(parts) > 1:  # runs follow input order and the sort is stable: ties keep input order
        rows = rows.take(np.argsort(rows.timestamp, kind="stable").astype(np.int64))
    return TelemetryBatch(
        np.array(rows.entity, dtype=np.int64),  # copies: never hand out views of the spill files
        np.array(rows.signal, dtype=np.int64),
        np.array(rows.timestamp, dtype=np.float64),
        np.array(rows.value, dtype=np.float64),
    )


# ---------------------------------------------------------------------------------------------
# Files: discovery and headers


def _discover(paths: Sequence[Path]) -> list[Path]:
    found: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        if not path.exists():
            raise InputError(str(path), "telemetry path not found")
        if path.is_dir():
            files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and _format_of(p) is not None and not p.name.startswith((".", "_"))
            )
            if not files:
                raise InputError(str(path), "directory holds no telemetry files (.csv, .csv.gz, .parquet)")
        elif _format_of(path) is None:
            raise InputError(str(path), "unsupported telemetry file type; expected .csv, .csv.gz or .parquet")
        else:
            files = [path]
        for f in files:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                found.append(f)
    return found


def _require_columns(where: str, columns: Sequence[str]) -> None:
    missing = [c for c in CONTRACT_COLUMNS if c not in columns]
    if missing:
        got = ",".join(columns)[:120]
        raise InputError(
            where,
            f"header lacks column(s) {', '.join(missing)}; expected {','.join(CONTRACT_COLUMNS)} (got {got!r})",
        )
    twice = [c for c in CONTRACT_COLUMNS if columns.count(c) > 1]
    if twice:
        raise InputError(where, f"column(s) {', '.join(twice)} appear more than once in the header")


def _open_source(path: Path) -> _Source:
    """Check the header before any data is read, so a bad file fails fast, not after hours."""
    fmt = _format_of(path)
    assert fmt is not None
    size = path.stat().st_size
    if fmt == "parquet":
        try:
            pf = pq.ParquetFile(path)
            names = tuple(str(n) for n in pf.schema_arrow.names)
            rows = int(pf.metadata.num_rows)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(str(path), f"not a readable Parquet file: {exc}") from exc
        _require_columns(str(path), names)
        return _Source(path, fmt, size, names, rows > 0)
    try:
        with gzip.open(path, "rb") if fmt == "csv.gz" else path.open("rb") as fh:
            first = fh.readline(1 << 20)
            has_rows = first.endswith(b"\n") and bool(fh.read(1))
        header = first.decode("utf-8-sig")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise InputError(str(path), f"cannot read the header: {exc}") from exc
    if not header.strip():
        raise InputError(str(path), f"empty file; expected a header {','.join(CONTRACT_COLUMNS)}")
    names = tuple(h.strip() for h in next(csv.reader([header.rstrip("\r\n")])))
    _require_columns(f"{path}:1", names)
    # Extra columns are renamed so that duplicates or blanks among them cannot upset pyarrow.
    cols = tuple(n if n in CONTRACT_COLUMNS else f"_extra{i}" for i, n in enumerate(names))
    return _Source(path, fmt, size, cols, has_rows)


# ---------------------------------------------------------------------------------------------
# Mapping one block of rows


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


class _FileState:
    """Per-file counters, the malformed-fraction check and line numbers for the examples.

    pyarrow skips lines with a wrong field count through a callback, possibly ahead of the
    block being mapped, so a row's line is its position among delivered rows shifted by the
    skipped lines before it. Skipped lines behind the current block are folded into a count,
    which keeps the bookkeeping bounded by one block of read-ahead.
    """

    def __init__(self, src: _Source, file_no: int, report: ReplayReport, max_fraction: float) -> None:
        self.src = src
        self.file_no = file_no
        self.report = report
        self.max_fraction = max_fraction
        self.rows_seen = 0
        self.malformed = 0
        self.delivered = 0  # rows handed over by the parser (all rows for Parquet)
        self.skipped_before = 0  # skipped lines already behind the current block
        self.skipped_ahead: list[int] = []  # their line numbers, sorted, for lines not yet passed
        self.first_problem: tuple[int, str] | None = None
        self.checked = False

    def on_invalid_row(self, row: Any) -> str:
        self.rows_seen += 1
        self.malformed += 1
        self.report.rows += 1
        self.report.malformed += 1
        line = int(row.number) if row.number is not None else 0
        bisect.insort(self.skipped_ahead, line)
        text = str(row.text)
        shown = text if len(text) <= 60 else text[:57] + "..."
        self.problem(line, f"{row.actual_columns} fields, expected {row.expected_columns}: {shown!r}")
        return "skip"

    def line_of(self, j: int) -> int:
        """The 1-based line (CSV, header is line 1) or data row (Parquet) of the j-th delivered row."""
        if self.src.fmt == "parquet":
            return j + 1
        line = j + 2 + self.skipped_before
        for skipped in self.skipped_ahead:
            if skipped > line:
                break
            line += 1
        return line

    def problem(self, line: int, text: str) -> None:
        where = f"{self.src.path}:row {line}" if self.src.fmt == "parquet" else f"{self.src.path}:{line}"
        message = f"{where}: {text}"
        if self.first_problem is None or line < self.first_problem[0]:
            self.first_problem = (line, message)
        self.report.add_example(self.file_no, line, message)

    def delivered_block(self, n: int, blank: int, malformed: int) -> None:
        if n:
            last_line = self.line_of(self.delivered + n - 1)
            passed = bisect.bisect_left(self.skipped_ahead, last_line)
            self.skipped_before += passed
            del self.skipped_ahead[:passed]
        self.delivered += n
        self.rows_seen += n - blank
        self.malformed += malformed
        if not self.checked and self.rows_seen >= FRACTION_CHECK_ROWS:
            self.check()

    def check(self) -> None:
        """Refuse a mostly malformed file: it is not in the contract's format, skipping would hide that."""
        self.checked = True
        if self.rows_seen and self.malformed > self.max_fraction * self.rows_seen:
            first = f", first {self.first_problem[1]}" if self.first_problem else ""
            raise InputError(
                str(self.src.path),
                f"{self.malformed:,} of {self.rows_seen:,} rows are malformed (more than "
                f"{self.max_fraction:.0%}){first}; expected the telemetry contract's "
                f"{','.join(CONTRACT_COLUMNS)}",
            )


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


def _empty_run() -> _Run:
    ints = np.zeros(0, np.int64)
    return _Run(ints, ints, ints, np.zeros(0, np.float64), np.zeros(0, np.float64))


class _Mapper:
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

    def map_block(self, state: _FileState, batch: Any) -> _Run:
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
        return _Run(ticks, entity[used], signal[used], ts_used, val_used)


# ---------------------------------------------------------------------------------------------
# The replay


class TelemetryReplay:
    """Tick-aligned batches of recorded telemetry, in ascending tick time, empty ticks included.

    Iterating reads every file (the report is complete when the first tick is yielded), then
    merges. Use it as a context manager: leaving it removes the spilled runs.
    """

    def __init__(
        self,
        sources: Sequence[_Source],
        topology: Topology,
        catalog: SignalCatalog,
        *,
        tick_s: float,
        chunk_rows: int,
        max_malformed_fraction: float,
        progress: ProgressFn | None,
    ) -> None:
        self._sources = tuple(sources)
        self._topology = topology
        self._catalog = catalog
        self._tick_s = tick_s
        self._chunk_rows = chunk_rows
        self._max_fraction = max_malformed_fraction
        self._progress = progress
        self._runs: list[_Run | _SpilledRun] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._closed = False
        self.report = ReplayReport(files=len(self._sources))

    def __enter__(self) -> TelemetryReplay:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def spill_dir(self) -> Path | None:
        """The directory of the spilled runs, while there is one."""
        return Path(self._tmp.name) if self._tmp is not None else None

    def close(self) -> None:
        self._closed = True
        self._runs = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __iter__(self) -> Iterator[tuple[float, TelemetryBatch]]:
        if self._closed:
            raise ValueError("telemetry replay is closed")
        if self._runs is None:
            self._runs = self._read_all()
            self._check_span()
        return _merge(self._runs, self._tick_s)

    def _check_span(self) -> None:
        """Refuse a time span that would replay as millions of empty ticks (a stray timestamp)."""
        first, last = self.report.first_ts, self.report.last_ts
        if first is None or last is None:
            return
        ticks = (last - first) / self._tick_s
        if ticks > MAX_TICKS:
            where = ", ".join(str(s.path) for s in self._sources[:3])
            raise InputError(
                where,
                f"timestamps span {format_time(first)} to {format_time(last)}: {ticks:,.0f} ticks of "
                f"{self._tick_s:g} s (limit {MAX_TICKS:,}); are some timestamps in milliseconds, not seconds?",
            )

    def _spill_dir(self) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="seamguard-replay-", ignore_cleanup_errors=True)
        return Path(self._tmp.name)

    def _read_all(self) -> list[_Run | _SpilledRun]:
        mapper = _Mapper(self._topology, self._catalog, self._tick_s, self.report)
        builder = _RunBuilder(self._chunk_rows, self._spill_dir, self.report)
        total = sum(s.size for s in self._sources)
        done = 0
        for file_no, src in enumerate(self._sources):
            state = _FileState(src, file_no, self.report, self._max_fraction)
            for block, at in self._blocks(src, state):
                builder.add(mapper.map_block(state, block))
                if self._progress is not None:
                    self._progress(done + min(at, src.size), total)
            state.check()
            done += src.size
            if self._progress is not None:
                self._progress(done, total)
        return builder.finish()

    def _blocks(self, src: _Source, state: _FileState) -> Iterator[tuple[Any, int]]:
        """Record batches of the four contract columns, with how many file bytes are consumed."""
        if not src.has_rows:
            return
        if src.fmt == "parquet":
            try:
                pf = pq.ParquetFile(src.path)
                n_rows = max(int(pf.metadata.num_rows), 1)
                rows = 0
                for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=list(CONTRACT_COLUMNS)):
                    rows += int(batch.num_rows)
                    yield batch, src.size * rows // n_rows
            except (pa.ArrowInvalid, OSError) as exc:
                raise InputError(str(src.path), f"cannot be read as Parquet: {exc}") from exc
            return
        raw = pa.OSFile(str(src.path))
        try:
            stream = pa.CompressedInputStream(raw, "gzip") if src.fmt == "csv.gz" else raw
            reader = pcsv.open_csv(
                stream,
                # Single-threaded: only then does pyarrow report the line number of a skipped row.
                read_options=pcsv.ReadOptions(
                    use_threads=False, block_size=CSV_BLOCK_BYTES, skip_rows=1, column_names=list(src.columns)
                ),
                # Blank lines stay rows (all fields empty) so that line numbers stay exact.
                parse_options=pcsv.ParseOptions(
                    invalid_row_handler=state.on_invalid_row, ignore_empty_lines=False
                ),
                convert_options=pcsv.ConvertOptions(
                    include_columns=list(CONTRACT_COLUMNS),
                    column_types=dict.fromkeys(CONTRACT_COLUMNS, pa.string()),
                    check_utf8=False,  # a bad byte spoils one name or number, not the whole file
                ),
            )
            for batch in reader:
                yield batch, int(raw.tell())
        except (pa.ArrowInvalid, OSError, EOFError) as exc:
            raise InputError(str(src.path), f"cannot be read as CSV: {exc}") from exc
        finally:
            raw.close()


def read_telemetry(
    paths: Sequence[Path],
    topology: Topology,
    catalog: SignalCatalog,
    *,
    tick_s: float,
    chunk_rows: int = 1_000_000,
    max_malformed_fraction: float = 0.5,
    progress: ProgressFn | None = None,
) -> TelemetryReplay:
    """Recorded telemetry (CSV, CSV.gz, Parquet files or directories of them) as a tick replay.

    A sample at time ``t`` belongs to the tick ending at ``ceil(t / tick_s) * tick_s``. Paths
    and headers are checked here, before any data is read; rows are read when iteration starts.
    ``progress(bytes_done, bytes_total)`` is called as files are read.
    """
    if not (tick_s > 0 and np.isfinite(tick_s)):
        raise ValueError(f"tick_s must be a positive number of seconds, got {tick_s}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    if not 0.0 <= max_malformed_fraction <= 1.0:
        raise ValueError(f"max_malformed_fraction must be within [0, 1], got {max_malformed_fraction}")
    sources = [_open_source(p) for p in _discover(paths)]
    if not sources:
        raise InputError("telemetry", "no telemetry files given")
    return TelemetryReplay(
        sources,
        topology,
        catalog,
        tick_s=tick_s,
        chunk_rows=chunk_rows,
        max_malformed_fraction=max_malformed_fraction,
        progress=progress,
    )
