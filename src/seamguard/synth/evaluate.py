"""Scoring the engine against labelled faults: detection, lead time, precision and recall.

Definitions (also in docs/performance.md):
* a fault is *detected* when its target or any entity it legitimately affects enters a
  non-healthy, known state at or after its onset; detection delay is measured from onset,
  lead time is impact minus detection (positive: seamguard knew before it cost anything);
* a *false positive* is a distinct entity that entered such a state while belonging to no
  fault's affected set. Precision = detected faults / (detected faults + false-positive
  entities): an incident that lights up a hundred GPUs under one CDU counts once, so the
  figure cannot be inflated by large blast radii; recall = detected faults / faults;
* a benign confounder is *falsely quarantined* if its target reaches quarantine or failed.
  An 8%-slow GPU may become harmful in a synchronous job (that is the economic rule, see
  docs/scoring.md) and this does not count against precision.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from seamguard.config import Config, load_config
from seamguard.control.controller import Controller
from seamguard.journal.records import TransitionRecord
from seamguard.synth.faults import Label
from seamguard.synth.scenarios import Scenario, build

BAD_STATES = frozenset({"degraded", "recovery_unsafe", "quarantine", "harmful", "failed"})
OUT_STATES = frozenset({"quarantine", "failed"})


@dataclass(frozen=True)
class FaultOutcome:
    label: Label
    detected_at: float | None
    first_entity: str | None
    first_state: str | None
    worst_state: str | None

    @property
    def delay_s(self) -> float | None:
        return None if self.detected_at is None else self.detected_at - self.label.onset

    @property
    def lead_s(self) -> float | None:
        return None if self.detected_at is None else self.label.impact - self.detected_at


@dataclass(frozen=True)
class Evaluation:
    faults: tuple[FaultOutcome, ...]
    benign: tuple[FaultOutcome, ...]
    true_entities: frozenset[str]
    false_entities: frozenset[str]
    false_quarantines: tuple[str, ...]

    @property
    def detected(self) -> int:
        return sum(f.detected_at is not None for f in self.faults)

    @property
    def precision(self) -> float:
        n = self.detected + len(self.false_entities)
        return self.detected / n if n else 1.0

    @property
    def recall(self) -> float:
        if not self.faults:
            return 1.0
        return self.detected / len(self.faults)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def by_kind(self) -> dict[str, list[FaultOutcome]]:
        out: dict[str, list[FaultOutcome]] = {}
        for f in self.faults:
            out.setdefault(f.label.kind, []).append(f)
        return out


_SEVERITY = {
    "healthy": 0,
    "unknown": 0,
    "degraded": 1,
    "recovery_unsafe": 2,
    "harmful": 3,
    "quarantine": 4,
    "failed": 5,
}


def _outcome(label: Label, transitions: Sequence[TransitionRecord]) -> FaultOutcome:
    scope = {label.entity, *label.affected}
    if label.benign:  # a job slowing during a confounder has other causes; judge the hardware only
        scope = {e for e in scope if not e.startswith("job/")}
    hits = [t for t in transitions if t.entity in scope and t.to_state in BAD_STATES and t.ts >= label.onset]
    if not hits:
        return FaultOutcome(label, None, None, None, None)
    first = min(hits, key=lambda t: t.ts)
    own = [t for t in hits if t.entity == label.entity] or hits
    worst = max(own, key=lambda t: _SEVERITY[t.to_state])
    return FaultOutcome(label, first.ts, first.entity, first.to_state, worst.to_state)


def evaluate(labels: Iterable[Label], transitions: Sequence[TransitionRecord]) -> Evaluation:
    labels = list(labels)
    faults = [lb for lb in labels if not lb.benign]
    benign = [lb for lb in labels if lb.benign]
    fault_scope: set[str] = set()
    for lb in faults:
        fault_scope |= {lb.entity, *lb.affected}
    flagged = {t.entity for t in transitions if t.to_state in BAD_STATES}
    allowed_harm = {
        t.entity
        for t in transitions
        for lb in benign
        if lb.kind == "slow_gpu" and t.entity == lb.entity and t.to_state == "harmful"
    }
    bad_benign = {
        t.entity for t in transitions if t.to_state in BAD_STATES and t.entity not in fault_scope
    } - allowed_harm
    false_q = tuple(
        sorted(
            {
                t.entity
                for t in transitions
                for lb in benign
                if t.entity in {lb.entity, *lb.affected}
                and t.to_state in OUT_STATES
                and t.entity not in fault_scope
            }
        )
    )
    return Evaluation(
        faults=tuple(_outcome(lb, transitions) for lb in faults),
        benign=tuple(_outcome(lb, transitions) for lb in benign),
        true_entities=frozenset(flagged & fault_scope),
        false_entities=frozenset(bad_benign),
        false_quarantines=false_q,
    )


def median_or_nan(values: Iterable[float | None]) -> float:
    vals = [v for v in values if v is not None]
    return float(np.median(vals)) if vals else float("nan")


def run_scenario(
    scenario: Scenario, seed: int, config: Config | None = None, on_tick: Callable[[], None] | None = None
) -> Evaluation:
    """Drive a generated scenario through a fresh controller (no journal) and score the result."""
    _inv, _jobs, topology, fleet = build(scenario, seed)
    controller = Controller(topology, config if config is not None else load_config())
    transitions: list[TransitionRecord] = []
    now = fleet.start
    for _ in range(int(scenario.duration_s // scenario.tick_s)):
        now += scenario.tick_s
        transitions.extend(controller.tick(now, fleet.batch(now)).transitions)
        if on_tick is not None:
            on_tick()
    return evaluate(fleet.labels(), transitions)


def pooled(evaluations: Sequence[Evaluation]) -> Evaluation:
    """Several runs (seeds) as one: outcomes concatenated, each run's entities kept apart."""
    return Evaluation(
        faults=tuple(f for ev in evaluations for f in ev.faults),
        benign=tuple(b for ev in evaluations for b in ev.benign),
        true_entities=frozenset(f"run{i}:{e}" for i, ev in enumerate(evaluations) for e in ev.true_entities),
        false_entities=frozenset(
            f"run{i}:{e}" for i, ev in enumerate(evaluations) for e in ev.false_entities
        ),
        false_quarantines=tuple(
            f"run{i}:{e}" for i, ev in enumerate(evaluations) for e in ev.false_quarantines
        ),
    )
