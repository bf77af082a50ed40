"""The routing controller: from replica and path states, loads and the latency objective, the share
of requests each prefill → decode pairing should get.

Disaggregated serving runs prefill and decode on separate pools and moves each request's KV cache
between them. The path between two healthy replicas can fail gray: transfer latency and jitter
rise, some transfers fail (a failed transfer makes the decode side recompute the prefill). The
routers people run pick endpoints by queue depth and KV use; this one also weighs the measured
health of the transfer path:

1. **Admissible pairs.** A pair gets weight only if both replicas are admissible (their state allows
   serving) and its path's state admits serving (``path_ok``).
2. **Paths that hold the objective.** A path's cost is what it adds to a request's time to first
   token: ``latency + jitter_weight x jitter + failure_rate x retry_ms`` (a failure costs a retry:
   by default the prefill recomputed on the decode side). A path is *good* when the nominal
   prefill plus that cost fits in the TTFT objective with ``queue_share`` of it left for queueing,
   and its failure rate is at most ``max_failure_rate``. Unknown measurements (NaN) are taken as
   the pool's typical (median) path.
3. **Marginals from load.** Each replica's target share is its capacity over
   ``1 + load / mean load`` (equal loads: shares by capacity; a busier replica gets less), and a
   decode replica whose measured inter-token latency is over the objective gets less again.
4. **Pairing.** The pair shares are the entropic transport between those marginals over the good
   pairs (Sinkhorn's iterative scaling of ``exp(-cost / (temperature x TTFT))``): a prefill
   replica is re-paired away from its degraded path onto decode replicas it reaches well. Prefill
   shares are met exactly; decode shares as far as ``balance`` (below 1, a cheaper path may draw
   some share from the decode side's load balance).
5. **Shed or degrade.** When the replicas that remain cannot carry the offered load
   (``demand_rps`` over ``headroom`` x their capacity), the excess share is shed; when no good
   pair is left, requests go over the least bad admissible pairs and ``degrade`` asks for smaller
   batches and shorter context (a smaller KV cache to move); ``degrade`` is also set while shedding
   and when the best good path leaves less than ``degrade_margin`` of the objective.

Everything is vectorised over (P, D) arrays; no per-request state. ``docs/serving.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
SINKHORN_ITERS = 60
MAX_REASONS = 8


@dataclass(frozen=True)
class ServingView:
    """What the controller sees at one instant."""

    prefill: tuple[str, ...]  # prefill replica ids
    decode: tuple[str, ...]  # decode replica ids
    prefill_ok: BoolArray  # (P,) admissible for serving (its state allows it)
    decode_ok: BoolArray  # (D,)
    prefill_load: FloatArray  # (P,) outstanding requests (or queue depth)
    decode_load: FloatArray  # (D,)
    path_latency_ms: FloatArray  # (P, D) KV-transfer latency now (mean; NaN unknown)
    path_jitter_ms: FloatArray  # (P, D) its standard deviation (NaN unknown)
    path_failure_rate: FloatArray  # (P, D) share of transfers failing (NaN unknown)
    path_ok: BoolArray  # (P, D) the path's state admits serving (degraded paths: False)
    prefill_capacity: FloatArray | None = None  # (P,) requests/s each holds within the objective
    decode_capacity: FloatArray | None = None  # (D,) (None: equal replicas, capacity unknown)
    decode_itl_ms: FloatArray | None = None  # (D,) measured inter-token latency (NaN unknown)
    demand_rps: float = math.nan  # offered requests/s (NaN: unknown, no shedding for capacity)

    def __post_init__(self) -> None:
        p, d = len(self.prefill), len(self.decode)
        shapes = {
            "prefill_ok": (self.prefill_ok, (p,)),
            "decode_ok": (self.decode_ok, (d,)),
            "prefill_load": (self.prefill_load, (p,)),
            "decode_load": (self.decode_load, (d,)),
            "path_latency_ms": (self.path_latency_ms, (p, d)),
            "path_jitter_ms": (self.path_jitter_ms, (p, d)),
            "path_failure_rate": (self.path_failure_rate, (p, d)),
            "path_ok": (self.path_ok, (p, d)),
            "prefill_capacity": (self.prefill_capacity, (p,)),
            "decode_capacity": (self.decode_capacity, (d,)),
            "decode_itl_ms": (self.decode_itl_ms, (d,)),
        }
        for name, (arr, shape) in shapes.items():
            if arr is not None and np.shape(arr) != shape:
                raise ValueError(f"ServingView.{name}: shape {np.shape(arr)}, expected {shape}")


@dataclass(frozen=True)
class RoutingObjective:
    """The latency objective and how the controller trades against it."""

    ttft_slo_ms: float  # time to first token a request must meet to count
    itl_slo_ms: float  # inter-token latency a request must meet to count
    prefill_ms: float = 0.0  # a request's nominal prefill compute
    queue_share: float = 0.25  # of the TTFT objective, what a path leaves for queueing
    jitter_weight: float = 2.0  # latency + this x jitter: a tail, not a mean
    retry_ms: float = math.nan  # what a failed transfer costs (NaN: the prefill, recomputed)
    max_failure_rate: float = 0.2  # a path failing more transfers than this is not good
    headroom: float = 0.9  # shed once the offered load passes this share of capacity
    degrade_margin: float = 0.1  # degrade when the best good path leaves less of the objective
    temperature: float = 0.1  # pair preference halves every ~0.07 x TTFT of extra path cost
    balance: float = 0.9  # 1: decode shares from load alone; lower lets path cost move some of them

    def __post_init__(self) -> None:
        if not (self.ttft_slo_ms > 0 and self.itl_slo_ms > 0):
            raise ValueError("RoutingObjective: ttft_slo_ms and itl_slo_ms must be > 0")
        if not (0.0 <= self.queue_share < 1.0 and 0.0 < self.headroom <= 1.0 and self.temperature > 0):
            raise ValueError("RoutingObjective: queue_share in [0, 1), headroom in (0, 1], temperature > 0")
        if not 0.0 < self.balance <= 1.0:
            raise ValueError("RoutingObjective: balance in (0, 1]")

    @property
    def retry_cost_ms(self) -> float:
        return self.prefill_ms if math.isnan(self.retry_ms) else self.retry_ms


@dataclass(frozen=True)
class RoutingPlan:
    """The controller's answer."""

    pair_weight: FloatArray  # (P, D) share of served requests sent p -> d; sums to 1 (0 if all shed)
    prefill_weight: FloatArray  # (P,) its row sums
    decode_weight: FloatArray  # (D,) its column sums
    shed: float  # share of new requests to refuse or degrade (0 while capacity suffices)
    degrade: bool  # ask for smaller batches / shorter context before the objective is lost
    reasons: tuple[str, ...]  # why, in words an operator can check
    path_cost_ms: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))  # (P, D) as weighed
    good: BoolArray = field(default_factory=lambda: np.zeros((0, 0), bool))  # (P, D) good pairs
    prefill: tuple[str, ...] = ()  # the view's replica ids, for ``haproxy_weights`` and hints
    decode: tuple[str, ...] = ()


