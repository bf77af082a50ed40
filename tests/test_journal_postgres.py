"""The shared journal on a real PostgreSQL server (Debian's, started on a loopback port of its
own): the same records read back as from SQLite, versioned migrations, writes fenced by epoch
(a deposed leader's write refused whole), and a SQLite journal copied in."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from seamguard.cli import app
from seamguard.errors import InputError
from seamguard.journal.base import JournalUnavailableError
from seamguard.journal.copy import copy_journal
from seamguard.journal.postgres import SCHEMA_VERSION, PostgresJournal, StaleEpochError, migrate
from seamguard.journal.records import (
    ActionResultRecord,
    AuditRecord,
    DecisionRecord,
    EvidenceItem,
    FindingRecord,
    NoticeRecord,
    ObservationRecord,
    OutcomeRecord,
    TransitionRecord,
)
from seamguard.journal.sqlite import SqliteJournal
from tests.postgres_server import PostgresServer, postgres_server

EV = (EvidenceItem("trend", "gpu.temp_c", 0.62, "gpu.temp_c trending +0.8 °C/min"),)
runner = CliRunner(env={"COLUMNS": "300"})


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with postgres_server() as pg:
        yield pg


_made = iter(range(1_000_000))


@pytest.fixture
def dsn(server: PostgresServer) -> str:
    """A fresh, empty database for each test."""
    name = f"journal_{next(_made)}"
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.dsn(name)


def records() -> dict[str, list[Any]]:
    return {
        "transitions": [TransitionRecord(10.0, "gpu/n0/1", "healthy", "degraded", 0.5, 0.1, 1.2, "hot", EV, 3),
                        TransitionRecord(20.0, "gpu/n0/1", "degraded", "quarantine", 0.9, 0.2, 1.4, "hotter", EV, 3)],
        "decisions": [DecisionRecord(20.0, "node/n0", "drain_node", "act", "hot", "quarantine", EV, 3, "gpu/n0/1",
                                     12.5, math.nan)],
        "outcomes": [OutcomeRecord(30.0, "node/n0", "drain_node", 20.0, math.nan, 4.0, "note")],
        "observations": [ObservationRecord(15.0, "gpu/n0/1", "degraded", 0.6, 0.1, 1.2, EV)],
        "action_results": [ActionResultRecord(20.5, "drain_node", "node/n0", "slurm", "done", "drained", 3, 20.0, 1),
                           ActionResultRecord(21.0, "resume_node", "node/n1", "slurm", "fenced", "x", 2, math.nan, 0)],
        "notices": [NoticeRecord(20.5, "safety", "warning", "budget")],
        "audit": [AuditRecord(20.6, "ops", "", "GET", "/v1/status", 200, 3)],
        "findings": [FindingRecord(12.0, "train", "healthy", '{"job":"train","mode":"healthy"}'),
                     FindingRecord(22.0, "train", "thermal_power", '{"job":"train","mode":"thermal_power","cost_gpu_h":1.5}')],
    }  # fmt: skip


def write(j: SqliteJournal | PostgresJournal, r: dict[str, list[Any]]) -> None:
    j.append(r["transitions"], r["decisions"], r["observations"], r["outcomes"])
    j.append_actions(r["action_results"], r["notices"], r["audit"])
    j.append_findings(r["findings"])


def read(j: SqliteJournal | PostgresJournal) -> list[str]:
    """Everything the journal answers, as text (NaN reads back as NaN on both: repr compares)."""
    return [repr(x) for x in (
        j.transitions(), j.transitions("gpu/n0/1", until=15.0), j.transitions(since=15.0),
        j.decisions("gpu/n0/1"), j.decisions("node/n0"), j.outcomes(), j.observations(limit=1),
        j.action_results(), j.action_results("node/n1"), j.action_results(status="done"), j.notices(),
        j.audit(), j.last_observation("gpu/n0/1", 16.0), j.last_observation("gpu/n0/1", 1.0), j.entities(),
        j.time_range(), j.findings(), j.findings("train", until=15.0), j.findings(since=15.0), j.findings("none"),
        j.finding_jobs(),
    )]  # fmt: skip


def test_migrations_are_versioned_and_a_journal_behind_them_is_refused(dsn: str) -> None:
    with pytest.raises(InputError, match="run `seamguard journal migrate --journal postgresql://seamguard@"):
        PostgresJournal(dsn)
    assert migrate(dsn) == list(range(1, SCHEMA_VERSION + 1))
    assert migrate(dsn) == []  # already current: nothing to do
    with PostgresJournal(dsn) as j:
        assert j.time_range() is None and j.fence_epoch() == 0


def test_a_journal_at_version_2_migrates_to_findings_losing_nothing(dsn: str) -> None:
    """A journal as migrations 1 and 2 left it (before the ``finding`` table): refused until
    migrated, then only migration 3 runs, its rows are kept, and findings are written and read."""
    from seamguard.journal.postgres import MIGRATIONS

    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
                     " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")  # fmt: skip
        for version, sql in MIGRATIONS[:2]:
            conn.execute(sql)  # our constant DDL, as ``migrate`` runs it
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
        conn.execute("INSERT INTO operator (ts, principal, verb, target, reason, until, detail)"
                     " VALUES (5.0, 'alice', 'pause', 'fleet', 'why', NULL, '')")  # fmt: skip
    with pytest.raises(InputError, match=f"schema version 2, this seamguard writes {SCHEMA_VERSION}"):
        PostgresJournal(dsn)
    assert migrate(dsn) == list(range(3, SCHEMA_VERSION + 1))
    with PostgresJournal(dsn, epoch=lambda: 1) as j:
        assert [(o.principal, o.verb) for o in j.operator_actions()] == [("alice", "pause")]
        assert j.findings() == [] and j.finding_jobs() == []
        j.append_findings(records()["findings"])
        assert [f.mode for f in j.findings("train")] == ["healthy", "thermal_power"]


def test_migrations_from_two_replicas_at_once_apply_once(dsn: str) -> None:
    results: list[list[int]] = []
    threads = [threading.Thread(target=lambda: results.append(migrate(dsn))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [[], [], [], list(range(1, SCHEMA_VERSION + 1))]


def test_the_same_records_read_back_as_from_sqlite(dsn: str, tmp_path: Path) -> None:
    migrate(dsn)
    with SqliteJournal(tmp_path / "j.sqlite") as lite, PostgresJournal(dsn) as pg:
        write(lite, records())
        write(pg, records())
        assert read(pg) == read(lite)
        pg.set_meta("source", "seamguard run")
        pg.set_meta("source", "replica b")
        assert pg.get_meta("source") == "replica b" and pg.get_meta("missing") is None


def test_a_write_from_an_older_epoch_is_refused_whole(dsn: str) -> None:
    migrate(dsn)
    epochs = {"a": 5, "b": 0}
    with (
        PostgresJournal(dsn, epoch=lambda: epochs["a"]) as a,
        PostgresJournal(dsn, epoch=lambda: epochs["b"]) as b,
    ):
        write(a, records())
        before = read(a)
        with pytest.raises(StaleEpochError, match="under epoch 0 refused, the journal is at epoch 5"):
            b.append(records()["transitions"], records()["decisions"])  # a follower
        epochs["b"] = 7  # b leads now
        b.append_actions(records()["action_results"][:1])
        assert a.fence_epoch() == 7
        with pytest.raises(StaleEpochError, match="epoch 5 refused"):  # a, deposed, wakes up
            write(a, records())
        after = read(a)
        assert after[0] == before[0] and len(a.action_results()) == 3  # only b's one result landed
        refused: list[StaleEpochError] = []
        with PostgresJournal(dsn, epoch=lambda: 5, on_stale=refused.append) as late:
            late.append_actions(records()["action_results"])  # handed to on_stale, not raised
            late.set_meta("source", "deposed")
        assert len(refused) == 2 and len(a.action_results()) == 3 and a.get_meta("source") is None


def test_a_sqlite_journal_copied_in_reads_the_same(dsn: str, tmp_path: Path) -> None:
    migrate(dsn)
    src = tmp_path / "j.sqlite"
    with SqliteJournal(src) as lite:
        write(lite, records())
        expected = read(lite)
    result = runner.invoke(app, ["journal", "copy", "--from", str(src), "--to", dsn])
    assert result.exit_code == 0, result.output
    assert "copied 11 records (transitions 2, decisions 1" in result.output and "finding 2" in result.output
    with PostgresJournal(dsn) as pg:
        assert read(pg) == expected
        with pytest.raises(InputError, match="already holds records"):
            copy_journal(src, pg)


def test_the_cli_migrates_and_refuses_what_is_not_postgres(dsn: str, tmp_path: Path) -> None:
    first = runner.invoke(app, ["journal", "migrate", "--journal", dsn])
    assert (
        first.exit_code == 0
        and f"migrations applied: {', '.join(map(str, range(1, SCHEMA_VERSION + 1)))}" in first.output
    )
    again = runner.invoke(app, ["journal", "migrate", "--journal", dsn])
    assert again.exit_code == 0 and "none (already current)" in again.output
    bad = runner.invoke(app, ["journal", "migrate", "--journal", str(tmp_path / "j.sqlite")])
    assert bad.exit_code == 2 and "expected a postgresql:// DSN" in bad.output
    down = runner.invoke(app, ["journal", "migrate", "--journal", "postgresql://seamguard@127.0.0.1:1/x"])
    assert down.exit_code == 2 and "cannot open the PostgreSQL journal" in down.output


def test_a_database_restart_between_writes_loses_nothing(server: PostgresServer, dsn: str) -> None:
    """The server restarts (a maintenance, a failover of the database): the journal opens its
    connection again at the next call; a write that met the dead connection raised and wrote
    nothing, and is not half there."""
    migrate(dsn)
    with PostgresJournal(dsn, epoch=lambda: 3) as j:
        write(j, records())
        server.stop()
        with pytest.raises(JournalUnavailableError, match=r"postgresql://seamguard@127\.0\.0\.1"):
            j.append(records()["transitions"], [])
        server.start()
        write(j, records())  # reconnected
        assert len(j.transitions()) == 4 and len(j.action_results()) == 4 and j.fence_epoch() == 3


def test_writes_kept_while_the_database_is_away_go_in_order_when_it_is_back(
    server: PostgresServer, dsn: str
) -> None:
    """``BufferedJournal`` (what ``seamguard run`` writes a PostgreSQL journal through): a drain
    that reached the cluster while the database restarted is journaled when it is back, after the
    engine output written before it."""
    from seamguard.journal.buffered import BufferedJournal

    migrate(dsn)
    r = records()
    with PostgresJournal(dsn, epoch=lambda: 4) as pg:
        j = BufferedJournal(pg)
        server.stop()
        j.append(r["transitions"][:1], r["decisions"])  # the engine's output, tick 1
        j.append_actions(r["action_results"][:1])  # the drain it carried out
        assert j.kept_records == 3
        with pytest.raises(JournalUnavailableError):
            j.action_results()  # reads go straight through
        server.start()
        j.append(r["transitions"][1:], [])  # tick 2: everything kept goes first
        assert j.kept_records == 0
        assert [t.ts for t in pg.transitions()] == [10.0, 20.0]
        assert [(a.kind, a.status) for a in pg.action_results()] == [("drain_node", "done")]
        small = BufferedJournal(pg, max_kept=1)
        server.stop()
        with pytest.raises(JournalUnavailableError):
            small.append_actions(r["action_results"])  # away too long (past max_kept): raises
        server.start()
