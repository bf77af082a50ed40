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

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from seamguard.config import Config, load_config
from seamguard.control.controller import Controller
from seamguard.journal.records import TransitionRecord
from seamguard.twin.labelled import Truth
from seamguard.twin.results import FaultOutcome
from seamguard.twin.suite import Scenario, build

BAD_STATES = frozenset({"degraded", "recovery_unsafe", "quarantine", "harmful", "failed"})
OUT_STATES = frozenset({"quarantine", "failed"})


@dataclass(frozen=True)
class Evaluation:
    faults: tuple[FaultOutcome, ...]
    benign: tuple[FaultOutcome, ...]
    true_entities: frozenset[str]
    false_entities: frozenset[str]
    false_quarantines: tuple[str, ...]

    @property
    def detected(self) -> int:
        return sum(f.detected for f in self.faults)

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
            out.setdefault(f.kind, []).append(f)
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


def _outcome(truth: Truth, transitions: Sequence[TransitionRecord]) -> FaultOutcome:
    fault, scope, impact = truth
    if fault.benign:  # a job slowing during a confounder has other causes; judge the hardware only
        scope = frozenset(e for e in scope if not e.startswith("job/"))
    hits = [t for t in transitions if t.entity in scope and t.to_state in BAD_STATES and t.ts >= fault.onset]
    first = min(hits, key=lambda t: t.ts) if hits else None
    own = [t for t in hits if t.entity == fault.target] or hits
    worst = max(own, key=lambda t: _SEVERITY[t.to_state]) if own else None
    return FaultOutcome(
        fault.fid, fault.kind, fault.target, fault.source, fault.benign, fault.gray, fault.onset, impact,
        fault.hard_at, math.inf if first is None else first.ts, first is None and fault.gray,
        None if first is None else first.entity, None if first is None else first.to_state,
        None if worst is None else worst.to_state,
    )  # fmt: skip


def evaluate(truth: Iterable[Truth], transitions: Sequence[TransitionRecord]) -> Evaluation:
    truth = list(truth)
    faults = [tr for tr in truth if not tr[0].benign]
    benign = [tr for tr in truth if tr[0].benign]
    fault_scope: set[str] = set()
    for _f, scope, _impact in faults:
        fault_scope |= scope
    flagged = {t.entity for t in transitions if t.to_state in BAD_STATES}
    allowed_harm = {
        t.entity
        for t in transitions
        for f, _s, _i in benign
        if f.kind == "slow_gpu" and t.entity == f.target and t.to_state == "harmful"
    }
    bad_benign = {
        t.entity for t in transitions if t.to_state in BAD_STATES and t.entity not in fault_scope
    } - allowed_harm
    false_q = tuple(
        sorted(
            {
                t.entity
                for t in transitions
                for _f, scope, _i in benign
                if t.entity in scope and t.to_state in OUT_STATES and t.entity not in fault_scope
            }
        )
    )
    return Evaluation(
        faults=tuple(_outcome(tr, transitions) for tr in faults),
        benign=tuple(_outcome(tr, transitions) for tr in benign),
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
    return evaluate(fleet.truth(), transitions)


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
