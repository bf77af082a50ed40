"""``seamguard explain``: why an entity is in its state, what seamguard did or would do about it,
and the next step for a person, from the journal alone.

The cause chain comes from the journal's map of failure domains (``diagnose.domains``): an
entity's upstream domains that were unwell at the time (a GPU under a quarantined CDU says so),
and for a domain, what below it turned unwell after it did. Identical decisions (the same action
on the same target, decided again at each relapse) are one row with a count.
"""

from __future__ import annotations

import difflib
import math
from collections import Counter
from dataclasses import dataclass, replace

from seamguard.config import Config
from seamguard.control.admissibility import describe_admission
from seamguard.diagnose.domains import META_KEY, Domains
from seamguard.journal.base import Journal
from seamguard.journal.records import (
    ActionResultRecord,
    DecisionRecord,
    EvidenceItem,
    ObservationRecord,
    OutcomeRecord,
    TransitionRecord,
)
from seamguard.model.runbook import by_hand
from seamguard.model.states import ROLLUP_SEVERITY as SEVERITY
from seamguard.model.states import State

SHOWN = 12  # transitions and decision groups shown
CALM = ("healthy", "unknown")


@dataclass(frozen=True)
class Upstream:
    """A domain the entity depends on that was unwell at the time."""

    entity: str
    state: str
    since: float
    reason: str


@dataclass(frozen=True)
class DecisionGroup:
    """One action on one target, decided ``count`` times (a relapse decides it again)."""

    first: DecisionRecord
    last_ts: float
    count: int
    outcome: str  # what became of it: the actuators' last word, or why nothing was carried out
    realised: OutcomeRecord | None
    targets: tuple[str, ...] = ()  # the same action decided at once on several targets (a CDU's nodes)


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
    upstream: tuple[Upstream, ...] = ()
    below: dict[str, int] | None = None  # a domain: what below it turned into each state after it
    groups: tuple[DecisionGroup, ...] = ()
    next_steps: tuple[str, ...] = ()
    domains_known: bool = False
    # A node: the one state an operator sees (the most severe of its own, its GPUs' and its
    # uplink's, as the console and /v1/status show it) and what it comes from.
    rolled: State | None = None
    rolled_from: dict[str, int] | None = None


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
    decisions = journal.decisions(entity=entity, until=when)
    targets = {d.entity for d in decisions}
    outcomes = [o for t in sorted(targets) for o in journal.outcomes(entity=t, until=when)
                if any(o.decided_at == d.ts and o.action == d.action for d in decisions)]  # fmt: skip
    results = [r for t in sorted(targets) for r in journal.action_results(target=t, until=when)]
    groups = _grouped(decisions, results, outcomes)
    raw = journal.get_meta(META_KEY)
    domains = Domains(raw) if raw else None
    upstream = _upstream(journal, domains, entity, when) if domains else []
    below = (
        _below(journal, domains, entity, since, when)
        if domains and since is not None and state.label not in CALM
        else None
    )
    rolled, rolled_from = _rolled(journal, entity, state, when)
    return Explanation(
        rolled=rolled,
        rolled_from=rolled_from,
        entity=entity,
        at=when,
        state=state,
        since=since,
        gfs=gfs,
        prs=prs,
        fae=fae,
        evidence=evidence,
        transitions=tuple(transitions[-SHOWN:]),
        decisions=tuple(decisions[-SHOWN:]),
        admission=describe_admission(config, state),
        observation=observation,
        outcomes=tuple(outcomes),
        upstream=tuple(upstream),
        below=below,
        groups=tuple(groups[-SHOWN:]),
        next_steps=tuple(_next_steps(state, evidence, groups, upstream)),
        domains_known=domains is not None,
    )  # fmt: skip


def _rolled(
    journal: Journal, entity: str, own: State, when: float
) -> tuple[State | None, dict[str, int] | None]:
    """A node's one state at ``when``: the most severe of its own, its GPUs' and its uplink's."""
    if not entity.startswith("node/"):
        return None, None
    name = entity.removeprefix("node/")
    parts = [e for e in journal.entities() if e.startswith(f"gpu/{name}/") or e == f"link/{name}"]
    states: Counter[str] = Counter()
    for e in parts:
        t = _state_at(journal, e, when)
        if t is not None and t.to_state != "healthy":
            states[t.to_state] += 1
    worst = max([own, *(State.parse(s) for s in states)], key=lambda s: SEVERITY[s])
    return worst, dict(states)


def _state_at(journal: Journal, entity: str, when: float) -> TransitionRecord | None:
    found = journal.transitions(entity=entity, until=when)
    return found[-1] if found else None


