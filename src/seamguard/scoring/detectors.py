"""The stateless detectors. Each maps the store's columns for one signal to Evidence.

All of them are vectorised over every entity of the signal's kind; NaN (missing data)
always yields zero evidence, so missing data can never raise a state by itself.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from seamguard.detector_config import (
    CounterRule,
    FlagRule,
    LevelRule,
    PeerRule,
    ThrottleConfig,
    TrendRule,
    UsualRule,
)
from seamguard.model.catalog import THROTTLE_BITS, Signal
from seamguard.scoring.evidence import Evidence, FloatArray, make_evidence, ramp
from seamguard.scoring.groupstats import group_median_mad

IntArray = npt.NDArray[np.int64]
_PER_SECONDS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}
_UNIT_TEXT = {"degC": "°C", "count": "", "flag": "", "code": "", "bitmask": ""}


def unit_text(signal: Signal) -> str:
    return _UNIT_TEXT.get(signal.unit, signal.unit)


def level(signal: Signal, rule: LevelRule, value: FloatArray) -> Evidence:
    unit = unit_text(signal)
    if rule.direction == "high":
        ev = ramp(value, rule.warn, rule.crit)
        word = "above"
    else:
        ev = ramp(-value, -rule.warn, -rule.crit)
        word = "below"

    def fmt(m: float, _x: float) -> str:
        # "at 86.84 °C, above its soft limit of 83 °C": the reading and the limit, never read as a difference
        return f"{signal.name} at {m:.4g} {unit}, {word} its soft limit of {rule.warn:g} {unit}".replace(
            "  ", " "
        ).replace(" ,", ",")

    return make_evidence(
        "level", signal.name, signal.entity, rule.weight, ev, value, fmt, recovery=rule.recovery
    )


def own_usual(signal: Signal, rule: UsualRule, value: FloatArray, usual: FloatArray) -> Evidence:
    """``usual``: per entity, its usual level (NaN until learnt: no evidence)."""
    unit = unit_text(signal)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = value / usual
    off = 1.0 - ratio if rule.direction == "low" else ratio - 1.0
    word = "below" if rule.direction == "low" else "above"

    def fmt(m: float, u: float) -> str:
        share = abs(1.0 - m / u) * 100 if u else float("nan")
        return f"{signal.name} at {m:.4g} {unit}, {share:.0f}% {word} its own usual {u:.4g} {unit}".replace(
            "  ", " "
        )

    return make_evidence(
        "usual", signal.name, signal.entity, rule.weight, ramp(off, rule.warn, rule.crit), value, fmt,
        extra=usual, recovery=rule.recovery,
    )  # fmt: skip


def weighted_slope(
    tick_ts: FloatArray,
    values: FloatArray,
    now: float,
    *,
    window_s: float,
    halflife_s: float,
    min_points: int,
    log: bool,
) -> tuple[FloatArray, FloatArray]:
    """EWMA-weighted least-squares slope per minute of each column of ``values`` (W, n), and
    its standard error.

    Recent ticks weigh more (half-life ``halflife_s``), ticks older than ``window_s`` not at
    all. The error is the sandwich estimate for weighted least squares with the residual
    variance scaled to the effective number of points, so a slope fitted through a few noisy
    points, or over a fraction of the window, carries a wide error. Written by hand because it
    must run over all columns at once with per-column NaN masks, which no library's rolling
    regression does without a Python loop; every sum is one matrix product over the ticks.
    """
    age = now - tick_ts
    in_window = np.isfinite(age) & (age >= 0) & (age <= window_s)
    w = np.where(in_window, np.power(0.5, np.where(in_window, age, 0.0) / halflife_s), 0.0)
    t = np.where(in_window, -age / 60.0, 0.0)
    y = values
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.log(np.where(values > 0, values, np.nan))
    mask = np.isfinite(y) & in_window[:, None]
    m = mask.astype(np.float64)
    y0 = np.where(mask, y, 0.0)
    w2 = w * w
    s0, s1, s2, q0, q1, q2, points = np.stack((w, w * t, w * t * t, w2, w2 * t, w2 * t * t, in_window)) @ m
    sy, sty = np.stack((w, w * t)) @ y0
    syy = w @ (y0 * y0)
    denom = s0 * s2 - s1 * s1
    ok = (points >= min_points) & (denom > 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (s0 * sty - s1 * sy) / denom
        tbar = s1 / s0
        stt = denom / s0  # sum of w (t - tbar)^2
        rss = np.maximum(syy - sy * sy / s0 - slope * slope * stt, 0.0)
        n_eff = s0 * s0 / q0
        sigma2 = rss / s0 * n_eff / (n_eff - 2.0)
        spread = np.maximum(q2 - 2.0 * tbar * q1 + tbar * tbar * q0, 0.0)  # sum of w^2 (t - tbar)^2
        se = np.sqrt(sigma2 * spread) / stt
    ok &= n_eff > 2.0
    return np.where(ok, slope, np.nan), np.where(ok, se, np.nan)


def trend(
    signal: Signal,
    rule: TrendRule,
    slope: FloatArray,
    se: FloatArray,
    confidence_z: float,
    beyond: npt.NDArray[np.bool_] | None = None,
) -> Evidence:
    """Evidence ramps on the slope less ``confidence_z`` standard errors: a trend is judged
    against its own noise, so sensor noise fitted over a short span earns nothing.

    ``beyond``: per entity, whether the signal stayed past ``rule.beyond`` over the whole trend
    window; a rule with ``beyond`` set counts only those (a warm-up from idle is not a trend)."""
    signed = slope if rule.direction == "rising" else -slope
    ungated = ramp(signed - confidence_z * se, rule.warn, rule.crit)
    ev = ungated if beyond is None else np.where(beyond, ungated, 0.0)
    unit = unit_text(signal)

    def fmt(m: float, err: float) -> str:
        if rule.log:
            return f"{signal.name} trending {m * 100:+.1f}%/min (±{err * 100:.1f})"
        return f"{signal.name} trending {m:+.2f} {unit}/min (±{err:.2f})".replace(" /", "/")

    return make_evidence(
        "trend", signal.name, signal.entity, rule.weight, ev, slope, fmt, extra=se, recovery=rule.recovery,
        support=None if beyond is None else ungated,
    )  # fmt: skip


_COHORT_TEXT = {
    "job": "its job's peers",
    "work": "peers under the same load",
    "fleet": "its fleet peers",
    "cdu": "peers on its CDU",
    "leaf": "peers on its leaf",
}


def peer(
    signal: Signal,
    rule: PeerRule,
    value: FloatArray,
    groups: IntArray,
    n_groups: int,
    *,
    spread_floor: FloatArray | None = None,
) -> Evidence:
    """Robust deviation from the cohort median, gated by a robust z-score (MAD based).

    ``spread_floor``: per entity, the least spread its value can have (counted rates: their
    Poisson noise; a handful of retransmits a minute is counting noise, whatever a small
    cohort's MAD says)."""
    med, mad, counts = group_median_mad(value, groups, max(n_groups, 1))
    g = np.where(groups >= 0, groups, 0)
    in_cohort = (groups >= 0) & (counts[g] >= rule.min_cohort)
    m = med[g]
    sign = 1.0 if rule.direction == "high" else -1.0
    diff = sign * (value - m)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.maximum(1.4826 * mad[g], 1e-6 + 1e-3 * np.abs(m))
        if spread_floor is not None:
            scale = np.fmax(scale, spread_floor)
        z = diff / scale
        dev = diff / np.abs(m) if rule.measure == "relative" else diff
    ok = in_cohort & np.isfinite(dev) & (z >= rule.z_min)
    ev = np.where(ok, ramp(dev, rule.warn, rule.crit), 0.0)
    word = "above" if rule.direction == "high" else "below"
    cohort = _COHORT_TEXT[rule.cohort]
    unit = unit_text(signal)

    def fmt(d: float, zz: float) -> str:
        if rule.measure == "relative":
            return f"{signal.name} {abs(d) * 100:.0f}% {word} {cohort} (z={zz:.1f})"
        return f"{signal.name} {abs(d):.1f} {unit} {word} {cohort} (z={zz:.1f})".replace("  ", " ")

    return make_evidence(
        "peer",
        signal.name,
        signal.entity,
        rule.weight,
        ev,
        np.where(in_cohort, dev, np.nan),
        fmt,
        extra=np.nan_to_num(z),
        recovery=rule.recovery,
    )


def counter_rate(signal: Signal, rule: CounterRule, rate_per_s: FloatArray) -> Evidence:
    per = _PER_SECONDS[rule.per]
    rate = rate_per_s * per
    ev = ramp(rate, rule.warn, rule.crit)

    def fmt(m: float, _x: float) -> str:
        return f"{signal.name.removesuffix('_total')} at {m:.3g}/{rule.per[0] if rule.per != 'hour' else 'h'}"

    return make_evidence(
        "counter", signal.name, signal.entity, rule.weight, ev, rate, fmt, recovery=rule.recovery
    )


def flag(signal: Signal, rule: FlagRule, value: FloatArray) -> Evidence:
    ev = np.where(value >= 0.5, 1.0, 0.0)

    def fmt(_m: float, _x: float) -> str:
        return f"{signal.name} set"

    return make_evidence(
        "flag", signal.name, signal.entity, rule.evidence, ev, value, fmt, recovery=rule.recovery
    )


def throttle(signal: Signal, rule: ThrottleConfig, mask_value: FloatArray) -> Evidence:
    """Only hardware-imposed slowdowns count; the other NVML reasons are normal operation."""
    finite = np.isfinite(mask_value)
    bits = np.where(finite, mask_value, 0).astype(np.int64)
    log_keep = np.zeros(bits.size)
    evidence_bits = 0
    by_name = {name: bit for bit, name in THROTTLE_BITS.items()}
    for name, weight in rule.bits.items():
        bit = by_name[name]
        evidence_bits |= bit
        set_ = (bits & bit) != 0
        log_keep += np.where(set_, np.log1p(-min(weight, 1 - 1e-9)), 0.0)
    ev = -np.expm1(log_keep)
    relevant = (bits & evidence_bits).astype(np.float64)

    def fmt(m: float, _x: float) -> str:
        names = [nm for bit, nm in THROTTLE_BITS.items() if int(m) & bit]
        return f"{', '.join(names)} throttle bit{'s' if len(names) > 1 else ''} set"

    # weight 1: the per-bit weights are already inside the evidence
    return make_evidence("throttle", signal.name, signal.entity, 1.0, ev, relevant, fmt)
