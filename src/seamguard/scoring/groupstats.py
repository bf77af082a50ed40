"""Vectorised per-group median and MAD (no pandas groupby, no Python loop over groups).

Written by hand because numpy/scipy have no grouped median: one lexsort by (group, value)
puts each group's values in order, and the middle elements are read off by offset.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def group_median(values: FloatArray, groups: IntArray, n_groups: int) -> tuple[FloatArray, IntArray]:
    """Median of the finite values of each group (NaN for empty groups) and the group sizes.

    ``groups`` < 0 marks values that belong to no group.
    """
    valid = np.isfinite(values) & (groups >= 0)
    v = values[valid]
    g = groups[valid]
    counts = np.bincount(g, minlength=n_groups).astype(np.int64)
    med = np.full(n_groups, np.nan)
    if v.size == 0:
        return med, counts
    order = np.lexsort((v, g))
    v = v[order]
    starts = np.cumsum(counts) - counts
    has = counts > 0
    lo = starts[has] + (counts[has] - 1) // 2
    hi = starts[has] + counts[has] // 2
    med[has] = 0.5 * (v[lo] + v[hi])
    return med, counts


def group_median_mad(
    values: FloatArray, groups: IntArray, n_groups: int
) -> tuple[FloatArray, FloatArray, IntArray]:
    """Per-group median, MAD (unscaled) and count."""
    med, counts = group_median(values, groups, n_groups)
    safe_groups = np.where(groups >= 0, groups, 0)
    dev = np.where(groups >= 0, np.abs(values - med[safe_groups]), np.nan)
    mad, _ = group_median(dev, groups, n_groups)
    return med, mad, counts
