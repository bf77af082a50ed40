"""The hand-written column median equals numpy's, NaNs, ties and empty columns included."""

from __future__ import annotations

import numpy as np

from seamguard.columns import nanmedian_columns


def test_equals_numpy_nanmedian_on_random_windows_with_gaps() -> None:
    rng = np.random.default_rng(7)
    for rows in (1, 2, 3, 4, 5, 10, 11):
        x = rng.normal(size=(rows, 400)).round(1)  # rounding makes ties
        x[rng.random(x.shape) < 0.3] = np.nan
        x[:, :3] = np.nan  # columns with nothing
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                expected = np.nanmedian(x, axis=0)
        np.testing.assert_array_equal(nanmedian_columns(x), expected)
