"""The replay's files: which paths hold telemetry, their headers checked before any data is
read, and per-file bookkeeping (line numbers of malformed rows, the malformed-fraction check)."""

from __future__ import annotations

import bisect
import csv
import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from seamguard.errors import InputError
from seamguard.telemetry.replay_report import ReplayReport

CONTRACT_COLUMNS = ("timestamp", "entity", "signal", "value")
FRACTION_CHECK_ROWS = 1000  # a file is judged "mostly malformed" once this many rows (or its end) are seen


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
class SourceFile:
    path: Path
    fmt: str  # "csv", "csv.gz" or "parquet"
    size: int
    columns: tuple[str, ...]  # CSV: header names (extras renamed); Parquet: schema names
    has_rows: bool


def discover(paths: Sequence[Path]) -> list[Path]:
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


def open_source(path: Path) -> SourceFile:
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
        return SourceFile(path, fmt, size, names, rows > 0)
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
    return SourceFile(path, fmt, size, cols, has_rows)


class FileState:
    """Per-file counters, the malformed-fraction check and line numbers for the examples.

    pyarrow skips lines with a wrong field count through a callback, possibly ahead of the
    block being mapped, so a row's line is its position among delivered rows shifted by the
    skipped lines before it. Skipped lines behind the current block are folded into a count,
    which keeps the bookkeeping bounded by one block of read-ahead.
    """

    def __init__(self, src: SourceFile, file_no: int, report: ReplayReport, max_fraction: float) -> None:
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