def path_cost_ms(view: ServingView, objective: RoutingObjective) -> FloatArray:
    """What each path adds to a request's TTFT, unknowns taken as the median known path."""
    lat = _fill(view.path_latency_ms)
    jit = _fill(view.path_jitter_ms)
    fail = np.clip(_fill(view.path_failure_rate), 0.0, 1.0)
    return lat + objective.jitter_weight * jit + fail * objective.retry_cost_ms


def _fill(a: FloatArray) -> FloatArray:
    a = np.asarray(a, dtype=np.float64)
    known = np.isfinite(a)
    if known.all():
        return a
    typical = float(np.median(a[known])) if known.any() else 0.0
    return np.where(known, a, typical)


def _marginal(cap: FloatArray, load: FloatArray, usable: BoolArray) -> FloatArray:
    load = np.maximum(np.nan_to_num(np.asarray(load, dtype=np.float64), nan=0.0), 0.0)
    mean = float(load[usable].mean()) if usable.any() else 0.0
    tilt = 1.0 / (1.0 + load / mean) if mean > 0 else np.ones_like(load)
    m = np.where(usable, cap * tilt, 0.0)
    total = m.sum()
    return m / total if total > 0 else m


def _sinkhorn(kernel: FloatArray, a: FloatArray, b: FloatArray, balance: float) -> FloatArray:
    """Scale ``kernel`` (zero off the support) to row sums ``a`` exactly and column sums ``b`` as
    far as ``balance`` (1: exactly; below 1, an unbalanced transport in which the path costs may
    move some of a column's share to cheaper paths); the result sums to 1."""
    u, v = np.ones_like(a), np.ones_like(b)
    for _ in range(SINKHORN_ITERS):
        kv = kernel @ v
        u = np.divide(a, kv, out=np.zeros_like(a), where=kv > 0)
        ktu = kernel.T @ u
        v = np.divide(b, ktu, out=np.zeros_like(b), where=ktu > 0) ** balance
    kv = kernel @ v
    u = np.divide(a, kv, out=np.zeros_like(a), where=kv > 0)
    w = u[:, None] * kernel * v[None, :]
    total = w.sum()
    return w / total if total > 0 else w


