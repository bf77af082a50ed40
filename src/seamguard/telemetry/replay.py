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

The work is split by job: files and headers (``replay_files``), mapping a block of rows
(``replay_columns``), the sorted runs and their merge (``replay_runs``), the report
(``replay_report``); this module reads the blocks and drives them.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from seamguard.errors import InputError
from seamguard.model.catalog import SignalCatalog
from seamguard.model.topology import Topology
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.replay_columns import Mapper
from seamguard.telemetry.replay_files import CONTRACT_COLUMNS, FileState, SourceFile, discover, open_source
from seamguard.telemetry.replay_report import ReplayReport
from seamguard.telemetry.replay_runs import Run, RunBuilder, SpilledRun, merge_runs
from seamguard.timeparse import format_time

ProgressFn = Callable[[int, int], None]

CSV_BLOCK_BYTES = 1 << 22
PARQUET_BATCH_ROWS = 1 << 16
MAX_TICKS = 2_000_000  # ~2 years at 30 s: more is a stray timestamp, not a recording


class TelemetryReplay:
    """Tick-aligned batches of recorded telemetry, in ascending tick time, empty ticks included.

    Iterating reads every file (the report is complete when the first tick is yielded), then
    merges. Use it as a context manager: leaving it removes the spilled runs.
    """

    def __init__(
        self,
        sources: Sequence[SourceFile],
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
        self._runs: list[Run | SpilledRun] | None = None
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
    def tick_count(self) -> int | None:
        """How many ticks iterating yields, empty ones included; None until the files are read
        (iteration has started) or when no row was used. A sample at ``t`` lands in tick
        ``ceil(t / tick_s)`` (``replay_columns``) and every tick from the first to the last is
        yielded (``merge_runs``), so this is the count, not an estimate: a progress bar given it
        as its total ends full."""
        first, last = self.report.first_ts, self.report.last_ts
        if self._runs is None or first is None or last is None:
            return None
        return math.ceil(last / self._tick_s) - math.ceil(first / self._tick_s) + 1

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
        return merge_runs(self._runs, self._tick_s)

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

    def _read_all(self) -> list[Run | SpilledRun]:
        mapper = Mapper(self._topology, self._catalog, self._tick_s, self.report)
        builder = RunBuilder(self._chunk_rows, self._spill_dir, self.report)
        total = sum(s.size for s in self._sources)
        done = 0
        for file_no, src in enumerate(self._sources):
            state = FileState(src, file_no, self.report, self._max_fraction)
            for block, at in self._blocks(src, state):
                builder.add(mapper.map_block(state, block))
                if self._progress is not None:
                    self._progress(done + min(at, src.size), total)
            state.check()
            done += src.size
            if self._progress is not None:
                self._progress(done, total)
        return builder.finish()

    def _blocks(self, src: SourceFile, state: FileState) -> Iterator[tuple[Any, int]]:
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
    sources = [open_source(p) for p in discover(paths)]
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
