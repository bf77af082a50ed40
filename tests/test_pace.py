"""Each rank's pace against its job at every tick (economics/pace.py)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from seamguard.economics.pace import MIN_SAMPLES, PaceRing


def filled(rows: np.ndarray, tick_s: float = 10.0) -> PaceRing:
    """A ring whose ticks hold ``rows`` (ticks x ranks) of ratios directly."""
    ring = PaceRing(rows.shape[0], rows.shape[1])
    ring.tick_ts[:] = np.arange(rows.shape[0]) * tick_s
    ring.ratio[:] = rows
    return ring


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, (12, 6), elements=st.one_of(st.just(np.nan), st.floats(0.5, 2.0))))
def test_typical_is_the_median_of_the_finite_ratios(rows: np.ndarray) -> None:
    ring = filled(rows)
    got = ring.typical(since=0.0, now=110.0)
    for k in range(rows.shape[1]):
        col = rows[:, k][np.isfinite(rows[:, k])]
        if col.size >= MIN_SAMPLES and np.isfinite(rows[:6, k]).any():
            assert got[k] == np.median(col)
        else:
            assert np.isnan(got[k])


def test_two_transition_ticks_do_not_make_a_slightly_slow_rank_a_straggler() -> None:
    """A rank 2.5% slow (within the same-SKU spread) that was sampled first at a job-wide stall's
    start for two ticks: its mean pace would be 4.6% over the job (past the 3% harm floor), its
    typical pace stays 2.5%."""
    rows = np.full((20, 2), 1.0)
    rows[:, 0] = 1.025
    rows[[17, 18], 0] = 1.25
    pace = filled(rows).typical(since=0.0, now=190.0)
    assert np.nanmean(rows[:, 0]) - 1 > 0.03
    assert pace[0] == 1.025 and pace[1] == 1.0


def test_a_rank_that_just_started_has_no_pace_yet() -> None:
    rows = np.full((20, 1), np.nan)
    rows[-4:, 0] = 1.2  # four samples, all from the last forty seconds
    assert np.isnan(filled(rows).typical(since=0.0, now=190.0)[0])
    rows[-10:, 0] = 1.2  # enough, but only from the newer half of the window
    assert np.isnan(filled(rows).typical(since=0.0, now=190.0)[0])
    rows[:, 0] = 1.2
    assert filled(rows).typical(since=0.0, now=190.0)[0] == 1.2


def test_record_divides_by_the_job_median_of_that_tick() -> None:
    ring = PaceRing(4, 5)
    ring.record(10.0, np.array([2.0, 2.2, 2.6, np.nan, 5.0]), np.array([0, 0, 0, 0, 1]), 2)
    row = ring.ratio[ring._slot]
    assert np.allclose(row[:3], [2.0 / 2.2, 1.0, 2.6 / 2.2]) and np.isnan(row[3])
    assert np.isnan(row[4])  # a job with fewer than three ranks reporting has no median
