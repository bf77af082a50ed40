"""Scoring the engine on the field suite, and the driver that runs it.

* A fault is *detected* when its entity or any hardware in its reach (not a job: jobs slow for
  many reasons) enters degraded, recovery_unsafe, quarantine, harmful or failed at or after its
  onset; delay = detection - onset, lead = impact - detection.
* A *false-positive entity* is a distinct entity outside every fault's reach that entered one
  of those states; precision = detected faults / (detected faults + false-positive entities).
* A *false action* is a distinct entity outside every fault's reach that reached quarantine,
  harmful, recovery_unsafe or failed: a state the planner acts on.
* A confounder is *violated* when a false action falls in its scope while it can mislead (from
  its onset to its end, which includes the time a one-off can still sway a trend or a rate).
Pooled over seeds, entity ids are prefixed with their run so that runs stay apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from seamguard.config import Config, load_config
from seamguard.control.controller import Controller
from seamguard.fieldsim.generator import FieldFleet
from seamguard.fieldsim.labels import ConfounderLabel, FaultLabel
from seamguard.fieldsim.suite import DEFAULT_TICK_S, SUITE_DURATION_S, plan_run
from seamguard.journal.records import TransitionRecord

BAD_STATES = frozenset({"degraded", "recovery_unsafe", "quarantine", "harmful", "failed"})
ACTION_STATES = frozenset({"recovery_unsafe", "quarantine", "harmful", "failed"})
_SEVERITY = {"degraded": 1, "recovery_unsafe": 2, "harmful": 3, "quarantine": 4, "failed": 5}


@dataclass(frozen=True)
class FaultOutcome:
    label: FaultLabel
    detected_at: float | None
    first_entity: str | None
    first_state: str | None
    first_reason: str | None
    on_target_at: float | None  # when the fault's own entity first went bad (None: never)

    @property
    def delay_s(self) -> float | None:
        return None if self.detected_at is None else self.detected_at - self.label.onset

    @property
    def lead_s(self) -> float | None:
        return None if self.detected_at is None else self.label.impact - self.detected_at


@dataclass(frozen=True)
class FalseHit:
    """An entity outside every reach that went bad: its worst state and why the engine said so."""

    entity: str
    state: str
    ts: float
    reason: str


@dataclass(frozen=True)
class FieldEvaluation:
    faults: tuple[FaultOutcome, ...]
    confounders: tuple[ConfounderLabel, ...]
    false_entities: tuple[FalseHit, ...]
    false_actions: tuple[FalseHit, ...]
    violated: tuple[str, ...]  # confounder names (pooled: run:name) whose scope saw a false action

    @property
    def detected(self) -> int:
        return sum(f.detected_at is not None for f in self.faults)

    @property
    def recall(self) -> float:
        return self.detected / len(self.faults) if self.faults else 1.0

    @property
    def precision(self) -> float:
        n = self.detected + len(self.false_entities)
        return self.detected / n if n else 1.0

    def by_kind(self) -> dict[str, list[FaultOutcome]]:
        out: dict[str, list[FaultOutcome]] = {}
        for f in self.faults:
            out.setdefault(f.label.kind, []).append(f)
        return dict(sorted(out.items()))


def _outcome(label: FaultLabel, transitions: Sequence[TransitionRecord]) -> FaultOutcome:
    # A job slowing proves nothing about which part failed (jobs slow for many reasons): a fault
    # is detected on its own entity or on hardware in its reach.
    hits = [
        t
        for t in transitions
        if t.to_state in BAD_STATES
        and t.ts >= label.onset
        and t.entity in label.reach
        and not t.entity.startswith("job/")
    ]
    if not hits:
        return FaultOutcome(label, None, None, None, None, None)
    first = min(hits, key=lambda t: t.ts)
    own = [t.ts for t in hits if t.entity == label.entity]
    return FaultOutcome(
        label, first.ts, first.entity, first.to_state, first.reason, min(own) if own else None
    )


def _worst(transitions: Iterable[TransitionRecord]) -> dict[str, TransitionRecord]:
    """Per entity, its transition into its most severe state (the first such)."""
    out: dict[str, TransitionRecord] = {}
    for t in transitions:
        seen = out.get(t.entity)
        if seen is None or _SEVERITY[t.to_state] > _SEVERITY[seen.to_state]:
            out[t.entity] = t
    return out


def evaluate(
    faults: Sequence[FaultLabel],
    confounders: Sequence[ConfounderLabel],
    transitions: Sequence[TransitionRecord],
) -> FieldEvaluation:
    reach: set[str] = set()
    for f in faults:
        reach |= f.reach | {f.entity}
    outside = [t for t in transitions if t.entity not in reach and t.to_state in BAD_STATES]
    worst = _worst(outside)
    false = tuple(FalseHit(e, t.to_state, t.ts, t.reason) for e, t in sorted(worst.items()))
    acts = [t for t in outside if t.to_state in ACTION_STATES]
    actions = tuple(h for h in false if h.state in ACTION_STATES)
    violated = tuple(
        c.name for c in confounders if any(t.entity in c.scope and c.onset <= t.ts <= c.end for t in acts)
    )
    return FieldEvaluation(
        faults=tuple(_outcome(f, transitions) for f in faults),
        confounders=tuple(confounders),
        false_entities=false,
        false_actions=actions,
        violated=violated,
    )


def pooled(runs: Sequence[tuple[str, FieldEvaluation]]) -> FieldEvaluation:
    """Several runs as one; each run's entity ids and confounders are prefixed with its name."""

    def tag(name: str, hits: Iterable[FalseHit]) -> list[FalseHit]:
        return [FalseHit(f"{name}:{h.entity}", h.state, h.ts, h.reason) for h in hits]

    return FieldEvaluation(
        faults=tuple(f for _, ev in runs for f in ev.faults),
        confounders=tuple(c for _, ev in runs for c in ev.confounders),
        false_entities=tuple(h for name, ev in runs for h in tag(name, ev.false_entities)),
        false_actions=tuple(h for name, ev in runs for h in tag(name, ev.false_actions)),
        violated=tuple(f"{name}:{v}" for name, ev in runs for v in ev.violated),
    )


def n_ticks(duration_s: float, tick_s: float) -> int:
    return int(duration_s // tick_s)


def run_field(
    seed: int,
    *,
    duration_s: float = SUITE_DURATION_S,
    tick_s: float = DEFAULT_TICK_S,
    config: Config | None = None,
    on_tick: Callable[[], None] | None = None,
) -> FieldEvaluation:
    """One seed through a fresh controller (no journal). Without ``config``, the packaged
    defaults with ``engine.tick_s`` set to the tick, as a site config would."""
    if not tick_s > 0:
        raise ValueError(f"tick_s must be positive, got {tick_s}")
    if config is None:
        config = load_config()
        config = config.model_copy(update={"engine": config.engine.model_copy(update={"tick_s": tick_s})})
    fleet = FieldFleet(plan_run(seed, duration_s))
    controller = Controller(fleet.topology, config)
    transitions: list[TransitionRecord] = []
    now = fleet.plan.start
    for _ in range(n_ticks(duration_s, tick_s)):
        now += tick_s
        transitions.extend(controller.tick(now, fleet.batch(now, tick_s)).transitions)
        if on_tick is not None:
            on_tick()
    return evaluate(fleet.fault_labels(), fleet.confounder_labels(), transitions)
