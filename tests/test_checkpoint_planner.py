"""The checkpoint planner: least expected waste among the copies that can survive, re-planned
as the hazard moves."""

from __future__ import annotations

import math

import pytest
from scipy.optimize import minimize_scalar

from seamguard.economics.checkpoint_math import first_order_waste, young_interval
from seamguard.economics.checkpoint_modes import Mode, ModeCost
from seamguard.economics.checkpoint_planner import CheckpointPlan, best_interval, plan_checkpoint, waste

HOUR = 3600.0
FULL = ModeCost(Mode.FULL, "ckpt0", blocking_s=60.0, durable_s=60.0, restore_s=120.0, validity=1.0)
TIERED = ModeCost(Mode.TIERED, "ckpt0", blocking_s=8.0, durable_s=68.0, restore_s=30.0, validity=1.0)
UNSAFE = ModeCost(Mode.FULL, "ckpt1", blocking_s=20.0, durable_s=20.0, restore_s=40.0, validity=0.0)


def test_a_copy_that_always_survives_gets_youngs_interval_and_the_first_order_waste() -> None:
    m = 6 * HOUR
    assert best_interval(FULL, m) == pytest.approx(young_interval(60.0, m))
    tau = best_interval(FULL, m)
    assert waste(FULL, tau, m) == pytest.approx(first_order_waste(tau, 60.0, m, restart_s=120.0))
    numeric = minimize_scalar(lambda t: waste(FULL, t, m), bounds=(1.0, 10 * HOUR), method="bounded")
    assert tau == pytest.approx(numeric.x, rel=1e-3)  # the closed form is the minimum


def test_cheap_blocking_wins_and_a_copy_that_would_be_lost_is_never_chosen() -> None:
    plan = plan_checkpoint([FULL, TIERED, UNSAFE], 6 * HOUR, since_durable_s=0.0, timeout_s=600.0)
    assert plan.choice == TIERED and not plan.save_now
    assert plan.interval_s < best_interval(FULL, 6 * HOUR)  # cheap saves: save more often
    assert plan.expected_waste < waste(FULL, best_interval(FULL, 6 * HOUR), 6 * HOUR)
    assert "tiered to ckpt0" in plan.reason
    only_unsafe = plan_checkpoint([UNSAFE], 6 * HOUR, 0.0, 600.0)
    assert only_unsafe.choice is None and "lost to the likely failure" in only_unsafe.reason


def test_no_blocking_save_longer_than_the_collective_timeout() -> None:
    plan = plan_checkpoint([FULL, TIERED], 6 * HOUR, 0.0, timeout_s=30.0)
    assert plan.choice == TIERED
    none = plan_checkpoint([FULL], 6 * HOUR, 0.0, timeout_s=30.0)
    assert none.choice is None and "30 s collective timeout" in none.reason


def test_a_rising_hazard_shortens_the_interval_and_orders_a_save_now() -> None:
    calm = plan_checkpoint([FULL], 24 * HOUR, since_durable_s=20 * 60.0, timeout_s=600.0)
    assert not calm.save_now and calm.interval_s > 20 * 60.0
    # A part under the job turns suspect: its MTBF falls from a day to twenty minutes.
    alarmed = plan_checkpoint([FULL], 20 * 60.0, since_durable_s=20 * 60.0, timeout_s=600.0)
    assert alarmed.interval_s < calm.interval_s / 5
    assert alarmed.save_now and alarmed.reason.startswith("save now")


def test_a_copy_worth_less_is_saved_more_often_and_scored_worse() -> None:
    shaky = ModeCost(Mode.IN_MEMORY, "host", 8.0, 8.0, 30.0, validity=0.5)
    sure = ModeCost(Mode.IN_MEMORY, "peer", 8.0, 8.0, 30.0, validity=1.0)
    m = 6 * HOUR
    assert best_interval(shaky, m) < best_interval(sure, m)
    assert waste(shaky, best_interval(shaky, m), m) > waste(sure, best_interval(sure, m), m)
    assert plan_checkpoint([shaky, sure], m, 0.0, 600.0).choice == sure
    assert math.isinf(best_interval(sure, math.inf))  # nothing ever fails: never save


def test_the_waste_counts_the_lag_until_durable_and_drops_the_terms_that_never_happen() -> None:
    """TIERED at 600 s under a 1 h MTBF: 8 s blocked per save, and a failure redoes half an interval,
    the 60 s between returning and durable (its memory copy never survives: early validity 0) and 30 s of restore."""
    assert waste(TIERED, 600.0, HOUR) == pytest.approx(8.0 / 600.0 + (300.0 + 60.0 + 30.0) / HOUR, rel=1e-12)
    half = ModeCost(Mode.TIERED, "ckpt0", 8.0, 68.0, 30.0, validity=1.0, early_validity=0.5)
    assert waste(half, 600.0, HOUR) == pytest.approx(8.0 / 600.0 + (300.0 + 30.0 + 30.0) / HOUR, rel=1e-12)
    assert waste(TIERED, 600.0, math.inf) == pytest.approx(8.0 / 600.0, rel=1e-12)  # nothing fails
    assert waste(TIERED, math.inf, HOUR) == math.inf  # never saving: every failure redoes forever


def test_save_now_once_the_time_since_durable_reaches_the_interval_exactly() -> None:
    tau = plan_checkpoint([FULL], 6 * HOUR, 0.0, 600.0).interval_s
    assert plan_checkpoint([FULL], 6 * HOUR, since_durable_s=tau, timeout_s=600.0).save_now
    assert not plan_checkpoint([FULL], 6 * HOUR, since_durable_s=tau * 0.999, timeout_s=600.0).save_now


def test_a_save_blocking_exactly_the_collective_timeout_still_fits() -> None:
    assert plan_checkpoint([FULL], 6 * HOUR, 0.0, timeout_s=60.0).choice == FULL
    assert plan_checkpoint([FULL], 6 * HOUR, 0.0, timeout_s=59.9).choice is None


def test_the_mtbf_must_be_positive_and_may_be_under_a_second() -> None:
    with pytest.raises(ValueError, match=r"MTBF must be positive, got 0\.0"):
        plan_checkpoint([FULL], 0.0, 0.0, 600.0)
    assert plan_checkpoint([FULL], 0.5, 0.0, 600.0).choice == FULL


def test_no_target_is_no_plan_and_no_save() -> None:
    plan = plan_checkpoint([], 6 * HOUR, 1e9, 600.0)
    assert plan == CheckpointPlan(None, math.inf, math.inf, False, "no checkpoint target")


def test_the_reason_gives_the_interval_the_mtbf_and_the_waste_as_an_operator_reads_them() -> None:
    plan = plan_checkpoint([FULL], 6 * HOUR, 0.0, 600.0)
    assert plan.reason.endswith(
        f"every {plan.interval_s / 60:.1f} min at MTBF 360.0 min; expected waste {100 * plan.expected_waste:.1f}%"
    )
    memory = ModeCost(Mode.IN_MEMORY, "peer", blocking_s=2.0, durable_s=5.0, restore_s=10.0, validity=0.9)
    calm = plan_checkpoint([memory], math.inf, 0.0, 600.0)
    assert calm.reason.startswith("in_memory to memory:") and "at MTBF never" in calm.reason
