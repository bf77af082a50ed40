"""Checkpoint-interval formulas: Young (1974), Daly (2006) and the first-order waste.

* Young, "A first order approximation to the optimum checkpoint interval", CACM 17(9), 1974:
  ``tau = sqrt(2 delta M)`` for a save cost ``delta`` and mean time between failures ``M``.
* Daly, "A higher order estimate of the optimum checkpoint interval for restart dumps",
  FGCS 22(3), 2006, eq. 37: for ``delta < 2M``,
  ``tau = sqrt(2 delta M) [1 + 1/3 sqrt(delta / 2M) + 1/9 (delta / 2M)] - delta``, else ``tau = M``.
  His validation cases with delta = 5 min give about 117, 57 and 9.1 minutes for M = 24 h,
  6 h and 15 min (tests/test_checkpoint_math.py checks them).
* First-order waste per unit of wall time, ``W(tau) = delta / tau + (tau / 2 + R) / M``, with
  restart-and-restore cost ``R``: the save overhead plus the expected rework and restart.
"""

from __future__ import annotations

import math


def _check(delta_s: float, mtbf_s: float) -> None:
    if not (delta_s > 0 and math.isfinite(delta_s)):
        raise ValueError(f"checkpoint cost must be positive and finite, got {delta_s}")
    if not mtbf_s > 0:
        raise ValueError(f"MTBF must be positive, got {mtbf_s}")


def young_interval(delta_s: float, mtbf_s: float) -> float:
    _check(delta_s, mtbf_s)
    return math.sqrt(2.0 * delta_s * mtbf_s)


def daly_interval(delta_s: float, mtbf_s: float) -> float:
    """Compute time between saves (excluding the save itself); ``inf`` MTBF gives ``inf``."""
    _check(delta_s, mtbf_s)
    if math.isinf(mtbf_s):
        return math.inf
    if delta_s >= 2.0 * mtbf_s:
        return mtbf_s
    x = delta_s / (2.0 * mtbf_s)
    return math.sqrt(2.0 * delta_s * mtbf_s) * (1.0 + math.sqrt(x) / 3.0 + x / 9.0) - delta_s


def first_order_waste(interval_s: float, delta_s: float, mtbf_s: float, restart_s: float = 0.0) -> float:
    _check(delta_s, mtbf_s)
    if not interval_s > 0:
        raise ValueError(f"interval must be positive, got {interval_s}")
    return delta_s / interval_s + (interval_s / 2.0 + restart_s) / mtbf_s
