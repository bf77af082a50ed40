"""What a replay read and what it had to skip (``ReplayReport``), worded for the operator."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from seamguard.timeparse import format_time

MAX_EXAMPLES = 5

MAX_UNKNOWN_KEYS = 1000  # distinct unknown names remembered; rows beyond are still counted

SUMMARY_UNKNOWN_LINES = 10


def rows_text(n: int, what: str = "") -> str:
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
        lines = [f"read {rows_text(self.rows)} from {self.files} {files}{span}; {self.rows_used:,} used"]
        if self.malformed:
            lines.append(
                f"{rows_text(self.malformed, 'malformed ')} skipped, e.g. {self.malformed_examples[0]}"
            )
            lines.extend(f"  also {ex}" for ex in self.malformed_examples[1:])
        for kind, counts, total in (
            ("signal", self.unknown_signals, self.unknown_signal_rows),
            ("entity", self.unknown_entities, self.unknown_entity_rows),
        ):
            top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:SUMMARY_UNKNOWN_LINES]
            lines.extend(f"unknown {kind} {name!r} ({rows_text(n)}) ignored" for name, n in top)
            rest = total - sum(n for _, n in top)
            if rest:
                plural = "signals" if kind == "signal" else "entities"
                lines.append(f"... and more unknown {plural} ({rows_text(rest)}) ignored")
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
