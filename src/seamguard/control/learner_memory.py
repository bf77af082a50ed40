"""The fleet's learned failure rate kept across a daemon's restart, in the journal's meta table.

The learner (``economics.hazard_learning``) remembers about a day of failures. Held in memory
only, a restart forgot them: a fleet that failed ten times that morning read nominal again, and
its jobs went back to the nominal interval until they failed as often again. The leader writes the
learner's two decayed sums to the journal every ``SAVE_EVERY_S`` and whenever it counts a failure
(a fenced write on a shared journal: a deposed leader's is refused); a daemon that starts cold
reads them back and adds them to what it has counted since it started. The time the daemon was
down was not watched: the sums decay over it as over any time, and nothing is expected for it, so
the rate drifts back toward the prior by the decay alone, as it would over a day without news.
A replica that has been ticking longer than ``SAVE_EVERY_S`` (a follower taking the leadership)
keeps its own sums: it watched the same sources as its leader, and adding the journal's would
count each failure twice.

What the journal holds is checked like any input: a value that is not the JSON this module
writes, or whose sums are negative or not finite, or whose time lies ahead of the clock, is left
unread with a notice naming why, and the learner starts from its prior.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

from seamguard.economics.hazard_learning import HazardLearner
from seamguard.journal.base import Journal
from seamguard.journal.records import NoticeRecord

META_KEY = "hazard_learner"
SAVE_EVERY_S = 300.0  # a restart loses at most this much of the expected sum, and no failure
MAX_META_BYTES = 1024
log = logging.getLogger(__name__)


@dataclass
class LearnerMemory:
    saved_at: float = -math.inf
    saved_observed: float = math.nan
    watching_since: float = math.nan  # this process's first tick
    restored: bool = False
    failing: bool = False  # the last write failed: logged once until one succeeds

    def save(self, journal: Journal | None, learner: HazardLearner, now: float) -> None:
        """Write the learner's sums when due (``SAVE_EVERY_S``, or a failure counted since)."""
        if math.isnan(self.watching_since):
            self.watching_since = now
        if journal is None or math.isnan(learner.last):
            return
        counted = not learner.observed <= self.saved_observed  # NaN at first: written once
        if now - self.saved_at < SAVE_EVERY_S and not counted:
            return
        text = json.dumps({"observed": learner.observed, "expected": learner.expected, "at": learner.last})
        try:
            journal.set_meta(META_KEY, text)
        except Exception:  # no action waits on it: logged once, and written again at the next tick
            if not self.failing:
                log.exception("journal: the learned failure rate not written")
            self.failing = True
            return
        self.saved_at, self.saved_observed, self.failing = now, learner.observed, False

    def restore(self, journal: Journal, learner: HazardLearner, now: float) -> list[NoticeRecord]:
        """Add the journal's sums to a learner this process started cold, once. Returns the
        notices to journal: what was read, or why not."""
        if self.restored or (
            not math.isnan(self.watching_since) and now - self.watching_since > SAVE_EVERY_S
        ):
            return []
        self.restored = True
        try:
            text = journal.get_meta(META_KEY)
        except Exception as exc:  # a journal away: the rate is learned afresh, the tick goes on
            log.exception("journal: the learned failure rate not read")
            return [_unread(now, f"the journal did not answer: {type(exc).__name__}")]
        if text is None:
            return []
        try:
            observed, expected, at = _parse(text, now)
        except ValueError as exc:
            return [_unread(now, str(exc))]
        keep = 0.5 ** ((now - at) / learner.halflife_s)  # decayed over the time down; nothing expected for it
        learner.observed += observed * keep
        learner.expected += expected * keep
        if math.isnan(learner.last):
            learner.last = now
        return [NoticeRecord(now, "engine", "info", f"the fleet's learned failure rate taken over from the "
                             f"journal (saved {now - at:.0f} s ago): x{learner.scale():.2f} nominal")]  # fmt: skip


def _unread(now: float, why: str) -> NoticeRecord:
    return NoticeRecord(now, "engine", "warning", f"journal meta {META_KEY!r} not read ({why}): "
                        "the fleet's failure rate is learned afresh")  # fmt: skip


def _parse(text: str, now: float) -> tuple[float, float, float]:
    if len(text) > MAX_META_BYTES:
        raise ValueError(f"{len(text)} bytes, at most {MAX_META_BYTES}")
    try:
        got = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} at character {exc.pos}") from None
    if not isinstance(got, dict):
        raise ValueError("not a JSON object")
    values: list[float] = []
    for key in ("observed", "expected", "at"):
        v = got.get(key)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"{key} is {v!r}, not a finite number")
        values.append(float(v))
    observed, expected, at = values
    if observed < 0 or expected < 0:
        raise ValueError(f"negative sums (observed {observed}, expected {expected})")
    if at > now:
        raise ValueError(f"saved at {at:.0f}, {at - now:.0f} s ahead of the clock")
    return observed, expected, at
