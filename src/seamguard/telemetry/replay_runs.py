"""The replay's external sort: mapped rows cut into sorted runs (spilled to ``.npy`` files past
``chunk_rows``) and merged back tick by tick, so memory is bounded whatever the input size."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.replay_report import ReplayReport

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Run:
    """Mapped rows as parallel columns; sorted by (tick, timestamp) once it is a run."""

    tick: IntArray
    entity: IntArray
    signal: IntArray
    timestamp: FloatArray
    value: FloatArray

    @property
    def size(self) -> int:
        return int(self.tick.size)

    def copy(self) -> Run:
        return Run(
            self.tick.copy(), self.entity.copy(), self.signal.copy(), self.timestamp.copy(), self.value.copy()
        )

    def take(self, sel: IntArray | slice) -> Run:
        return Run(self.tick[sel], self.entity[sel], self.signal[sel], self.timestamp[sel], self.value[sel])

    @staticmethod
    def concat(parts: Sequence[Run]) -> Run:
        if len(parts) == 1:
            return parts[0]
        return Run(
            np.concatenate([p.tick for p in parts]),
            np.concatenate([p.entity for p in parts]),
            np.concatenate([p.signal for p in parts]),
            np.concatenate([p.timestamp for p in parts]),
            np.concatenate([p.value for p in parts]),
        )


RUN_COLUMNS = ("tick", "entity", "signal", "timestamp", "value")


@dataclass(frozen=True)
class SpilledRun:
    """A sorted run on disk plus its tick index (distinct ticks and where each starts).

    Only the index stays in memory; a tick's slice is read on demand and the file mapping is
    dropped straight after, so resident memory does not grow with the input (a mapping kept
    open would count every page it ever touched).
    """

    base: Path
    ticks: IntArray  # distinct ticks, ascending
    starts: IntArray  # row offset of each tick; starts[-1] is the run's size

    def rows_of(self, pos: int) -> Run:
        a, b = int(self.starts[pos]), int(self.starts[pos + 1])
        cols = {}
        for name in RUN_COLUMNS:
            mapped = np.load(self.base.with_name(f"{self.base.name}_{name}.npy"), mmap_mode="r")
            cols[name] = np.array(mapped[a:b])
            del mapped
        return Run(**cols)


def tick_index(run: Run) -> tuple[IntArray, IntArray]:
    ticks, first = np.unique(run.tick, return_index=True)
    return ticks.astype(np.int64), np.append(first, run.size).astype(np.int64)


class RunBuilder:
    """Cuts the mapped rows into sorted runs of ``chunk_rows``, spilling all but the last to disk.

    A run is spilled only once a further row arrives, so an input that fits in one run never
    touches the disk.
    """

    def __init__(self, chunk_rows: int, spill_dir: Callable[[], Path], report: ReplayReport) -> None:
        self._chunk_rows = chunk_rows
        self._spill_dir = spill_dir
        self._report = report
        self._pending: list[Run] = []
        self._pending_rows = 0
        self.runs: list[Run | SpilledRun] = []

    def add(self, rows: Run) -> None:
        if rows.size == 0:
            return
        self._pending.append(rows)
        self._pending_rows += rows.size
        if self._pending_rows <= self._chunk_rows:
            return
        allrows = Run.concat(self._pending)
        start = 0
        while allrows.size - start > self._chunk_rows:
            self._spill(sorted_run(allrows.take(slice(start, start + self._chunk_rows))))
            start += self._chunk_rows
        rest = allrows.take(slice(start, None)).copy()  # a view would keep all of `allrows` alive
        self._pending = [rest]
        self._pending_rows = rest.size

    def finish(self) -> list[Run | SpilledRun]:
        if self._pending_rows:
            self.runs.append(sorted_run(Run.concat(self._pending)))
        self._pending, self._pending_rows = [], 0
        return self.runs

    def _spill(self, run: Run) -> None:
        base = self._spill_dir() / f"run{len(self.runs):06d}"
        for name in RUN_COLUMNS:
            np.save(base.with_name(f"{base.name}_{name}.npy"), getattr(run, name))
        ticks, starts = tick_index(run)
        self.runs.append(SpilledRun(base, ticks, starts))
        self._report.spilled_runs += 1


def sorted_run(run: Run) -> Run:
    # lexsort is stable: equal (tick, timestamp) keep input order, so later rows still win.
    return run.take(np.lexsort((run.timestamp, run.tick)).astype(np.int64))


def merge_runs(runs: Sequence[Run | SpilledRun], tick_s: float) -> Iterator[tuple[float, TelemetryBatch]]:
    """K-way merge of the sorted runs, one tick at a time, empty ticks included.

    Hand-written because no library merges spilled numpy runs by a key column: each run is
    sorted by tick, so a tick's rows are one contiguous slice per run, located through the
    run's tick index; only that tick's rows are ever read into memory.
    """
    indexed: list[tuple[Run | SpilledRun, IntArray, IntArray]] = []
    for run in runs:
        ticks, starts = (run.ticks, run.starts) if isinstance(run, SpilledRun) else tick_index(run)
        if ticks.size:
            indexed.append((run, ticks, starts))
    if not indexed:
        return
    first = min(int(t[0]) for _, t, _ in indexed)
    last = max(int(t[-1]) for _, t, _ in indexed)
    cursor = [0] * len(indexed)
    for tick in range(first, last + 1):
        parts: list[Run] = []
        for i, (run, ticks, starts) in enumerate(indexed):
            pos = cursor[i]
            if pos < ticks.size and int(ticks[pos]) == tick:
                if isinstance(run, SpilledRun):
                    parts.append(run.rows_of(pos))
                else:
                    parts.append(run.take(slice(int(starts[pos]), int(starts[pos + 1]))))
                cursor[i] = pos + 1
        yield float(tick) * tick_s, _tick_batch(parts)


def _tick_batch(parts: list[Run]) -> TelemetryBatch:
    if not parts:
        return TelemetryBatch.empty()
    rows = Run.concat(parts)
    if len(parts) > 1:  # runs follow input order and the sort is stable: ties keep input order
        rows = rows.take(np.argsort(rows.timestamp, kind="stable").astype(np.int64))
    return TelemetryBatch(
        np.array(rows.entity, dtype=np.int64),  # copies: never hand out views of the spill files
        np.array(rows.signal, dtype=np.int64),
        np.array(rows.timestamp, dtype=np.float64),
        np.array(rows.value, dtype=np.float64),
    )
