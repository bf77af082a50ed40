"""The notice for names a source sent that the engine does not know, in a text that stays put.

The daemon journals a notice when its text first appears and when it goes (``NoticeLatch``); a
text that changed every tick (per-tick counts, a different sample of names) would be journaled
twice a tick for as long as the problem lasts. So the text holds no counts but the size of the
problem in coarse steps, and a long list keeps the examples it was first given while it lasts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from seamguard.telemetry.replay_report import MAX_UNKNOWN_KEYS
from seamguard.telemetry.sources.base import SourceNotice

WHERE = "mapping"
ALL_SHOWN_UP_TO = 5  # this many distinct names or fewer: all of them, exactly
EXAMPLES = 3  # more: this many examples and the size of the problem
MAX_NAME_CHARS = 80  # a name is shown cut to this (a pushed name can be any length)
STEPS = (100, 10, ALL_SHOWN_UP_TO)  # "more than N distinct names", the largest N exceeded


def _short(name: str) -> str:
    return name if len(name) <= MAX_NAME_CHARS else name[: MAX_NAME_CHARS - 3] + "..."


def _size(distinct: int) -> str:
    if distinct >= MAX_UNKNOWN_KEYS:  # the sources' tally stops here
        return f"{MAX_UNKNOWN_KEYS:,} or more"
    return f"more than {next(step for step in STEPS if distinct > step)}"


def unknown_names_notice(
    source: str, unknown: Mapping[str, int], active: Iterable[tuple[str, str, str]]
) -> SourceNotice:
    """The notice for this tick's ``unknown`` (name -> samples, non-empty); ``active`` is the
    latch's active (source, where, message) keys, whose text is kept while the same problem lasts."""
    distinct = len(unknown)
    if distinct <= ALL_SHOWN_UP_TO:
        shown = ", ".join(_short(k) for k in sorted(unknown))
        return SourceNotice(source, WHERE, f"names not known to the engine: {shown}")
    head = f"{_size(distinct)} distinct names not known to the engine, e.g. "
    for key in active:
        if key[0] == source and key[1] == WHERE and key[2].startswith(head):
            return SourceNotice(*key)  # the same problem: the text it was first journaled with
    examples = sorted(unknown, key=lambda k: (-unknown[k], k))[:EXAMPLES]
    return SourceNotice(source, WHERE, head + ", ".join(_short(k) for k in examples))
