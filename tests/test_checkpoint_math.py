"""The checkpoint-interval formulas against their papers' own figures (economics/checkpoint_math.py)."""

from __future__ import annotations

import math

import pytest

from seamguard.economics.checkpoint_math import daly_interval, first_order_waste, young_interval


@pytest.mark.parametrize(("mtbf_s", "minutes"), [(86400.0, 117.0), (21600.0, 57.0), (900.0, 9.1)])
def test_daly_gives_his_validation_cases(mtbf_s: float, minutes: float) -> None:
    """Daly (2006): a 5-minute save with an MTBF of 24 h, 6 h and 15 min."""
    assert daly_interval(300.0, mtbf_s) / 60.0 == pytest.approx(minutes, abs=0.5 if minutes > 10 else 0.05)


def test_young_is_the_first_order_term_and_daly_falls_back_to_the_mtbf() -> None:
    assert young_interval(300.0, 86400.0) == pytest.approx(7200.0)
    assert daly_interval(300.0, 100.0) == 100.0  # a save longer than 2 MTBF: save every MTBF
    assert daly_interval(300.0, math.inf) == math.inf


def test_the_waste_is_least_near_youngs_interval() -> None:
    best = young_interval(300.0, 86400.0)
    at = first_order_waste(best, 300.0, 86400.0)
    assert at < first_order_waste(best * 0.7, 300.0, 86400.0) and at < first_order_waste(
        best * 1.4, 300.0, 86400.0
    )


def test_bad_inputs_are_refused_naming_what_was_wrong() -> None:
    with pytest.raises(ValueError, match="checkpoint cost must be positive"):
        young_interval(0.0, 86400.0)
    with pytest.raises(ValueError, match="MTBF must be positive"):
        daly_interval(300.0, -1.0)
    with pytest.raises(ValueError, match="interval must be positive"):
        first_order_waste(0.0, 300.0, 86400.0)
