"""The twin's two serving routers, each choosing every tick how the offered requests split over
(prefill, decode) pairs (``twin.serving``).

* ``baseline``: what deployments run in front of vLLM, SGLang or Dynamo workers: each pool
  balanced by least outstanding requests (in a tick's steady state, shares in proportion to each
  live replica's capacity), the prefill and decode picks made independently and blind to the
  path between them, and passive outlier ejection as Envoy does it: an endpoint with
  ``consecutive_failures`` errors in a row is ejected for ``base_ejection_s`` times the number of
  times it was ejected (at most 300 s), at most ``max_ejection_pct`` of the pool (but one host
  always may go). Only failed transfers the router sees as errors (``error_share``) count; the
  rest the decode side recomputes silently.
* ``seamguard``: ``seamguard.serving.plan_routing`` fed by what the telemetry would show: each
  path's measured transfer latency, jitter and failure share (probed every tick, so an excluded
  path is seen to heal), each replica's load and inter-token latency, the offered rate, and the
  states: a replica is admissible when the policy admits its node (the engine's admissibility for
  the twin's ``seamguard`` policy), a path is degraded (``path_ok`` False) after ``ENTER_TICKS``
  ticks in a row over ``DEGRADED_FACTOR`` x the typical path's cost or ``DEGRADED_FAILURES``
  failures, and admissible again after ``EXIT_TICKS`` clean ticks (the engine's hysteresis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from seamguard.serving.routing import RoutingObjective, ServingView, path_cost_ms, plan_routing
from seamguard.twin.serving_config import Serving

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
MAX_EJECTION_S = 300.0  # Envoy's max_ejection_time default
DEGRADED_FACTOR = 2.0
DEGRADED_FAILURES = 0.02
ENTER_TICKS = 2
EXIT_TICKS = 10


@dataclass(frozen=True)
class Measured:
    """What the telemetry showed over the last tick."""

    latency_ms: FloatArray  # (P, D) mean KV-transfer time
    jitter_ms: FloatArray  # (P, D) its standard deviation
    failure_rate: FloatArray  # (P, D)
    prefill_load: FloatArray  # (P,) outstanding requests
    decode_load: FloatArray  # (D,) streams (and backlog)
    decode_itl_ms: FloatArray  # (D,)
    demand_rps: float
    decode_requests: FloatArray  # (D,) requests it took in the tick
    decode_error_rate: FloatArray  # (D,) share of them the router saw fail


class Router(Protocol):
    ejections: int

    def route(
        self, t: float, up_p: BoolArray, up_d: BoolArray, ok_p: BoolArray, ok_d: BoolArray,
        cap_p: FloatArray, cap_d: FloatArray, seen: Measured | None,
    ) -> tuple[FloatArray, float]: ...  # fmt: skip


def _share(cap: FloatArray, usable: BoolArray) -> FloatArray:
    m = np.where(usable, cap, 0.0)
    total = m.sum()
    return m / total if total > 0 else m


class BaselineRouter:
    def __init__(self, spec: Serving, n_decode: int, seed: int) -> None:
        self.cfg = spec.baseline
        self.rng = np.random.default_rng([seed, 20, 4])
        self.ejected_until = np.full(n_decode, -math.inf)
        self.times = np.zeros(n_decode, np.int64)
        self.ejections = 0

    def route(
        self, t: float, up_p: BoolArray, up_d: BoolArray, ok_p: BoolArray, ok_d: BoolArray,
        cap_p: FloatArray, cap_d: FloatArray, seen: Measured | None,
    ) -> tuple[FloatArray, float]:  # fmt: skip
        if seen is not None:
            self._eject(t, seen, up_d)
        avail = up_d & (self.ejected_until <= t)
        if not avail.any():  # Envoy's panic mode: every host again
            avail = up_d
        w = np.outer(_share(cap_p, up_p), _share(cap_d, avail))
        return w, 0.0

    def _eject(self, t: float, seen: Measured, up_d: BoolArray) -> None:
        """Runs of ``consecutive_failures`` errors among the tick's requests, as a Poisson count."""
        n, e = seen.decode_requests, np.clip(seen.decode_error_rate, 0.0, 1.0)
        runs = n * (1.0 - e) * e**self.cfg.consecutive_failures
        hit = self.rng.random(n.size) < 1.0 - np.exp(-runs)
        limit = max(1, math.floor(n.size * self.cfg.max_ejection_pct / 100.0))
        out = int((self.ejected_until > t).sum())
        for d in np.flatnonzero(hit & up_d & (self.ejected_until <= t)).tolist():
            if out >= limit:
                break
            self.times[d] += 1
            self.ejected_until[d] = t + min(self.cfg.base_ejection_s * float(self.times[d]), MAX_EJECTION_S)
            self.ejections += 1
            out += 1


