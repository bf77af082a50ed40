"""The gateway's ledger and decisions in its own SQLite journal (``journal.sqlite``), off the event loop.

The journal's ``gateway_spend`` table holds settled tokens as increments per (key, period), one
row per key and flush; at start they are summed back (``SqlJournal.gateway_spend``), so spent
tokens survive a restart and a key's newest row says when it last spent. Its decisions (refusals
for budget, breakers opened and closed, zombie keys) are journal notices with source ``gateway``,
naming keys by name. Why the journal and not a file of its own: the same upgrade-in-place schema,
writer lock and readers (``sqlite3``, ``journal copy`` into PostgreSQL) as every other record.
The gateway needs a journal file of its own all the same: a SQLite journal has one writer, and the
daemon holds its own.

One thread owns the connection (SQLite's are bound to the thread that opened them) and writes
every ``flush_s``: a write's fsync never stalls the event loop. Settled tokens not yet written
when the process is killed are lost (at most ``flush_s`` of them); a clean stop writes them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from seamguard.journal.records import GatewaySpendRecord, NoticeRecord
from seamguard.journal.sqlite import SqliteJournal

log = logging.getLogger(__name__)
SOURCE = "gateway"  # the notices' source


class SpendStore:
    def __init__(self, path: Path, flush_s: float, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.flush_s = flush_s
        self.clock = clock
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str, float], int] = {}
        self._notices: list[NoticeRecord] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.write_errors = 0

    def start(self) -> list[GatewaySpendRecord]:
        """Open the journal (its writer lock taken, InputError naming a holder) and read back the
        spend so far: totals per (key, tenant, period), ``ts`` the newest write."""
        opened: Future[list[GatewaySpendRecord]] = Future()
        self._thread = threading.Thread(target=self._run, args=(opened,), name="seamguard-gateway-store",
                                        daemon=True)  # fmt: skip
        self._thread.start()
        return opened.result()

    def add(self, key: str, tenant: str, period: float, tokens: int) -> None:
        """Tokens settled for ``key`` (written at the next flush); from any thread."""
        if tokens == 0:
            return
        with self._lock:
            k = (key, tenant, period)
            self._pending[k] = self._pending.get(k, 0) + tokens

    def notice(self, level: str, message: str) -> None:
        with self._lock:
            self._notices.append(NoticeRecord(self.clock(), SOURCE, level, message))

    def close(self) -> None:
        """Write what is pending and close the journal."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30.0)

    def _run(self, opened: Future[list[GatewaySpendRecord]]) -> None:
        try:
            journal = SqliteJournal(self.path)
        except BaseException as exc:  # handed to start(): an InputError names the lock's holder
            opened.set_exception(exc)
            return
        try:
            opened.set_result(journal.gateway_spend())
            while not self._stop.wait(self.flush_s):
                self._flush(journal)
            self._flush(journal)
        finally:
            journal.close()

    def _flush(self, journal: SqliteJournal) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            notices, self._notices = self._notices, []
        if not pending and not notices:
            return
        now = self.clock()
        spend = [GatewaySpendRecord(now, k, t, p, n) for (k, t, p), n in pending.items()]
        try:
            journal.append_gateway_spend(spend)
        except Exception:  # kept for the next flush: a busy or full disk must not lose spend
            self.write_errors += 1
            log.exception("gateway journal %s: write failed, %d spend row(s) kept", self.path, len(spend))
            with self._lock:
                for k, n in pending.items():
                    self._pending[k] = self._pending.get(k, 0) + n
        try:
            journal.append_actions([], notices)
        except Exception:
            self.write_errors += 1
            log.exception("gateway journal %s: write failed, %d notice(s) kept", self.path, len(notices))
            with self._lock:
                self._notices[:0] = notices
