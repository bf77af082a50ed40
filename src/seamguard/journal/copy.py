"""``seamguard journal copy``: a SQLite journal's records into a PostgreSQL one, table by table in
their original order, in batches (each batch one fenced transaction: ``PostgresJournal``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from seamguard.errors import InputError
from seamguard.journal import rows
from seamguard.journal.postgres import PostgresJournal
from seamguard.journal.sqlite import SqliteJournal

BATCH_ROWS = 5_000


def count_rows(source: Path) -> dict[str, int]:
    with SqliteJournal(source, read_only=True):  # refuses what is not a journal, upgrades an old one
        pass
    db = sqlite3.connect(source.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return {t: int(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in rows.TABLES}
    finally:
        db.close()


def copy_journal(
    source: Path, target: PostgresJournal, on_rows: Callable[[str, int], None] | None = None
) -> dict[str, int]:
    """Every record of ``source`` appended to ``target`` (which should be empty: records are not
    deduplicated); rows copied per table. ``on_rows(table, n)`` after each batch (progress)."""
    if target.time_range() is not None or target.action_results():
        raise InputError(target.path, "the PostgreSQL journal already holds records; copy into an empty one")
    counts = count_rows(source)
    db = sqlite3.connect(source.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        for table in rows.TABLES:
            cursor = db.execute(f"SELECT {', '.join(rows.COLUMNS[table])} FROM {table} ORDER BY id")
            while batch := cursor.fetchmany(BATCH_ROWS):
                target.insert_rows(table, batch)
                if on_rows is not None:
                    on_rows(table, len(batch))
    finally:
        db.close()
    return counts