class SeamguardRouter:
    def __init__(self, spec: Serving, prefill: tuple[str, ...], decode: tuple[str, ...]) -> None:
        self.prefill, self.decode = prefill, decode
        self.objective = RoutingObjective(
            ttft_slo_ms=spec.ttft_slo_ms,
            itl_slo_ms=spec.itl_slo_ms,
            prefill_ms=spec.prefill_ms,
            retry_ms=spec.kv_timeout_ms + spec.prefill_ms * spec.recompute_factor,
        )
        shape = (len(prefill), len(decode))
        self.bad = np.zeros(shape, np.int64)
        self.clean = np.zeros(shape, np.int64)
        self.path_ok = np.ones(shape, bool)
        self.ejections = 0
        self.degrade_ticks = 0

    def route(
        self, t: float, up_p: BoolArray, up_d: BoolArray, ok_p: BoolArray, ok_d: BoolArray,
        cap_p: FloatArray, cap_d: FloatArray, seen: Measured | None,
    ) -> tuple[FloatArray, float]:  # fmt: skip
        shape = self.path_ok.shape
        nan = np.full(shape, math.nan)
        view = ServingView(
            prefill=self.prefill, decode=self.decode, prefill_ok=ok_p, decode_ok=ok_d,
            prefill_load=seen.prefill_load if seen else np.zeros(shape[0]),
            decode_load=seen.decode_load if seen else np.zeros(shape[1]),
            path_latency_ms=seen.latency_ms if seen else nan, path_jitter_ms=seen.jitter_ms if seen else nan,
            path_failure_rate=seen.failure_rate if seen else nan, path_ok=self.path_ok,
            prefill_capacity=cap_p, decode_capacity=cap_d,
            decode_itl_ms=seen.decode_itl_ms if seen else None,
            demand_rps=seen.demand_rps if seen else math.nan,
        )  # fmt: skip
        if seen is not None:
            self._path_states(view, seen)
            view = ServingView(**{**view.__dict__, "path_ok": self.path_ok})
        plan = plan_routing(view, self.objective)
        self.degrade_ticks += int(plan.degrade)
        return plan.pair_weight, plan.shed

    def _path_states(self, view: ServingView, seen: Measured) -> None:
        cost = path_cost_ms(view, self.objective)
        typical = float(np.nanpercentile(cost, 25)) if np.isfinite(cost).any() else math.nan
        suspect = (cost > DEGRADED_FACTOR * typical) | (np.nan_to_num(seen.failure_rate) > DEGRADED_FAILURES)
        self.bad = np.where(suspect, self.bad + 1, 0)
        self.clean = np.where(suspect, 0, self.clean + 1)
        self.path_ok = np.where(self.path_ok, self.bad < ENTER_TICKS, self.clean >= EXIT_TICKS)


def make_router(
    kind: str, spec: Serving, prefill: tuple[str, ...], decode: tuple[str, ...], seed: int
) -> Router:
    if kind == "seamguard":
        return SeamguardRouter(spec, prefill, decode)
    if kind == "baseline":
        return BaselineRouter(spec, len(decode), seed)
    raise ValueError(f"unknown serving router {kind!r}; expected baseline or seamguard")
