"""The operator's standing controls: pauses, pins and maintenance windows, each with who, why and
until when; and the approvals and rejections of actions that wait for a person.

Pure state, time passed in: the daemon applies each control as it is journaled (``OperatorRecord``)
and rebuilds the set from the journal at start, so a restart or a new leader keeps every pause,
pin and window an operator set. A control lapses by itself at ``until``: a forgotten pause must not
leave a fleet unprotected for ever, so every one has an expiry (``MAX_FOR_S`` at most).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from seamguard.journal.records import OperatorRecord
from seamguard.timeparse import format_time

FLEET = "fleet"  # the scope of a fleet-wide pause
MAX_FOR_S = 7 * 86400.0  # the longest a pause, pin or window may be set for
MAX_REASON = 500  # characters of a reason


class Verb(StrEnum):
    PAUSE = "pause"  # no action is carried out in the scope: decided and advised only
    RESUME = "resume"  # ends a pause
    PIN = "pin"  # the entity's state is the operator's (healthy: left in service; quarantined: held out)
    UNPIN = "unpin"
    MAINTENANCE = "maintenance"  # seamguard's hands off the scope: nothing decided there is carried out
    END_MAINTENANCE = "end_maintenance"
    APPROVE = "approve"  # an action waiting for a person is carried out
    REJECT = "reject"  # ... or dropped
    REPAIRED = "repaired"  # a node vouched repaired: the engine forgets it; a first offender leaves at once


class PinnedState(StrEnum):
    HEALTHY = "healthy"
    QUARANTINED = "quarantined"


STANDING = {Verb.PAUSE: Verb.RESUME, Verb.PIN: Verb.UNPIN, Verb.MAINTENANCE: Verb.END_MAINTENANCE}
ENDS = {end: start for start, end in STANDING.items()}


@dataclass(frozen=True)
class Control:
    """One standing control (a pause, a pin or a maintenance window) in force."""

    verb: Verb
    target: str  # FLEET or an entity id
    principal: str
    reason: str
    since: float
    until: float
    state: str = ""  # a pin's state

    def to_json(self) -> dict[str, object]:
        return {"verb": self.verb.value, "target": self.target, "by": self.principal, "reason": self.reason,
                "since": self.since, "until": self.until, "state": self.state or None}  # fmt: skip

    def describe(self) -> str:
        """The sentence a journal row or a skipped action carries: what, who, until when, why."""
        what = (
            f"pinned {self.state}"
            if self.verb is Verb.PIN
            else {Verb.PAUSE: "paused", Verb.MAINTENANCE: "in maintenance"}[self.verb]
        )
        scope = "the fleet" if self.target == FLEET else self.target
        return f"{scope} {what} by {self.principal} until {format_time(self.until)}: {self.reason}"  # fmt: skip


class Controls:
    """The controls in force, keyed by (verb, target): a second pause of the same scope replaces
    the first (its reason and expiry are the newer ones)."""

    def __init__(self) -> None:
        self._active: dict[tuple[Verb, str], Control] = {}

    def apply(self, record: OperatorRecord) -> Control | None:
        """Take one journaled control into force (or out of it); the control that ended, if any."""
        verb = Verb(record.verb)
        if verb in STANDING:
            self._active[(verb, record.target)] = Control(
                verb, record.target, record.principal, record.reason, record.ts,
                record.until if math.isfinite(record.until) else math.inf, record.detail if verb is Verb.PIN else "",
            )  # fmt: skip
            return None
        if verb in ENDS:
            return self._active.pop((ENDS[verb], record.target), None)
        return None

    def lapse(self, now: float) -> list[Control]:
        """Controls whose time is up, taken out of force (the caller journals that they ended)."""
        gone = [c for c in self._active.values() if c.until <= now]
        for c in gone:
            del self._active[(c.verb, c.target)]
        return gone

    def active(self, verb: Verb | None = None) -> list[Control]:
        return sorted((c for c in self._active.values() if verb is None or c.verb is verb),
                      key=lambda c: (c.verb.value, c.target))  # fmt: skip

    def get(self, verb: Verb, target: str) -> Control | None:
        return self._active.get((verb, target))

    def load(self, records: Iterable[OperatorRecord], now: float) -> None:
        """In force now: what a journal's controls leave at ``now``, replayed in order (a restart,
        a new leader). What lapsed while no replica led simply is not in force."""
        self._active.clear()
        for r in sorted(records, key=lambda r: r.ts):
            self.apply(r)
        self.lapse(now)
