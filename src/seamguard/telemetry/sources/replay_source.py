"""Recorded telemetry as a ``Source``: the daemon runs on a recording through the same port.

``collect(now)`` hands over the rows of every tick of the recording that ends at or before
``now``, in tick order, and nothing twice; ticks are pulled from the replay lazily, so memory
stays what the replay needs. ``next_tick`` says when the next recorded tick ends, for a driver
that steps ``now`` through recorded time rather than the wall clock.

The replay's report (malformed rows skipped, unknown names, missing values) is complete when
its first tick is read; it comes out as notices and ``unknown`` counts with the first
collect. A recording the replay refuses (a file mostly malformed, timestamps that span
millions of ticks) is a notice too, and the source is then exhausted: per the port, a source
says what went wrong and never raises for its input.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

from seamguard.errors import InputError
from seamguard.model.catalog import SignalCatalog
from seamguard.model.topology import Topology
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.replay import TelemetryReplay, read_telemetry
from seamguard.telemetry.sources.base import Collected, SourceNotice

SOURCE_NAME = "replay"


class ReplaySource:
    """A ``TelemetryReplay`` read tick by tick as the caller's clock passes each tick's end."""

    name: str

    def __init__(self, replay: TelemetryReplay, *, name: str = SOURCE_NAME, where: str = "recording") -> None:
        self.name = name
        self.replay = replay
        self._where = where
        self._ticks: Iterator[tuple[float, TelemetryBatch]] | None = None
        self._pending: tuple[float, TelemetryBatch] | None = None
        self._done = False
        self._reported = False
        self._notices: list[SourceNotice] = []

    @classmethod
    def from_paths(
        cls,
        paths: Sequence[Path],
        topology: Topology,
        catalog: SignalCatalog,
        *,
        tick_s: float,
        name: str = SOURCE_NAME,
    ) -> ReplaySource:
        """Open recorded files (CSV, CSV.gz, Parquet, directories) with ``read_telemetry``'s
        defaults; bad paths raise ``InputError`` here. Other options: build the replay, pass it in."""
        replay = read_telemetry(paths, topology, catalog, tick_s=tick_s)
        where = ", ".join(str(p) for p in paths[:3]) + (" ..." if len(paths) > 3 else "")
        return cls(replay, name=name, where=where)

    @property
    def exhausted(self) -> bool:
        """Every recorded tick has been handed over (or the recording was refused)."""
        self._peek()
        return self._done and self._pending is None

    @property
    def next_tick(self) -> float | None:
        """When the next recorded tick ends, or None when the recording is over."""
        self._peek()
        return self._pending[0] if self._pending is not None else None

    def _peek(self) -> None:
        if self._pending is not None or self._done:
            return
        try:
            if self._ticks is None:
                self._ticks = iter(self.replay)
            self._pending = next(self._ticks)
        except StopIteration:
            self._done = True
        except InputError as exc:
            self._done = True
            self._notices.append(SourceNotice(self.name, exc.where, f"recording refused: {exc.problem}"))
        except (OSError, ValueError) as exc:  # a spilled run unreadable, the replay closed under us
            self._done = True
            self._notices.append(SourceNotice(self.name, self._where, f"recording stopped: {exc}"))

    def collect(self, now: float) -> Collected:
        parts: list[TelemetryBatch] = []
        while True:
            self._peek()
            if self._pending is None or self._pending[0] > now:
                break
            parts.append(self._pending[1])
            self._pending = None
        notices, self._notices = self._notices, []
        unknown: dict[str, int] = {}
        if not self._reported and self._ticks is not None:
            self._reported = True
            rep = self.replay.report
            notices.extend(SourceNotice(self.name, self._where, line) for line in rep.summary_lines()[1:])
            unknown.update(rep.unknown_entities)
            for sig, n in rep.unknown_signals.items():
                unknown[sig] = unknown.get(sig, 0) + n
        return Collected(TelemetryBatch.concat(parts), tuple(notices), unknown)

    def close(self) -> None:
        self.replay.close()
        self._done, self._pending = True, None

    def __enter__(self) -> ReplaySource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
