"""The default journal: one SQLite file in WAL mode.

Each tick's transitions, decisions and observations (and each batch of action results and
notices) are written in one transaction with
``synchronous=FULL``: a process killed mid-write leaves every earlier tick intact and the
interrupted one absent, never half-written (SQLite's journal guarantees it; the test kills a
writer with SIGKILL to check).

One process writes a journal at a time (``journal.lock``: a second writer is refused naming the
first); readers open it read-only without that lock and read while it writes (WAL).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from seamguard.errors import InputError
from seamguard.journal import rows
from seamguard.journal.lock import WriterLock
from seamguard.journal.sql_journal import SqlJournal

SCHEMA_VERSION = 8
# Version 1 journals lack decisions.cause; version 2 the predicted cost and benefit of decisions
# and the outcomes table; version 3 the action_results and notices tables; version 4 the audit
# table; version 5 the operator table; version 6 the finding table (jobs' diagnosis); version 7 the
# gateway_spend table (the admission gateway's ledger). Opening an older journal adds what it lacks
# (old values read as ''/NaN; new tables start empty).

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, entity TEXT NOT NULL, from_state TEXT NOT NULL,
    to_state TEXT NOT NULL, gfs REAL, prs REAL, fae REAL, reason TEXT NOT NULL,
    evidence TEXT NOT NULL, epoch INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS transitions_entity_ts ON transitions (entity, ts);
CREATE INDEX IF NOT EXISTS transitions_ts ON transitions (ts);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, entity TEXT NOT NULL, action TEXT NOT NULL,
    mode TEXT NOT NULL, reason TEXT NOT NULL, state TEXT NOT NULL, evidence TEXT NOT NULL,
    epoch INTEGER NOT NULL, cause TEXT NOT NULL DEFAULT '', predicted_cost REAL, predicted_benefit REAL);
CREATE INDEX IF NOT EXISTS decisions_entity_ts ON decisions (entity, ts);
CREATE TABLE IF NOT EXISTS outcomes (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, entity TEXT NOT NULL, action TEXT NOT NULL,
    decided_at REAL NOT NULL, realised_cost REAL, realised_benefit REAL, note TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS outcomes_entity_ts ON outcomes (entity, ts);
CREATE TABLE IF NOT EXISTS observations (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, entity TEXT NOT NULL, state TEXT NOT NULL,
    gfs REAL, prs REAL, fae REAL, evidence TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS observations_entity_ts ON observations (entity, ts);
CREATE TABLE IF NOT EXISTS action_results (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, kind TEXT NOT NULL, target TEXT NOT NULL,
    actuator TEXT NOT NULL, status TEXT NOT NULL, detail TEXT NOT NULL, epoch INTEGER NOT NULL,
    decided_at REAL, attempt INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS action_results_target_ts ON action_results (target, ts);
CREATE INDEX IF NOT EXISTS action_results_ts ON action_results (ts);
CREATE TABLE IF NOT EXISTS notices (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, source TEXT NOT NULL, level TEXT NOT NULL,
    message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS notices_ts ON notices (ts);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, principal TEXT NOT NULL, client TEXT NOT NULL,
    method TEXT NOT NULL, path TEXT NOT NULL, status INTEGER NOT NULL, count INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
CREATE TABLE IF NOT EXISTS operator (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, principal TEXT NOT NULL, verb TEXT NOT NULL,
    target TEXT NOT NULL, reason TEXT NOT NULL, until REAL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS operator_ts ON operator (ts);
CREATE TABLE IF NOT EXISTS finding (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, job TEXT NOT NULL, mode TEXT NOT NULL,
    finding TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS finding_job_ts ON finding (job, ts);
CREATE INDEX IF NOT EXISTS finding_ts ON finding (ts);
CREATE TABLE IF NOT EXISTS gateway_spend (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, key TEXT NOT NULL, tenant TEXT NOT NULL,
    period REAL NOT NULL, tokens INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS gateway_spend_key_period ON gateway_spend (key, period);
"""


BUSY_TIMEOUT_S = 10.0  # how long a statement waits for SQLite's own lock (a checkpoint, a reader)


