"""Which of a tick's diagnosis findings (``diagnose.modes``) go to the journal, so that a job's
failure mode can be asked for later (``seamguard diagnose``) without a row per job per tick: on a
fleet of thousands of jobs ticking every 10 s that would be most of the journal.

A job's finding is journaled when it is first seen (healthy or not), when its named mode changes
(back to healthy included), when a healthy job comes at risk or stops being at risk (the start of
a pre-failure window, so its lead time can be read back), and again every ``every_s`` while it stays not healthy, so that the
cost it has run up so far is kept. A job steady and healthy writes nothing more: one row per job
started, not per tick. When an unwell mode ends (a change, or the job leaves the fleet), its last
finding is journaled too if it was not (at the tick it was seen), so the whole cost of each
stretch is kept, not its cost up to ``every_s`` before it ended. "First seen" is per run and per leadership: after a restart or a takeover
every job is journaled once again, so a job that recovered while nothing was journaling does not
read as unwell from then on. A job that leaves the fleet is forgotten (should it come back, it
starts over).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from seamguard.diagnose.modes import Finding, Mode
from seamguard.journal.records import FindingRecord

log = logging.getLogger(__name__)

EVERY_S = 300.0


def finding_record(f: Finding, now: float) -> FindingRecord:
    """The finding whole, as JSON text; raises ValueError (naming the job) past the record's bound."""
    return FindingRecord(now, f.job, f.mode.value, json.dumps(f.to_json(), separators=(",", ":")))


@dataclass
class FindingsLog:
    """What was journaled last per running job, and an unwell job's latest finding not journaled
    yet: the rule needs nothing else (module docstring)."""

    every_s: float = EVERY_S
    last: dict[str, tuple[Mode, bool, float]] = field(default_factory=dict)  # job -> mode, at risk, when
    unsaid: dict[str, tuple[Finding, float]] = field(default_factory=dict)  # job -> unwell finding, when

    def due(self, findings: Sequence[Finding], now: float) -> list[FindingRecord]:
        """The records to journal for this tick's findings (a job's own in time order)."""
        out: list[FindingRecord] = []
        for f in findings:
            before = self.last.get(f.job)
            if before is not None:
                mode, risky, at = before
                steady = f.mode is mode and bool(f.risk) == risky  # a risk named or gone is news too
                if steady and (mode is Mode.HEALTHY or now - at < self.every_s):
                    if mode is not Mode.HEALTHY:  # steady and unwell: its cost grows unjournaled
                        self.unsaid[f.job] = (f, now)
                    continue
            closing = self.unsaid.pop(f.job, None)
            if closing is not None and closing[0].mode is not f.mode:  # the stretch that ends, whole
                self._record(out, *closing)
            self.last[f.job] = (
                f.mode,
                bool(f.risk),
                now,
            )  # a record refused below is not tried again every tick
            self._record(out, f, now)
        running = {f.job for f in findings}
        if len(self.last) > len(running):  # every running job is in ``last`` now: the rest ended
            for job in [j for j in self.last if j not in running]:
                del self.last[job]
                ended = self.unsaid.pop(job, None)
                if ended is not None:
                    self._record(out, *ended)
        return out

    def forget(self) -> None:
        """Not leading: nothing is journaled, and the next leadership journals every job afresh."""
        self.last.clear()
        self.unsaid.clear()

    @staticmethod
    def _record(out: list[FindingRecord], f: Finding, at: float) -> None:
        try:
            out.append(finding_record(f, at))
        except ValueError as exc:
            log.error("finding not journaled: %s", exc)
