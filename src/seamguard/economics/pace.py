"""Each rank's pace as a share of its job's median pace *at the same tick*, kept over a window.

Harm is a decision to swap hardware, so it is judged on a rank's sustained pace. Averaging raw
step times over minutes is not enough: when a whole job slows (an input stall, a shared
upstream cause), a rank whose samples are stamped a little early or late, or who missed one
scrape, averages over a different slice of the stall than its peers and looks like a
straggler. Dividing every tick's step times by that tick's job median first cancels whatever
the job as a whole did; a rank without a sample in a tick is left out of that tick.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from seamguard.columns import nanmedian_columns
from seamguard.model.world import carry
from seamguard.scoring.groupstats import group_median

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MIN_RANKS = 3  # a tick in which fewer of a job's ranks reported has no median to compare with
MIN_SAMPLES = 5  # a pace is a mean of at least this many ticks' samples...
MIN_SPAN = 0.5  # ...that reach back over at least this share of the window: a rank that just
# started (or restarted, or came back from silence) has no sustained pace yet, and a few heavy-
# tailed samples must not make it a straggler


class PaceRing:
    def __init__(self, window: int, n_gpus: int) -> None:
        self.tick_ts = np.full(window, np.nan)
        self.ratio = np.full((window, n_gpus), np.nan)
        self._slot = -1

    def carry_over(self, gpus: IntArray) -> None:
        """Per GPU (``gpus``: new -> old local index, -1 for one that joined)."""
        self.ratio = carry(self.ratio, gpus, np.nan, axis=1)

    def record(self, now: float, step_time: FloatArray, gpu_job: IntArray, n_jobs: int) -> None:
        """``step_time``: this tick's samples only (NaN for ranks that sent none this tick);
        ``gpu_job``: each rank's cohort (its job, split by node type in a mixed fleet)."""
        self._slot = (self._slot + 1) % self.tick_ts.size
        self.tick_ts[self._slot] = now
        row = np.full(step_time.size, np.nan)
        if n_jobs:
            med, counts = group_median(step_time, gpu_job, n_jobs)
            g = np.where(gpu_job >= 0, gpu_job, 0)
            ok = (gpu_job >= 0) & (counts[g] >= MIN_RANKS) & (med[g] > 0)
            with np.errstate(invalid="ignore", divide="ignore"):
                row = np.where(ok, step_time / med[g], np.nan)
        self.ratio[self._slot] = row

    def typical(self, since: float, now: float) -> FloatArray:
        """Per rank: the median of its pace ratios over the ticks at or after ``since``; NaN
        without a sustained pace (fewer than MIN_SAMPLES, or none from the first MIN_SPAN of the
        window). A median, not a mean: at a job-wide change the ranks sampled first (or last) in
        a tick stand out for a tick or two, which must not add up to a straggler."""
        recent = np.flatnonzero(self.tick_ts >= since)
        window = self.ratio[recent]
        have = np.isfinite(window)
        count = have.sum(axis=0)
        first = np.where(have, self.tick_ts[recent][:, None], np.inf).min(axis=0, initial=np.inf)
        sustained = (count >= MIN_SAMPLES) & (now - first >= MIN_SPAN * (now - since))
        return np.where(sustained, nanmedian_columns(window), np.nan)

    def forget(self, gpus: IntArray) -> None:
        self.ratio[:, gpus] = np.nan

    def sustained(self, now: float, current: FloatArray, samples: FloatArray, groups: IntArray,
                  n_groups: int, smooth_s: float) -> FloatArray:  # fmt: skip
        """Each rank's typical pace over the last ``smooth_s`` as a share of its group's median
        (record this tick's ``samples`` first); NaN once it stops reporting (``current`` NaN).

        Harm is a decision to swap hardware: it is judged on a rank's sustained pace, not on one
        tick's jitter, which would make a job's naturally slowest rank flicker in and out.
        """
        self.record(now, samples, groups, n_groups)
        return np.where(np.isfinite(current), self.typical(now - smooth_s, now), np.nan)
