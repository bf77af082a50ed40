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


def test_daly_term_by_term_where_the_arithmetic_is_exact() -> None:
    """delta = 1, M = 2: x = delta/2M = 1/4, sqrt(2 delta M) = 2, so eq. 37 is 2 (1 + 1/6 + 1/36) - 1.

    Daly's validation cases agree to a few seconds whichever 1/9 or 1/3 is slipped; this point does not.
    """
    assert daly_interval(1.0, 2.0) == pytest.approx(2.0 * (1.0 + 1.0 / 6.0 + 1.0 / 36.0) - 1.0, rel=1e-12)
    # x = 1/16 (sqrt 1/4): 4 (1 + 1/12 + 1/144) - 1, with delta = 1, M = 8.
    assert daly_interval(1.0, 8.0) == pytest.approx(4.0 * (1.0 + 1.0 / 12.0 + 1.0 / 144.0) - 1.0, rel=1e-12)


@pytest.mark.parametrize(("delta_s", "mtbf_s"), [(2.0, 1.0), (5.0, 2.0), (600.0, 299.0)])
def test_daly_saves_every_mtbf_from_a_save_of_two_mtbfs_up(delta_s: float, mtbf_s: float) -> None:
    assert daly_interval(delta_s, mtbf_s) == mtbf_s
    # Just under the boundary the formula applies and gives less than one MTBF.
    assert daly_interval(2.0 * mtbf_s * 0.99, mtbf_s) < mtbf_s


def test_sub_second_saves_and_mtbfs_are_valid_and_zero_is_not() -> None:
    assert young_interval(0.5, 0.5) == pytest.approx(math.sqrt(0.5))
    assert 0.0 < daly_interval(0.5, 0.5) < 0.5  # 0.5 < 2M: the formula, below one MTBF
    assert first_order_waste(0.5, 0.25, 1.0) == pytest.approx(0.25 / 0.5 + 0.25)
    with pytest.raises(ValueError, match=r"MTBF must be positive, got 0\.0"):
        young_interval(300.0, 0.0)


def test_the_waste_has_no_restart_term_unless_one_is_given() -> None:
    assert first_order_waste(600.0, 60.0, 3600.0) == pytest.approx(60.0 / 600.0 + 300.0 / 3600.0, rel=1e-12)
    assert first_order_waste(600.0, 60.0, 3600.0, restart_s=360.0) == pytest.approx(
        60.0 / 600.0 + 660.0 / 3600.0, rel=1e-12
    )
