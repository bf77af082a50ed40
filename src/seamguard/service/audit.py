"""The audit trail of the HTTP API, tallied per tick.

Every request that changed state (a non-GET/HEAD that passed authentication) and every refused
one (401/403) is counted under (principal, client, method, path, status); ``Daemon.step`` drains
the tally into the journal once a tick. Thousands of exporters pushing every few seconds are one
row per principal and tick, not a row per request. Distinct keys are capped: past the cap a
request is counted in one overflow row, so a scan of random paths cannot grow memory.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from seamguard.journal.records import AuditRecord

MAX_KEYS = 1000  # distinct (principal, client, method, path, status) between two ticks
MAX_PATH = 200  # a path longer than this is cut: it is evidence, not a key to grow on
OVERFLOW = "(overflow)"

AuditKey = tuple[str, str, str, str, int]


@dataclass
class AuditTally:
    max_keys: int = MAX_KEYS
    _counts: Counter[AuditKey] = field(default_factory=Counter)
    _overflow: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, principal: str, client: str, method: str, path: str, status: int) -> None:
        key = (principal, client, method, path[:MAX_PATH], status)
        with self._lock:
            if key in self._counts or len(self._counts) < self.max_keys:
                self._counts[key] += 1
            else:
                self._overflow += 1

    def drain(self, now: float) -> list[AuditRecord]:
        with self._lock:
            counts, self._counts = self._counts, Counter()
            overflow, self._overflow = self._overflow, 0
        rows = [AuditRecord(now, *key, n) for key, n in sorted(counts.items())]
        if overflow:
            rows.append(AuditRecord(now, OVERFLOW, "", "", "", 0, overflow))
        return rows
