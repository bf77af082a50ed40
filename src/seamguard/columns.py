"""Column statistics the hot paths need and numpy makes slow.

``np.nanmedian`` over a short axis (a window of ticks) goes through masked arrays and costs ten
times a sort; one sort puts NaN last, and each column's middle finite values are read off by
index. Written by hand for that reason only: the result is the same median.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def nanmedian_columns(x: FloatArray) -> FloatArray:
    """Per column of ``x`` (rows: samples), the median of its finite values; NaN where it has none."""
    count = np.count_nonzero(~np.isnan(x), axis=0)
    ordered = np.sort(x, axis=0)
    cols = np.arange(x.shape[1])
    lo = np.maximum(count - 1, 0) // 2
    hi = np.maximum(count // 2 - (count == 0), 0)
    median: FloatArray = 0.5 * (ordered[lo, cols] + ordered[hi, cols])
    return np.where(count > 0, median, np.nan)
