"""Zombie keys: a key idle for long that suddenly spends, or one whose requests keep failing.

Both are how a leaked or forgotten key shows: a key nobody used for two weeks spending at 3 a.m.,
or a client retrying a broken integration in a loop (or someone trying an expired key). A flag is
journaled with the key's name, shown as a metric, and holds ``hold_s``; with ``refuse`` the key's
requests are refused (403) while it holds. When the key was last used survives a restart: it is
read back from the journal's spend rows (``store``).
"""

from __future__ import annotations

from dataclasses import dataclass

from seamguard.gateway.config import ZombieConfig

WOKE = "woke"  # idle past idle_s, then used
FAILING = "failing"  # failures in a row


@dataclass(frozen=True)
class Flag:
    key: str
    kind: str  # WOKE or FAILING
    detail: str
    until: float


class ZombieWatch:
    def __init__(self, config: ZombieConfig, last_seen: dict[str, float] | None = None) -> None:
        self.config = config
        self._last_seen = dict(last_seen or {})
        self._failures: dict[str, int] = {}
        self._flags: dict[str, Flag] = {}

    def flag(self, key: str, now: float) -> Flag | None:
        """The flag holding on ``key`` now, if any."""
        f = self._flags.get(key)
        if f is not None and now >= f.until:
            del self._flags[key]
            return None
        return f

    def flagged(self, now: float) -> list[str]:
        return sorted(k for k in list(self._flags) if self.flag(k, now) is not None)

    def used(self, key: str, now: float) -> Flag | None:
        """A request admitted to spend; a new flag when the key wakes from a long idle."""
        last = self._last_seen.get(key)
        self._last_seen[key] = now
        if last is None or now - last < self.config.idle_s:
            return None
        idle_d = (now - last) / 86400.0
        return self._raise(key, WOKE, f"idle {idle_d:.1f} d (since {last:.0f}), then spent", now)

    def result(self, key: str, ok: bool, now: float) -> Flag | None:
        """A request's end (ok: a 2xx answer); a new flag at the ``failures``-th failure in a row
        (None while one already holds: it is prolonged)."""
        if ok:
            self._failures.pop(key, None)
            f = self._flags.get(key)
            if f is not None and f.kind == FAILING:
                del self._flags[key]
            return None
        n = self._failures.get(key, 0) + 1
        self._failures[key] = n
        if n % self.config.failures:
            return None  # flagged at every ``failures``-th failure in a row
        held = self.flag(key, now)
        flag = self._raise(key, FAILING, f"{n} failed requests in a row", now)
        # a flag already holding is prolonged, not raised anew: a client failing in a loop
        # would otherwise journal a notice every ``failures`` requests
        return None if held is not None and held.kind == FAILING else flag

    def _raise(self, key: str, kind: str, detail: str, now: float) -> Flag:
        f = Flag(key, kind, detail, now + self.config.hold_s)
        self._flags[key] = f
        return f