def _upstream(journal: Journal, domains: Domains, entity: str, when: float) -> list[Upstream]:
    out: list[Upstream] = []
    for up in domains.upstream(entity):
        t = _state_at(journal, up, when)
        if t is not None and t.to_state not in CALM:
            out.append(Upstream(up, t.to_state, t.ts, t.reason))
    return out


def _below(
    journal: Journal, domains: Domains, entity: str, since: float, when: float
) -> dict[str, int] | None:
    """For a domain: what below it turned unwell from the time it did (the GPUs a CDU heated)."""
    nodes = set(domains.nodes_below(entity))
    if not nodes or entity.startswith(("node/", "gpu/", "link/")):
        return None
    latest: dict[str, str] = {}
    for t in journal.transitions(since=since, until=when):
        node = domains.node_of(t.entity)
        if node in nodes and t.entity != entity:
            latest[t.entity] = t.to_state
    return dict(Counter(s for s in latest.values() if s not in CALM))


def _grouped(decisions: list[DecisionRecord], results: list[ActionResultRecord],
             outcomes: list[OutcomeRecord]) -> list[DecisionGroup]:  # fmt: skip
    by_decision: dict[tuple[str, str, float], ActionResultRecord] = {}
    for r in results:  # the last word on each decision (a retry's, an approval's)
        by_decision[(r.kind, r.target, r.decided_at)] = r
    realised = {(o.entity, o.action, o.decided_at): o for o in outcomes}
    groups: dict[tuple[str, str], list[DecisionRecord]] = {}
    for d in decisions:
        groups.setdefault((d.action, d.entity), []).append(d)
    out: list[DecisionGroup] = []
    for ds in groups.values():
        d = ds[-1]
        answer = by_decision.get((d.action, d.entity, d.ts))
        if answer is not None:
            outcome = f"{answer.status} by {answer.actuator}" + (
                f": {answer.detail}" if answer.status not in ("done", "already") else ""
            )
        elif d.mode == "advise":
            outcome = "advised only: nothing was carried out (advise mode)"
        else:
            outcome = "no actuator answer journaled"
        out.append(
            DecisionGroup(
                ds[0], d.ts, len(ds), outcome, realised.get((d.entity, d.action, d.ts)), (d.entity,)
            )
        )
    return _merged(sorted(out, key=lambda g: g.last_ts))


def _merged(groups: list[DecisionGroup]) -> list[DecisionGroup]:
    """One row for the same action decided at once on many targets with the same outcome (a CDU's
    drains): one line per cause, not a hundred."""
    rows: dict[tuple[str, float, float, int, str], DecisionGroup] = {}
    for g in groups:
        key = (g.first.action, g.first.ts, g.last_ts, g.count, g.outcome)
        if key in rows and g.realised is None and rows[key].realised is None:
            rows[key] = replace(rows[key], targets=(*rows[key].targets, *g.targets))
        else:
            rows[key if key not in rows else (*key[:4], key[4] + g.first.entity)] = g
    return sorted(rows.values(), key=lambda g: g.last_ts)


def _next_steps(state: State, evidence: tuple[EvidenceItem, ...], groups: list[DecisionGroup],
                upstream: list[Upstream]) -> list[str]:  # fmt: skip
    """What a person should do now, most pressing first."""
    steps: list[str] = []
    for item in evidence:
        if item.detector == "xid" and "): " in item.text:
            steps.append(
                f"{item.text.split(' (')[0]}: {item.text.rsplit('): ', 1)[1]} (NVIDIA's XID catalog)"
            )
    for up in upstream:
        if up.entity.split("/")[0] in ("cdu", "rack", "pdu"):
            steps.append(f"the cause is upstream: {up.entity} is {up.state} ({up.reason}); call facilities, "
                         f"`seamguard explain {up.entity}`")  # fmt: skip
            break
    if state.label in CALM:
        return steps
    seen: set[str] = set()
    for g in reversed(groups):
        d = g.first
        step = by_hand(d.action, *g.targets)
        if step and d.action not in seen and "done by" not in g.outcome:
            seen.add(d.action)
            on = d.entity if len(g.targets) == 1 else f"{len(g.targets)} targets"
            steps.append(f"{d.action} on {on}: {step}")
        if len(seen) >= 3:
            break
    return steps


def valued(cost: float, benefit: float) -> str:
    """A decision's value in words: "not valued" rather than a pair of dashes."""
    if math.isnan(cost) and math.isnan(benefit):
        return "not valued"
    return (
        f"{'-' if math.isnan(cost) else f'{cost:.1f}'} / {'-' if math.isnan(benefit) else f'{benefit:.1f}'}"
    )
