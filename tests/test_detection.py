"""The engine against the labelled scenario suite: the issue's detection targets, in CI.

bench/detect.py prints the full table over more seeds; this runs two seeds of the same suite
(4 of every fault kind and every benign confounder each) and asserts the targets.
"""

from __future__ import annotations

import pytest

from seamguard.config import load_config
from seamguard.control.controller import Controller
from seamguard.journal.records import TransitionRecord
from seamguard.synth.evaluate import Evaluation, evaluate
from seamguard.synth.faults import BENIGN_KINDS, FAULT_KINDS
from seamguard.synth.scenarios import SCENARIOS, build

SUDDEN = {"xid79", "hw_thermal", "pcie_downtrain"}


def run_suite(seed: int) -> tuple[Evaluation, float]:
    scenario = SCENARIOS["detect-suite"]
    _inv, _jobs, topology, fleet = build(scenario, seed)
    controller = Controller(topology, load_config())
    transitions: list[TransitionRecord] = []
    now = fleet.start
    for _ in range(int(scenario.duration_s // scenario.tick_s)):
        now += scenario.tick_s
        transitions.extend(controller.tick(now, fleet.batch(now)).transitions)
    return evaluate(fleet.labels(), transitions), scenario.tick_s


@pytest.fixture(scope="module", params=[3, 4])
def suite(request: pytest.FixtureRequest) -> tuple[Evaluation, float]:
    return run_suite(int(request.param))


def test_every_kind_is_present(suite: tuple[Evaluation, float]) -> None:
    ev, _ = suite
    assert {f.label.kind for f in ev.faults} == set(FAULT_KINDS)
    assert {b.label.kind for b in ev.benign} == set(BENIGN_KINDS)


def test_precision_and_recall_targets(suite: tuple[Evaluation, float]) -> None:
    ev, _ = suite
    assert ev.recall >= 0.95, [f.label for f in ev.faults if f.detected_at is None]
    assert ev.precision >= 0.95, sorted(ev.false_entities)


def test_no_benign_confounder_is_quarantined(suite: tuple[Evaluation, float]) -> None:
    ev, _ = suite
    assert ev.false_quarantines == ()
    slow = [b for b in ev.benign if b.label.kind == "slow_gpu"]
    assert all(b.worst_state in (None, "harmful") for b in slow)


def test_sudden_faults_within_one_tick_gradual_before_impact(suite: tuple[Evaluation, float]) -> None:
    ev, tick_s = suite
    for f in ev.faults:
        assert f.delay_s is not None
        if f.label.kind in SUDDEN:
            assert f.delay_s <= tick_s, f
        else:
            assert f.lead_s is not None and f.lead_s > 0, f
