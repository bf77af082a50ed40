"""The shared journal for replicas (``ha``): PostgreSQL, behind the same interface as SQLite.

Every write is fenced by the leadership's epoch: a transaction first moves the one-row ``fence``
table to the writer's epoch, and only if that epoch is at least the one recorded there
(``UPDATE ... WHERE epoch <= %s``); otherwise it writes nothing and raises ``StaleEpochError``.
The row lock serialises writers, so a deposed leader that wakes up after a newer leader wrote
cannot write either, however late its transaction arrives. A follower writes with epoch 0.

The schema is versioned (``MIGRATIONS``) and moved only by ``seamguard journal migrate``
(``migrate``), under an advisory lock so that two replicas never migrate at once; a journal whose
schema is older than this seamguard is refused, naming the command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import psycopg

from seamguard.errors import InputError
from seamguard.journal import rows
from seamguard.journal.base import JournalUnavailableError
from seamguard.journal.sql_journal import SqlJournal

_ID = "id BIGSERIAL PRIMARY KEY, ts DOUBLE PRECISION NOT NULL"
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE fence (id INTEGER PRIMARY KEY CHECK (id = 1), epoch BIGINT NOT NULL);
INSERT INTO fence VALUES (1, 0);
CREATE TABLE transitions ({_ID}, entity TEXT NOT NULL, from_state TEXT NOT NULL, to_state TEXT NOT NULL,
    gfs DOUBLE PRECISION, prs DOUBLE PRECISION, fae DOUBLE PRECISION, reason TEXT NOT NULL,
    evidence TEXT NOT NULL, epoch BIGINT NOT NULL);
CREATE INDEX transitions_entity_ts ON transitions (entity, ts);
CREATE INDEX transitions_ts ON transitions (ts);
CREATE TABLE decisions ({_ID}, entity TEXT NOT NULL, action TEXT NOT NULL, mode TEXT NOT NULL,
    reason TEXT NOT NULL, state TEXT NOT NULL, evidence TEXT NOT NULL, epoch BIGINT NOT NULL,
    cause TEXT NOT NULL DEFAULT '', predicted_cost DOUBLE PRECISION, predicted_benefit DOUBLE PRECISION);
CREATE INDEX decisions_entity_ts ON decisions (entity, ts);
CREATE INDEX decisions_cause_ts ON decisions (cause, ts);
CREATE TABLE outcomes ({_ID}, entity TEXT NOT NULL, action TEXT NOT NULL, decided_at DOUBLE PRECISION NOT NULL,
    realised_cost DOUBLE PRECISION, realised_benefit DOUBLE PRECISION, note TEXT NOT NULL);
CREATE INDEX outcomes_entity_ts ON outcomes (entity, ts);
CREATE TABLE observations ({_ID}, entity TEXT NOT NULL, state TEXT NOT NULL, gfs DOUBLE PRECISION,
    prs DOUBLE PRECISION, fae DOUBLE PRECISION, evidence TEXT NOT NULL);
CREATE INDEX observations_entity_ts ON observations (entity, ts);
CREATE TABLE action_results ({_ID}, kind TEXT NOT NULL, target TEXT NOT NULL, actuator TEXT NOT NULL,
    status TEXT NOT NULL, detail TEXT NOT NULL, epoch BIGINT NOT NULL, decided_at DOUBLE PRECISION,
    attempt INTEGER NOT NULL);
CREATE INDEX action_results_target_ts ON action_results (target, ts);
CREATE INDEX action_results_ts ON action_results (ts);
CREATE TABLE notices ({_ID}, source TEXT NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL);
CREATE INDEX notices_ts ON notices (ts);
CREATE TABLE audit ({_ID}, principal TEXT NOT NULL, client TEXT NOT NULL, method TEXT NOT NULL,
    path TEXT NOT NULL, status INTEGER NOT NULL, count INTEGER NOT NULL);
CREATE INDEX audit_ts ON audit (ts);
"""),
    (2, f"""
CREATE TABLE operator ({_ID}, principal TEXT NOT NULL, verb TEXT NOT NULL, target TEXT NOT NULL,
    reason TEXT NOT NULL, until DOUBLE PRECISION, detail TEXT NOT NULL);
CREATE INDEX operator_ts ON operator (ts);
"""),
    (3, f"""
CREATE TABLE finding ({_ID}, job TEXT NOT NULL, mode TEXT NOT NULL, finding TEXT NOT NULL);
CREATE INDEX finding_job_ts ON finding (job, ts);
CREATE INDEX finding_ts ON finding (ts);
"""),
    (4, f"""
CREATE TABLE gateway_spend ({_ID}, key TEXT NOT NULL, tenant TEXT NOT NULL, period DOUBLE PRECISION NOT NULL,
    tokens BIGINT NOT NULL);
CREATE INDEX gateway_spend_key_period ON gateway_spend (key, period);
"""),
)  # fmt: skip
SCHEMA_VERSION = MIGRATIONS[-1][0]
_MIGRATION_LOCK = 0x5EA3_6A2D  # pg_advisory_xact_lock key: one migration at a time per database


class StaleEpochError(RuntimeError):
    """A write from an epoch older than the journal's: a deposed leader's, refused whole."""


