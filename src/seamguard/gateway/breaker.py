"""A circuit breaker per upstream: failure threshold, recovery timeout, bounded half-open probes.

The states and their names are the actuators' (``actuators.guard.Breaker``), so a dashboard reads
``closed``/``open``/``half_open`` the same way for both. Hand-written rather than taken from
``pybreaker``/``aiobreaker``: those read the wall clock inside, count a half-open probe only one
at a time, and wrap the call itself, whereas here the call is a stream whose outcome is known only
once its headers arrive, and time is passed in (``now``) so tests drive it without sleeping.

Closed: every request passes; ``failures_to_open`` consecutive failures (5xx, no answer) open
it. Open: nothing is sent to the upstream for ``recovery_s``. Half-open: at most
``half_open_probes`` trial requests at once; when that many have succeeded it closes, and any
failure opens it again for another ``recovery_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

from seamguard.actuators.guard import Breaker
from seamguard.gateway.config import BreakerConfig


@dataclass(frozen=True)
class Ticket:
    """Leave to send one request; ``probe`` when it is a half-open trial."""

    probe: bool


class UpstreamBreaker:
    def __init__(self, name: str, config: BreakerConfig) -> None:
        self.name = name
        self.config = config
        self.failures = 0  # consecutive
        self._opened_at: float | None = None
        self._probes_out = 0
        self._probes_ok = 0

    def state(self, now: float) -> Breaker:
        if self._opened_at is None:
            return Breaker.CLOSED
        return Breaker.HALF_OPEN if now >= self._opened_at + self.config.recovery_s else Breaker.OPEN

    def acquire(self, now: float) -> Ticket | None:
        """Leave to send a request now, or None: open, or every half-open probe is out."""
        state = self.state(now)
        if state is Breaker.CLOSED:
            return Ticket(probe=False)
        if state is Breaker.HALF_OPEN and self._probes_out + self._probes_ok < self.config.half_open_probes:
            self._probes_out += 1
            return Ticket(probe=True)
        return None

    def release(self, ticket: Ticket) -> None:
        """The request ended without saying anything of the upstream (the client went away)."""
        if ticket.probe and self._probes_out > 0:
            self._probes_out -= 1

    def success(self, ticket: Ticket, now: float) -> Breaker | None:
        """Record an answer; the new state when this closed the breaker."""
        self.failures = 0
        if not ticket.probe or self._opened_at is None:
            return None
        self._probes_out = max(0, self._probes_out - 1)
        self._probes_ok += 1
        if self._probes_ok >= self.config.half_open_probes:
            self._close()
            return Breaker.CLOSED
        return None

    def failure(self, ticket: Ticket, now: float) -> Breaker | None:
        """Record a failure; the new state when this opened the breaker (or opened it again)."""
        self.failures += 1
        if self._opened_at is not None:
            if not ticket.probe:
                return None  # a request sent before it opened, ending late: already open
            self._opened_at = now  # a failed probe: open for another recovery period
            self._probes_out = self._probes_ok = 0
            return Breaker.OPEN
        if self.failures >= self.config.failures_to_open:
            self._opened_at = now
            self._probes_out = self._probes_ok = 0
            return Breaker.OPEN
        return None

    def _close(self) -> None:
        self._opened_at = None
        self.failures = 0
        self._probes_out = self._probes_ok = 0
