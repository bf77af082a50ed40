"""The SQLite journal: round trips, queries, refusals, and survival of a killed writer."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from seamguard.errors import InputError
from seamguard.journal.records import (
    DecisionRecord,
    EvidenceItem,
    ObservationRecord,
    OutcomeRecord,
    TransitionRecord,
)
from seamguard.journal.sqlite import SCHEMA_VERSION, SqliteJournal

EV = (EvidenceItem("trend", "gpu.temp_c", 0.62, "gpu.temp_c trending +0.8 °C/min"),)


def transition(ts: float, entity: str = "gpu/n0000/1", to: str = "degraded") -> TransitionRecord:
    return TransitionRecord(ts, entity, "healthy", to, 0.5, 0.1, 1.2, "why", EV, epoch=3)


def test_round_trip_and_queries(tmp_path: Path) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as j:
        j.append(
            [transition(10.0), transition(20.0, "gpu/n0000/2")],
            [DecisionRecord(10.0, "node/n0000", "drain_node", "advise", "because", "quarantine", EV)],
            [ObservationRecord(15.0, "gpu/n0000/1", "degraded", 0.55, 0.1, 1.2, EV)],
        )
        j.append([transition(30.0, to="quarantine")], [], [])
        j.set_meta("source", "test")
    with SqliteJournal(tmp_path / "j.sqlite", create=False) as j:
        assert j.get_meta("source") == "test"
        all_t = j.transitions()
        assert [t.ts for t in all_t] == [10.0, 20.0, 30.0]
        assert all_t[0] == transition(10.0)  # evidence and epoch survive
        assert [t.ts for t in j.transitions(entity="gpu/n0000/1", until=25.0)] == [10.0]
        assert [t.ts for t in j.transitions(since=15.0)] == [20.0, 30.0]
        assert j.decisions(entity="node/n0000")[0].action == "drain_node"
        assert j.last_observation("gpu/n0000/1", 14.0) is None
        obs = j.last_observation("gpu/n0000/1", 100.0)
        assert obs is not None and obs.gfs == 0.55 and obs.evidence == EV
        assert j.entities() == ["gpu/n0000/1", "gpu/n0000/2", "node/n0000"]
        assert j.time_range() == (10.0, 30.0)


def test_decisions_found_by_their_cause(tmp_path: Path) -> None:
    """explain on a GPU shows the drain of its node: decisions are found by target or by cause."""
    drain = DecisionRecord(
        10.0, "node/n0000", "drain_node", "advise", "why", "quarantine", EV, cause="gpu/n0000/1"
    )
    ckpt = DecisionRecord(10.0, "job/a", "checkpoint_now", "advise", "why", "quarantine", EV, cause="cdu/c1")
    with SqliteJournal(tmp_path / "j.sqlite") as j:
        j.append([], [drain, ckpt], [])
        assert j.decisions(entity="gpu/n0000/1") == [drain]
        assert j.decisions(entity="node/n0000") == [drain]
        assert j.decisions(entity="cdu/c1", until=5.0) == []
        assert j.decisions(entity="cdu/c1") == [ckpt]


def test_version_1_journal_is_upgraded_in_place(tmp_path: Path) -> None:
    """A journal written before decisions carried their cause still opens, every row intact."""
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema_version', '1');"
        "CREATE TABLE decisions (id INTEGER PRIMARY KEY, ts REAL NOT NULL, entity TEXT NOT NULL,"
        " action TEXT NOT NULL, mode TEXT NOT NULL, reason TEXT NOT NULL, state TEXT NOT NULL,"
        " evidence TEXT NOT NULL, epoch INTEGER NOT NULL);"
        "INSERT INTO decisions VALUES (1, 5.0, 'node/n1', 'drain_node', 'advise', 'old', 'quarantine', '[]', 2);"
    )
    db.commit()
    db.close()
    with SqliteJournal(path) as j:
        assert j.get_meta("schema_version") == str(SCHEMA_VERSION)
        (old,) = j.decisions()
        assert (old.entity, old.reason, old.epoch, old.cause) == ("node/n1", "old", 2, "")
        assert math.isnan(old.predicted_cost_gpu_h) and j.outcomes() == []


def test_valued_decisions_and_their_outcomes_round_trip(tmp_path: Path) -> None:
    valued = DecisionRecord(10.0, "node/n1", "replace_rank", "advise", "paid for", "degraded",
                            cause="gpu/n1/3", predicted_cost_gpu_h=12.5, predicted_benefit_gpu_h=40.0)  # fmt: skip
    plain = DecisionRecord(10.0, "node/n2", "drain_node", "advise", "quarantined", "quarantine")
    outcome = OutcomeRecord(400.0, "node/n1", "replace_rank", 10.0, 11.0, 35.5, "the part left the job")
    with SqliteJournal(tmp_path / "j.sqlite") as j:
        j.append([], [valued, plain], [])
        j.append([], [], [], [outcome])
        got = j.decisions()
        assert got[0] == valued and math.isnan(got[1].predicted_cost_gpu_h)
        assert j.outcomes(entity="node/n1") == [outcome] and j.outcomes(until=100.0) == []


def test_empty_journal_has_no_range(tmp_path: Path) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as j:
        j.append([], [], [])
        assert j.time_range() is None and j.transitions() == []


def test_refuses_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such journal"):
        SqliteJournal(tmp_path / "absent.sqlite", create=False)
    junk = tmp_path / "notes.txt"
    junk.write_text("this is not a database, just some text that is long enough\n" * 20)
    with pytest.raises(InputError, match="not a seamguard journal"):
        SqliteJournal(junk)
    assert junk.read_text().startswith("this is not a database")  # untouched


def test_refuses_other_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    SqliteJournal(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(InputError, match="schema version 99"):
        SqliteJournal(path)


def test_failed_append_writes_nothing(tmp_path: Path) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as j:
        j.append([transition(1.0)], [], [])
        bad = TransitionRecord(2.0, "gpu/x/0", "healthy", "degraded", 0.5, 0.1, 1.0, "r", EV)
        object.__setattr__(bad, "entity", None)  # violates NOT NULL on the second row
        with pytest.raises(sqlite3.IntegrityError):
            j.append([transition(2.0), bad], [], [])
        assert [t.ts for t in j.transitions()] == [1.0]


WRITER = textwrap.dedent(
    """
    import sys
    from seamguard.journal.records import TransitionRecord, EvidenceItem
    from seamguard.journal.sqlite import SqliteJournal
    ev = (EvidenceItem("level", "gpu.temp_c", 0.5, "x" * 200),)
    j = SqliteJournal(sys.argv[1])
    tick = 0
    while True:
        tick += 1
        rows = [TransitionRecord(float(tick), f"gpu/n{k:04d}/0", "healthy", "degraded", 0.5, 0.1, 1.0,
                                 "r", ev) for k in range(200)]
        j.append(rows, [], [])
        if tick == 5:
            print("ready", flush=True)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_killed_writer_loses_nothing_committed(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)  # let it get well into later ticks, mid-transaction most likely
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    with SqliteJournal(path) as j:
        rows = j.transitions()
        ticks = sorted({t.ts for t in rows})
        assert len(ticks) >= 5
        # every committed tick is complete and contiguous: no half-written tick survives
        assert ticks == [float(k) for k in range(1, len(ticks) + 1)]
        assert len(rows) == 200 * len(ticks)
        j.append([transition(1e9)], [], [])  # still writable after the crash
        assert j.transitions(since=1e9)[0].entity == "gpu/n0000/1"