def _capacity(cap: FloatArray | None, n: int) -> tuple[FloatArray, bool]:
    if cap is None:
        return np.ones(n), False
    c = np.nan_to_num(np.asarray(cap, dtype=np.float64), nan=0.0, posinf=0.0)
    return np.maximum(c, 0.0), True


def _name_pairs(view: ServingView, mask: BoolArray) -> str:
    ps, ds = np.nonzero(mask)
    names = [f"{view.prefill[p]}->{view.decode[d]}" for p, d in zip(ps.tolist(), ds.tolist(), strict=True)]
    more = len(names) - 4
    return ", ".join(names[:4]) + (f" and {more} more" if more > 0 else "")


def plan_routing(view: ServingView, objective: RoutingObjective) -> RoutingPlan:
    """The pair shares, shed share and degrade flag that keep the most requests within the
    objective (the module's docstring gives the rules)."""
    n_p, n_d = len(view.prefill), len(view.decode)
    reasons: list[str] = []
    p_ok = np.asarray(view.prefill_ok, bool)
    d_ok = np.asarray(view.decode_ok, bool)
    both = p_ok[:, None] & d_ok[None, :]
    cost = path_cost_ms(view, objective)
    fail = np.nan_to_num(np.asarray(view.path_failure_rate, dtype=np.float64), nan=0.0)
    budget = objective.ttft_slo_ms * (1.0 - objective.queue_share) - objective.prefill_ms
    fits = (cost <= budget) & (fail <= objective.max_failure_rate)
    path_ok = np.asarray(view.path_ok, bool)
    good = both & path_ok & fits
    if (~p_ok).any():
        reasons.append(f"prefill not admissible: {', '.join(np.array(view.prefill)[~p_ok].tolist())}")
    if (~d_ok).any():
        reasons.append(f"decode not admissible: {', '.join(np.array(view.decode)[~d_ok].tolist())}")
    if (both & ~path_ok).any():
        reasons.append(f"path state degraded: {_name_pairs(view, both & ~path_ok)} (no weight)")
    slow = both & path_ok & ~fits
    if slow.any():
        reasons.append(
            f"path over its {budget:.1f} ms share of the {objective.ttft_slo_ms:.0f} ms TTFT objective "
            f"(latency + {objective.jitter_weight:g} x jitter + failures x {objective.retry_cost_ms:.0f} ms "
            f"retry, or over {objective.max_failure_rate:.0%} failures): {_name_pairs(view, slow)} (no weight)"
        )
    degrade = False
    support = good
    if not good.any():
        if not both.any():
            reasons.append("no admissible prefill and decode replica: every request shed")
            zero = np.zeros((n_p, n_d))
            return RoutingPlan(zero, np.zeros(n_p), np.zeros(n_d), 1.0, True, tuple(reasons[:MAX_REASONS]),
                               cost, good, view.prefill, view.decode)  # fmt: skip
        support = both
        degrade = True
        reasons.append("no path holds the objective: the least bad admissible pairs serve, degraded")
    p_cap, p_known = _capacity(view.prefill_capacity, n_p)
    d_cap, d_known = _capacity(view.decode_capacity, n_d)
    rows, cols = support.any(axis=1), support.any(axis=0)
    a = _marginal(p_cap, view.prefill_load, rows)
    d_fit = np.ones(n_d)
    if view.decode_itl_ms is not None:
        itl = np.asarray(view.decode_itl_ms, dtype=np.float64)
        over = np.isfinite(itl) & (itl > objective.itl_slo_ms)
        d_fit = np.where(over, (objective.itl_slo_ms / np.where(over, itl, 1.0)) ** 2, 1.0)
        if (over & cols).any():
            reasons.append(
                f"decode over the ITL objective: {', '.join(np.array(view.decode)[over & cols].tolist())}"
            )
    b = _marginal(d_cap * d_fit, view.decode_load, cols)
    finite_cost = np.where(support, cost, np.inf)
    base = float(finite_cost.min())
    kernel = np.where(
        support,
        np.exp(-(np.minimum(finite_cost, 1e300) - base) / (objective.temperature * objective.ttft_slo_ms)),
        0.0,
    )
    w = _sinkhorn(kernel, a, b, objective.balance)
    shed = 0.0
    demand = view.demand_rps
    if math.isfinite(demand) and demand > 0 and (p_known or d_known):
        held = objective.headroom * min(
            float(p_cap[w.sum(axis=1) > 0].sum()) if p_known else math.inf,
            float(d_cap[w.sum(axis=0) > 0].sum()) if d_known else math.inf,
        )
        shed = max(0.0, 1.0 - held / demand)
        if shed > 0:
            degrade = True
            reasons.append(
                f"offered {demand:.1f} req/s over {held:.1f} req/s the usable replicas hold: shed {shed:.0%}"
            )
    if not degrade and good.any():
        slack = (budget - float(cost[good].min())) / objective.ttft_slo_ms
        if slack < objective.degrade_margin:
            degrade = True
            reasons.append(f"best path leaves {slack:.0%} of the TTFT objective: degrade")
    return RoutingPlan(
        w, w.sum(axis=1), w.sum(axis=0), shed, degrade, tuple(reasons[:MAX_REASONS]), cost, good,
        view.prefill, view.decode,
    )  # fmt: skip


