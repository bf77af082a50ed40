"""Readings that contradict physically coupled readings are not believed.

``detectors.corroborate`` maps a signal to coupled signals of the same entity. The evidence any
detector draws from the signal counts for an entity only if at least one coupled signal of
that entity carries evidence too (any detector, above ``SUPPORT_MIN``; a trend held back by a load
gate still says which way its reading moves, and that counts), or if every coupled
signal is missing there (then nothing can be told, and the reading is kept). Otherwise the
reading is *uncorroborated*: its evidence is dropped before the scores are combined, so it can
raise no state, reach neither GFS nor the recovery share, and is never shown by an explanation.

A CDU flow meter that reads 10% low while the loop's head pressure and coolant temperatures stay
where they were is lying: a real loss of flow moves the pump's head and, soon, the temperatures.
Storage throughput that falls while latency does not rise is demand falling (a checkpoint burst
ending), not a backend degrading.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from seamguard.scoring.evidence import Evidence, FloatArray

BoolArray = npt.NDArray[np.bool_]

# Evidence (a detector's own 0..1, before its weight) a coupled reading needs to corroborate:
# above rounding dust, far below anything that moves a state. Detectors give exactly 0 inside
# their warn bounds, so normal noise never corroborates anything.
SUPPORT_MIN = 0.05


@dataclass(frozen=True)
class Corroboration:
    evidence: list[Evidence]  # with the uncorroborated evidence dropped
    dropped: dict[str, BoolArray]  # rule signal -> entities (local) whose evidence was dropped
    strength: dict[str, FloatArray]  # signal -> strongest evidence of any detector, before dropping


def strongest(evidence: Sequence[Evidence], *, supporting: bool = False) -> dict[str, FloatArray]:
    """Per signal, the strongest evidence any detector draws from it, per entity (local);
    ``supporting``: what the readings say before load gates (``Evidence.support``)."""
    out: dict[str, FloatArray] = {}
    for ev in evidence:
        if ev.evidence.size == 0:
            continue
        said = ev.support if supporting and ev.support is not None else ev.evidence
        seen = out.get(ev.signal)
        out[ev.signal] = said if seen is None else np.maximum(seen, said)
    return out


def drop(ev: Evidence, mask: BoolArray) -> Evidence:
    """``ev`` with no evidence where ``mask`` (the same object when there was none to drop)."""
    if not np.any(mask & (ev.evidence > 0)):
        return ev
    return replace(ev, evidence=np.where(mask, 0.0, ev.evidence))


def corroborate(
    evidence: Sequence[Evidence],
    rules: Mapping[str, Sequence[str]],
    missing: Callable[[str], BoolArray],
) -> Corroboration:
    """Drop the evidence of every rule's signal where none of its coupled signals carries evidence
    and not all of them are missing (``missing(name)``: per entity, no current value).

    Support is judged on the evidence as it arrives, before any is dropped here, so the order of
    the rules does not matter. Costs nothing on a quiet fleet: a rule whose signal carries no
    evidence anywhere is skipped before its coupled signals are looked at.
    """
    strength = strongest(evidence)
    said = strongest(evidence, supporting=True)
    dropped: dict[str, BoolArray] = {}
    for name, coupled in rules.items():
        own = strength.get(name)
        if own is None or not own.any():
            continue
        supported = np.zeros(own.size, dtype=bool)
        all_missing = np.ones(own.size, dtype=bool)
        for other in coupled:
            support = said.get(other)
            if support is not None:
                supported |= support > SUPPORT_MIN
            all_missing &= missing(other)
        lost = (own > 0) & ~supported & ~all_missing
        if lost.any():
            dropped[name] = lost
    if not dropped:
        return Corroboration(list(evidence), dropped, strength)
    kept = [drop(ev, dropped[ev.signal]) if ev.signal in dropped else ev for ev in evidence]
    return Corroboration(kept, dropped, strength)
