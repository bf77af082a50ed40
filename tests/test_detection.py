"""The engine against the labelled scenario suite: the issue's detection targets, in CI.

bench/detect.py prints the full table over more seeds; this runs two seeds of the same suite
(4 of every fault kind and every benign confounder each) and asserts the targets.
"""

from __future__ import annotations

import pytest

from seamguard.twin.detection import Evaluation, pooled, run_scenario
from seamguard.twin.faults import FAULT_KINDS
from seamguard.twin.suite import SCENARIOS

SUITE = SCENARIOS["detect-suite"]


@pytest.fixture(scope="module", params=[3, 4])
def suite(request: pytest.FixtureRequest) -> tuple[Evaluation, float]:
    return run_scenario(SUITE, int(request.param)), SUITE.tick_s


def test_every_kind_is_present(suite: tuple[Evaluation, float]) -> None:
    ev, _ = suite
    kinds = {f.kind for f in SUITE.faults}
    assert {f.kind for f in ev.faults} == {k for k in kinds if not FAULT_KINDS[k].benign}
    assert {b.kind for b in ev.benign} == {"slow_gpu", "exporter_silent", "counter_reset"}
    assert len(ev.faults) == 4 * 7 and len(ev.benign) == 4 * 3


def test_precision_and_recall_targets(suite: tuple[Evaluation, float]) -> None:
    ev, _ = suite
    assert ev.recall >= 0.95, [f for f in ev.faults if not f.detected]
    assert ev.precision >= 0.95, sorted(ev.false_entities)


def test_no_benign_confounder_is_quarantined(suite: tuple[Evaluation, float]) -> None:
    ev, _ = suite
    assert ev.false_quarantines == ()
    slow = [b for b in ev.benign if b.kind == "slow_gpu"]
    assert all(b.worst_state in (None, "harmful") for b in slow)


def test_sudden_faults_within_one_tick_gradual_before_impact(suite: tuple[Evaluation, float]) -> None:
    ev, tick_s = suite
    for f in ev.faults:
        assert f.delay_s is not None
        if f.sudden:
            assert f.delay_s <= tick_s, f
        else:
            assert f.lead_s is not None and f.lead_s > 0, f


def test_pooled_runs_keep_their_false_positives_apart(suite: tuple[Evaluation, float]) -> None:
    ev, _ = suite
    noisy = Evaluation(ev.faults, ev.benign, ev.true_entities, frozenset({"gpu/n0001/1"}), ("gpu/n0002/2",))
    both = pooled([noisy, noisy])
    assert len(both.faults) == 2 * len(ev.faults)
    assert len(both.false_entities) == 2 and len(both.false_quarantines) == 2  # same id, different runs
    assert both.precision == pytest.approx(noisy.precision)