def is_postgres(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def _connect(dsn: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise InputError(shown_location(dsn), f"cannot open the PostgreSQL journal: {exc}") from exc


def shown_location(dsn: str) -> str:
    """The DSN without its password, for messages (a SQLite path as it is)."""
    head, at, tail = dsn.rpartition("@")
    if not at or "://" not in head:
        return dsn
    scheme, _, user = head.partition("://")
    return f"{scheme}://{user.split(':', 1)[0]}@{tail}"


def schema_version(conn: psycopg.Connection[Any]) -> int:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(dsn: str) -> list[int]:
    """Apply the migrations this database lacks, in order, in one transaction; the versions applied."""
    with _connect(dsn) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        seen = schema_version(conn)
        if seen > SCHEMA_VERSION:
            raise InputError(
                shown_location(dsn), f"journal schema version {seen}, this seamguard knows {SCHEMA_VERSION}"
            )
        applied = []
        for version, sql in MIGRATIONS:
            if version > seen:
                conn.execute(sql)  # our own constant DDL, no parameters
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                applied.append(version)
        return applied


class PostgresJournal(SqlJournal):
    """The journal interface (``journal.base.Journal``) on PostgreSQL, each write fenced by
    ``epoch()`` (the leadership's, 0 when following; None: every write passes as epoch 0)."""

    MARK = "%s"

    def __init__(
        self,
        dsn: str,
        *,
        epoch: Callable[[], int] | None = None,
        on_stale: Callable[[StaleEpochError], None] | None = None,
    ) -> None:
        """``on_stale``: called with a refused write instead of raising it (the daemon logs it:
        a deposed leader's tick goes on, and writes nothing, until it learns it lost)."""
        self.dsn = dsn
        self.path = shown_location(dsn)
        self._epoch = epoch or (lambda: 0)
        self._on_stale = on_stale
        self._db = _connect(dsn)
        seen = schema_version(self._db)
        if seen != SCHEMA_VERSION:
            self._db.close()
            raise InputError(
                self.path,
                f"journal schema version {seen}, this seamguard writes {SCHEMA_VERSION}: run "
                f"`seamguard journal migrate --journal {self.path}` first",
            )

    # -- writing ---------------------------------------------------------------------------
    def insert_rows(self, table: str, batch: Sequence[Sequence[Any]]) -> None:
        """Rows already in ``rows.COLUMNS`` order (``copy_journal``), fenced like every write."""
        with self._fenced() as cur:
            cur.executemany(rows.insert_sql(table, "%s"), batch)

    def _insert(self, batches: Mapping[str, Sequence[Any]]) -> None:
        if not any(batches.values()):
            return
        try:
            with self._fenced() as cur:
                for table, records in batches.items():
                    if records:
                        cur.executemany(
                            rows.insert_sql(table, "%s"), [rows.ROW_OF[table](r) for r in records]
                        )
        except StaleEpochError as exc:
            if self._on_stale is None:
                raise
            self._on_stale(exc)

    @property
    def _conn(self) -> psycopg.Connection[Any]:
        """The connection, opened again if the server dropped it (a restart, a failover of the
        database): a transaction that was under way when it broke raised and wrote nothing."""
        if self._db.closed or self._db.broken:
            try:
                self._db = _connect(self.dsn)
            except InputError as exc:
                raise JournalUnavailableError(str(exc)) from exc
        return self._db

    @contextmanager
    def _fenced(self) -> Iterator[psycopg.Cursor[Any]]:
        """One write transaction under the fence; a connection lost on the way raises
        ``JournalUnavailableError`` and the transaction wrote nothing."""
        epoch = int(self._epoch())
        db = self._conn
        try:
            with db.transaction(), db.cursor() as cur:
                cur.execute("UPDATE fence SET epoch = %s WHERE id = 1 AND epoch <= %s", (epoch, epoch))
                if cur.rowcount != 1:
                    row = cur.execute("SELECT epoch FROM fence WHERE id = 1").fetchone()
                    raise StaleEpochError(
                        f"{self.path}: a write under epoch {epoch} refused, the journal is at epoch "
                        f"{row[0] if row else '?'}: a newer leader writes"
                    )
                yield cur
        except psycopg.OperationalError as exc:
            raise JournalUnavailableError(f"{self.path}: {exc}".strip()) from exc

    def ready(self) -> bool:
        try:
            self._rows("SELECT 1")
        except JournalUnavailableError:
            return False
        return True

    def fence_epoch(self) -> int:
        row = self._conn.execute("SELECT epoch FROM fence WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def set_meta(self, key: str, value: str) -> None:
        try:
            with self._fenced() as cur:
                cur.execute(
                    "INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    (key, value),
                )
        except StaleEpochError as exc:
            if self._on_stale is None:
                raise
            self._on_stale(exc)

    def get_meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        return None if row is None else str(row[0])

    # -- reading (``journal.sql_journal``) ----------------------------------------------------------
    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        try:
            return list(self._conn.execute(sql, args).fetchall())
        except psycopg.OperationalError as exc:
            raise JournalUnavailableError(f"{self.path}: {exc}".strip()) from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> PostgresJournal:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