def _open_error(path: Path, exc: sqlite3.DatabaseError) -> InputError:
    """Busy is not corrupt: SQLite's own lock held too long says so, not "not a journal"."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary code of an extended one
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return InputError(
            str(path),
            f"journal busy: another connection held SQLite's lock past the {BUSY_TIMEOUT_S:g} s"
            f" wait ({exc}); retry, or check what else opens this file",
        )
    return InputError(str(path), f"not a seamguard journal ({exc})")


class SqliteJournal(SqlJournal):
    """Append-only decision journal. ``create=False`` refuses a path that does not exist.

    A writer (the default) holds the journal's writer lock (``journal.lock``) until ``close``: a
    second writer is refused naming the first. ``read_only=True`` opens without the lock and
    writes nothing (``seamguard explain``); WAL lets it read while a writer writes."""

    def __init__(self, path: Path, *, create: bool = True, read_only: bool = False) -> None:
        self.path = Path(path)
        self._lock: WriterLock | None = None
        if (read_only or not create) and not self.path.exists():
            raise InputError(str(self.path), "no such journal")
        if read_only:
            self._db = self._open_read_only()
            return
        self._lock = WriterLock.acquire(self.path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
            self._refuse_foreign()
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._check_version()
            self._db.execute("CREATE INDEX IF NOT EXISTS decisions_cause_ts ON decisions (cause, ts)")
        except sqlite3.DatabaseError as exc:
            self._lock.release()
            raise _open_error(self.path, exc) from exc
        except BaseException:
            self._lock.release()
            raise

    def _refuse_foreign(self) -> None:
        """Another program's SQLite database is not written into (its journal mode switched, our
        tables added beside its own): a file with tables but no ``meta`` is not a journal."""
        tables = sorted(r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
        if tables and "meta" not in tables:
            self._db.close()
            shown = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
            raise InputError(
                str(self.path),
                f"not a seamguard journal: another program's SQLite database (tables {shown}); "
                "nothing was written to it; give the journal a path of its own",
            )

    def _open_read_only(self) -> sqlite3.Connection:
        """SQLite's ``mode=ro``: nothing written, no writer lock taken. An older schema is first
        upgraded by a short-lived writer (refused, naming it, while another process writes)."""
        uri = self.path.resolve().as_uri() + "?mode=ro"
        try:
            db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_S)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise _open_error(self.path, exc) from exc
        if row is None:
            db.close()
            raise InputError(str(self.path), "not a seamguard journal (no schema version)")
        if int(row[0]) < SCHEMA_VERSION:
            db.close()
            SqliteJournal(self.path).close()
            return self._open_read_only()
        if int(row[0]) != SCHEMA_VERSION:
            db.close()
            raise InputError(
                str(self.path), f"journal schema version {row[0]}, this seamguard reads {SCHEMA_VERSION}"
            )
        return db

    def _check_version(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) < SCHEMA_VERSION:
            self._upgrade(int(row[0]))
        elif int(row[0]) != SCHEMA_VERSION:
            raise InputError(
                str(self.path), f"journal schema version {row[0]}, this seamguard reads {SCHEMA_VERSION}"
            )

    def _upgrade(self, seen: int) -> None:
        """Add what an older journal lacks in one transaction; the version is re-read under the
        write lock so two processes opening the same old journal do not both alter it. (The
        outcomes, action_results, notices, audit, operator, finding and gateway_spend tables are
        created by the schema script, which runs first: an upgrade to 4-8 only moves the version.)"""
        db = self._db
        with self._write():
            (version,) = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if int(version) <= 1:
                db.execute("ALTER TABLE decisions ADD COLUMN cause TEXT NOT NULL DEFAULT ''")
            if int(version) <= 2:
                db.execute("ALTER TABLE decisions ADD COLUMN predicted_cost REAL")
                db.execute("ALTER TABLE decisions ADD COLUMN predicted_benefit REAL")
            if int(version) < SCHEMA_VERSION:
                db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    # -- writing ---------------------------------------------------------------------------
    def _insert(self, batches: Mapping[str, Sequence[Any]]) -> None:
        """Each table's records in one transaction: all of them or none."""
        if not any(batches.values()):
            return
        with self._write():
            for table, records in batches.items():
                if records:
                    self._db.executemany(
                        rows.insert_sql(table, "?"), [rows.ROW_OF[table](r) for r in records]
                    )

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction, taken with the write lock at once: all of it or none of it."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def ready(self) -> bool:
        return True  # a local file: a write that fails raises, as it always did

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # -- reading (``journal.sql_journal``) ----------------------------------------------------------
    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return list(self._db.execute(sql, args).fetchall())

    def close(self) -> None:
        self._db.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> SqliteJournal:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