def haproxy_weights(plan: RoutingPlan, scale: int = 256) -> dict[str, int]:
    """HAProxy server weights (0..``scale``, its runtime API's range at 256) per replica from the
    plan's marginals, each pool's most-weighted replica at ``scale`` and the others in proportion;
    a replica with any share gets at least 1, one with none 0. Keys are the view's replica ids
    (``prefill/<i>``, ``decode/<i>`` for a plan made without them)."""
    out: dict[str, int] = {}
    for pool, marg, ids in (
        ("prefill", plan.prefill_weight, plan.prefill),
        ("decode", plan.decode_weight, plan.decode),
    ):
        top = float(marg.max()) if marg.size else 0.0
        for i, m in enumerate(marg.tolist()):
            key = ids[i] if len(ids) == marg.size else f"{pool}/{i}"
            if key in out:
                raise ValueError(f"haproxy_weights: replica id {key!r} is in both pools")
            out[key] = 0 if top <= 0 or m <= 0 else max(1, round(scale * m / top))
    return out


def pair_hints(plan: RoutingPlan, top: int = 3) -> dict[str, list[tuple[str, float]]]:
    """For a Gateway API inference-extension endpoint picker: per prefill replica, the decode
    replicas to pair it with, best first, with the share of that prefill's requests each gets."""
    out: dict[str, list[tuple[str, float]]] = {}
    for p, row in enumerate(plan.pair_weight):
        total = float(row.sum())
        if total <= 0:
            continue
        order = np.argsort(-row, kind="stable")[:top]
        out[plan.prefill[p]] = [(plan.decode[d], float(row[d]) / total) for d in order.tolist() if row[d] > 0]
    return out
