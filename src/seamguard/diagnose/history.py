"""``seamguard diagnose JOB``: a job's failure mode at a time, and how its mode changed up to then,
from the findings the daemon journaled (``diagnose.findings_log``), the journal alone.

The finding in force at a time is the job's last record at or before it: records are written at
each change of mode and every few minutes while the job is unwell, so the cost it shows is the
cost as of that record (``recorded``). A finding is kept as its JSON (``Finding.to_json``), read
back as a mapping: fields a later seamguard adds are shown by ``--json`` as they are.
"""

from __future__ import annotations

import difflib
import json
import sqlite3
from dataclasses import dataclass

from seamguard.journal.base import Journal
from seamguard.journal.records import FindingRecord
from seamguard.timeparse import format_time

SHOWN_JOBS = 10  # an unknown job's error lists this many of the jobs the journal knows


class NoFindingsError(LookupError):
    """The journal holds no finding at all: written before findings were journaled, or by a
    command that does not diagnose jobs."""

    def __init__(self, where: str) -> None:
        super().__init__(
            f"{where}: no diagnosis findings in this journal; only `seamguard run` journals them (from "
            "journal schema version 7), so a journal of an older seamguard, of `score` or of `demo` has none"
        )

    def __str__(self) -> str:
        return str(self.args[0])


class UnknownJobError(LookupError):
    def __init__(self, job: str, known: list[str], at: float | None = None) -> None:
        if at is not None:  # known, but its first finding comes later
            text = f"job {job!r} has no finding at or before {format_time(at)}; its first is later"
        else:
            close = difflib.get_close_matches(job, known, n=3, cutoff=0.6)
            shown = ", ".join(known[:SHOWN_JOBS]) + (
                f" and {len(known) - SHOWN_JOBS} more" if len(known) > SHOWN_JOBS else ""
            )
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            text = f"job {job!r} has no finding in the journal{hint} (jobs it knows: {shown})"
        super().__init__(text)
        self.job = job
        self.known = known

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Episode:
    """One stretch of a mode: from the record that named it to the next change (None: in force)."""

    mode: str
    start: float
    end: float | None
    cost_gpu_h: float | None  # the last cost journaled in it (None: healthy, or not known)

    def to_json(self) -> dict[str, object]:
        return {"mode": self.mode, "start": self.start, "end": self.end, "cost_gpu_h": self.cost_gpu_h}


@dataclass(frozen=True)
class JobDiagnosis:
    job: str
    at: float | None  # the time asked for (None: the journal's end)
    recorded: float  # when the finding in force was journaled
    finding: dict[str, object]  # ``Finding.to_json()`` as journaled
    history: tuple[Episode, ...]  # oldest first, up to ``at``

    @property
    def mode(self) -> str:
        return str(self.finding.get("mode", ""))

    def to_json(self) -> dict[str, object]:
        return {"job": self.job, "at": self.at, "recorded": self.recorded, "finding": self.finding,
                "history": [e.to_json() for e in self.history]}  # fmt: skip


def job_diagnosis(
    journal: Journal, job: str, at: float | None = None, where: str = "journal"
) -> JobDiagnosis:
    """The job's finding in force at ``at`` and its modes up to then; ``job`` by name, or as its
    entity id (``job/NAME``). Raises ``NoFindingsError`` or ``UnknownJobError``."""
    name = job.removeprefix("job/")
    try:
        records = journal.findings(job=name, until=at)
        known = journal.finding_jobs() if not records else [name]
    except sqlite3.OperationalError as exc:  # no finding table: nothing upgraded this journal
        if "no such table" not in str(exc):
            raise
        raise NoFindingsError(where) from None
    if not records:
        if not known:
            raise NoFindingsError(where)
        raise UnknownJobError(job, known, at if name in known else None)
    last = records[-1]
    return JobDiagnosis(name, at, last.ts, _loaded(last), tuple(episodes(records)))


def episodes(records: list[FindingRecord]) -> list[Episode]:
    """Consecutive records of one mode folded into one stretch, with the last cost seen in it."""
    out: list[Episode] = []
    for r in records:
        cost = _loaded(r).get("cost_gpu_h")
        cost = float(cost) if isinstance(cost, int | float) and r.mode != "healthy" else None
        if out and out[-1].mode == r.mode:
            out[-1] = Episode(r.mode, out[-1].start, None, cost if cost is not None else out[-1].cost_gpu_h)
            continue
        if out:
            prev = out[-1]
            out[-1] = Episode(prev.mode, prev.start, r.ts, prev.cost_gpu_h)
        out.append(Episode(r.mode, r.ts, None, cost))
    return out


def _loaded(r: FindingRecord) -> dict[str, object]:
    """The journaled JSON; a record that is not an object (hand-written) keeps its mode at least."""
    try:
        data = json.loads(r.finding)
    except ValueError:
        data = None
    return data if isinstance(data, dict) else {"job": r.job, "mode": r.mode}