def _pragmas(db: sqlite3.Connection) -> tuple[str, int]:
    return db.execute("PRAGMA journal_mode").fetchone()[0], db.execute("PRAGMA synchronous").fetchone()[0]


def test_the_writer_runs_wal_with_synchronous_full_and_again_after_reopening(tmp_path: Path) -> None:
    """docs/performance.md: WAL with ``synchronous=FULL``, so a committed tick is on disk, not in the
    page cache, when ``append`` returns. ``synchronous`` is per connection: read on the writer's."""
    path = tmp_path / "j.sqlite"
    for _ in range(2):  # created, then reopened
        with SqliteJournal(path) as j:
            j.append([transition(1.0)], [], [])
            assert _pragmas(j._db) == ("wal", 2)  # 2 is FULL (0 OFF, 1 NORMAL, 3 EXTRA)
    db = sqlite3.connect(path)
    assert _pragmas(db)[0] == "wal"  # WAL is a property of the file, kept for every reader
    db.close()


def test_transition_rows_never_print_negative_zero() -> None:
    from seamguard.journal.transitions_csv import transition_row

    row = transition_row(TransitionRecord(1.0, "gpu/n0/1", "unknown", "harmful", -0.0, -1e-9, 160.0, "why"))
    assert row[4:7] == ("0.0000", "0.0000", "160.00")
    assert transition_row(TransitionRecord(1.0, "x", "a", "b", -0.25, 0.0, 1.0, "r"))[4] == "-0.2500"
