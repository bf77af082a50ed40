"""``seamguard score``: the engine over recorded telemetry, transitions to CSV."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.filesize import pick_unit_and_suffix
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from seamguard.config import load_config
from seamguard.control.controller import Controller
from seamguard.diagnose.domains import record_domains
from seamguard.errors import InputError
from seamguard.journal.sqlite import SqliteJournal
from seamguard.journal.transitions_csv import TRANSITION_HEADER, transition_row
from seamguard.model.catalog import signal_catalog
from seamguard.model.inventory import read_inventory, read_jobs
from seamguard.model.topology import build_topology
from seamguard.telemetry.replay import read_telemetry
from seamguard.telemetry.store import IngestReport


@dataclass(frozen=True)
class ScoreSummary:
    ticks: int
    transitions: int
    by_state: dict[str, int]
    ingest: IngestReport


BYTES = "bytes"
TICKS = "ticks"
_SIZE_SUFFIXES = ["bytes", "kB", "MB", "GB", "TB", "PB"]


def amount_text(completed: float, total: float | None, unit: str) -> str:
    """``completed/total unit`` for one progress task, both numbers in the task's own unit.

    One column serves both of ``score``'s tasks, each with its unit: the files read in bytes,
    shown as a file size ("4.2/18.7 MB"), and the ticks scored as a count ("22/360 ticks"). A
    byte column under the ticks printed "22/361 bytes", a count of ticks read as a size."""
    if unit == BYTES:
        scale, suffix = pick_unit_and_suffix(int(max(completed, total or 0)), _SIZE_SUFFIXES, 1000)
        digits = 0 if scale == 1 else 1
        done = f"{completed / scale:,.{digits}f}"
        return f"{done}/{total / scale:,.{digits}f} {suffix}" if total is not None else f"{done} {suffix}"
    done = f"{int(completed):,}"
    return f"{done}/{int(total):,} {unit}" if total is not None else f"{done} {unit}"


class AmountColumn(ProgressColumn):
    """``amount_text`` of a task whose ``unit`` field says what it counts."""

    def render(self, task: Task) -> Text:
        return Text(
            amount_text(task.completed, task.total, str(task.fields.get("unit", ""))), "progress.download"
        )


def _readable(path: Path, what: str) -> Path:
    if not path.exists():
        raise InputError(str(path), f"{what} not found")
    return path


def _fresh_journal(path: Path) -> SqliteJournal:
    """A journal to score into; one that already holds a run is refused, never appended to or wiped."""
    journal = SqliteJournal(path)
    if journal.time_range() is not None:
        journal.close()
        raise InputError(str(path), "journal already holds a run; choose a new path or remove it first")
    return journal


def run_score(
    *,
    inventory: Path,
    telemetry: list[Path],
    out: Path,
    jobs: Path | None,
    config_path: Path | None,
    journal_path: Path | None,
    tick_s: float | None,
    console: Console,
) -> ScoreSummary:
    cfg = load_config(config_path)
    inv = read_inventory(_readable(inventory, "inventory"))
    job_records = read_jobs(_readable(jobs, "jobs file"), inv) if jobs is not None else ()
    for path in telemetry:
        _readable(path, "telemetry")
    if tick_s is not None and not tick_s > 0:
        raise InputError("--tick", f"must be a positive number of seconds, got {tick_s}")
    tick = tick_s or cfg.engine.tick_s
    topology = build_topology(inv, job_records)
    catalog = signal_catalog()
    journal = _fresh_journal(journal_path) if journal_path is not None else None
    if journal is not None:
        journal.set_meta("source", "seamguard score")
        journal.set_meta("inventory", str(inventory))
        record_domains(journal, topology)  # explain names upstream causes
        journal.set_meta("telemetry", ";".join(str(p) for p in telemetry))
        journal.set_meta("config_sha256", hashlib.sha256(cfg.model_dump_json().encode()).hexdigest())
    controller = Controller(topology, cfg, journal=journal, catalog=catalog)
    out.parent.mkdir(parents=True, exist_ok=True)
    by_state: Counter[str] = Counter()
    total = IngestReport()
    ticks = 0
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), AmountColumn(), TimeRemainingColumn(),
        console=console, transient=False,
    )  # fmt: skip
    try:
        with progress, out.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(TRANSITION_HEADER)
            read_task = progress.add_task("reading telemetry", total=None, unit=BYTES)

            def on_read(done: int, size: int) -> None:  # both in bytes of the files (read_telemetry)
                progress.update(read_task, completed=done, total=size)

            score_task = progress.add_task("scoring ticks", total=None, visible=False, unit=TICKS)
            with read_telemetry(telemetry, topology, catalog, tick_s=tick, progress=on_read) as replay:
                for now, batch in replay:
                    if ticks == 0:  # every file is read: the tick count is known exactly
                        progress.update(read_task, completed=progress.tasks[read_task].total or 0)
                        progress.update(score_task, total=replay.tick_count, visible=True)
                    result = controller.tick(now, batch)
                    total.merge(result.ingest)
                    ticks += 1
                    for t in result.transitions:
                        writer.writerow(transition_row(t))
                        by_state[t.to_state] += 1
                    for notice in result.notices:
                        console.print(f"[yellow]notice[/] {escape(notice)}", soft_wrap=True)
                    progress.advance(score_task)
                report_lines = replay.report.summary_lines()
    finally:
        if journal is not None:
            journal.close()
    for line in report_lines:
        console.print(
            f"[yellow]input[/] {escape(line)}", soft_wrap=True
        )  # whole lines: file:line stays greppable
    if total.sentinel or total.kind_mismatch:
        console.print(
            f"[yellow]input[/] {total.sentinel} sentinel values treated as missing, "
            f"{total.kind_mismatch} samples whose signal does not belong to their entity's kind ignored",
            soft_wrap=True,
        )
    if total.implausible or total.resets:
        console.print(
            f"[yellow]input[/] {total.implausible} values outside their signal's physical range treated "
            f"as missing, {total.resets} counter resets (reboot, driver reload) gave no rate",
            soft_wrap=True,
        )
    n = sum(by_state.values())
    states = ", ".join(f"{k} {v}" for k, v in sorted(by_state.items())) or "none"
    console.print(f"scored {ticks} ticks: {n} transitions ({states}) -> {out}", soft_wrap=True)
    return ScoreSummary(ticks=ticks, transitions=n, by_state=dict(by_state), ingest=total)
