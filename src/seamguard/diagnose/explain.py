"""``seamguard explain``: why an entity is in its state, from the journal alone."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from seamguard.config import Config
from seamguard.control.admissibility import describe_admission
from seamguard.journal.base import Journal
from seamguard.journal.records import (
    DecisionRecord,
    EvidenceItem,
    ObservationRecord,
    OutcomeRecord,
    TransitionRecord,
)
from seamguard.model.states import State


@dataclass(frozen=True)
class Explanation:
    entity: str
    at: float
    state: State
    since: float | None
    gfs: float | None
    prs: float | None
    fae: float | None
    evidence: tuple[EvidenceItem, ...]
    transitions: tuple[TransitionRecord, ...]
    decisions: tuple[DecisionRecord, ...]
    admission: str
    observation: ObservationRecord | None
    outcomes: tuple[OutcomeRecord, ...] = ()  # realised cost and benefit of its valued decisions


class UnknownEntityError(KeyError):
    def __init__(self, entity: str, suggestions: list[str]) -> None:
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"{entity!r} does not appear in the journal{hint}")
        self.entity = entity
        self.suggestions = suggestions

    def __str__(self) -> str:
        return str(self.args[0])


def explain(journal: Journal, config: Config, entity: str, at: float | None = None) -> Explanation:
    span = journal.time_range()
    when = at if at is not None else (span[1] if span else 0.0)
    transitions = journal.transitions(entity=entity, until=when)
    observation = journal.last_observation(entity, when)
    if not transitions and observation is None:
        known = journal.entities()
        if entity not in known:
            raise UnknownEntityError(entity, difflib.get_close_matches(entity, known, n=3, cutoff=0.6))
    last = transitions[-1] if transitions else None
    state = State.parse(last.to_state) if last else State.HEALTHY
    since = last.ts if last else None
    evidence: tuple[EvidenceItem, ...] = ()
    gfs = prs = fae = None
    if observation is not None and (last is None or observation.ts >= last.ts):
        gfs, prs, fae, evidence = observation.gfs, observation.prs, observation.fae, observation.evidence
    elif last is not None:
        gfs, prs, fae, evidence = last.gfs, last.prs, last.fae, last.evidence
    decisions = journal.decisions(entity=entity, until=when)[-12:]
    targets = {d.entity for d in decisions}
    outcomes = [o for t in sorted(targets) for o in journal.outcomes(entity=t, until=when)
                if any(o.decided_at == d.ts and o.action == d.action for d in decisions)]  # fmt: skip
    return Explanation(
        entity=entity,
        at=when,
        state=state,
        since=since,
        gfs=gfs,
        prs=prs,
        fae=fae,
        evidence=evidence,
        transitions=tuple(transitions[-12:]),
        decisions=tuple(decisions),
        admission=describe_admission(config, state),
        observation=observation,
        outcomes=tuple(outcomes),
    )
