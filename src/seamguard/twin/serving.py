"""Disaggregated serving in the twin: prefill and decode pools, the KV cache moved between them over
the fabric, and a router choosing each request's pair (``docs/twin.md``, "Disaggregated serving").

A scenario's ``serving:`` section (``twin.serving_config``) names its prefill and decode jobs; each
of their replicas (a job's slot, on the node the scheduler gave it) is one endpoint. Requests are
rates, not objects: every tick the router splits the offered rate over (prefill, decode) pairs,
and each pair's time to first token is drawn from a fixed set of ``SAMPLES`` quantile points (the
same in every run of a seed), so the whole tick is a few (P, D, SAMPLES) array operations.

* **Prefill** is a multi-server queue per replica (``prefill_parallel`` requests at once, each
  ``prefill_ms`` over the node's pace): the wait is Sakasegawa's M/G/c approximation (zero with
  probability 1 - P(wait), else exponential), plus a fluid backlog while the replica is over
  capacity.
* **KV transfer** (``kv_mb`` per request) takes ``kv_mb x 8 / path_gbps`` ms plus ``hop_ms`` per
  switch, slower across the spine (``cross_leaf_share``), times the fabric's latency factor of
  the slower end's uplink (``plant.link_latency``: a gray link, a congested leaf). A
  ``kv_path_degraded`` leaf slows, jitters and fails transfers that cross its spine uplinks (the
  scenario's ``degradation``); transfers within a leaf do not cross them.
* **A failed transfer** is noticed after ``kv_timeout_ms`` and the decode replica recomputes the
  prefill (``recompute_factor`` slower than a prefill replica), which also steals decode time.
* **Decode** holds each stream for ``output_tokens`` tokens; inter-token latency grows with the
  batch (``itl_gain`` x streams / ``decode_slots``), solved in closed form, with a fluid backlog
  past saturation. A request is *good* when its TTFT and its replica's ITL meet the objective.

Goodput is good requests over offered ones (shed ones count as lost); P95 TTFT is over the served
requests, from a histogram summed over the run. The routers live in ``twin.serving_routers``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from seamguard.twin.effects import Effects
from seamguard.twin.jobs import InferenceJob, Phase, TrainingJob
from seamguard.twin.serving_config import Serving
from seamguard.twin.serving_routers import Measured, Router, make_router
from seamguard.twin.world import World

if TYPE_CHECKING:
    from seamguard.twin.sim import Twin

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
SAMPLES = 128  # quantile points per pair and tick
TTFT_BINS = np.geomspace(1.0, 1e6, 601)  # ms, for the run's TTFT distribution
SATURATION = 0.97  # past this utilisation a queue's excess is a fluid backlog
SERVICE_CV2 = 0.25  # squared coefficient of variation of a prefill's service time
PROBES = 50  # transfers a path's measurement rests on per tick (probes and requests)


@dataclass
class Pool:
    """The replicas of one side: a job's slot each."""

    jobs: list[InferenceJob]
    job: IntArray  # per replica, index into ``jobs``
    slot: IntArray
    names: tuple[str, ...]

    @classmethod
    def of(cls, jobs: list[InferenceJob]) -> Pool:
        job = np.concatenate([np.full(j.slot_node.size, i, np.int64) for i, j in enumerate(jobs)])
        slot = np.concatenate([np.arange(j.slot_node.size, dtype=np.int64) for j in jobs])
        names = tuple(f"{jobs[i].spec.name}/{s}" for i, s in zip(job.tolist(), slot.tolist(), strict=True))
        return cls(jobs, job, slot, names)

    def nodes(self) -> IntArray:
        return np.array(
            [j.slot_node[s] for j, s in zip(self._each(), self.slot.tolist(), strict=True)], np.int64
        )

    def serving(self, t: float) -> BoolArray:
        """Placed, started and its job running."""
        return np.array(
            [j.phase is Phase.RUNNING and j.slot_node[s] >= 0 and j.slot_ready[s] <= t
             for j, s in zip(self._each(), self.slot.tolist(), strict=True)], bool,
        )  # fmt: skip

    def _each(self) -> list[InferenceJob]:
        return [self.jobs[i] for i in self.job.tolist()]


MAX_BUCKETS = 288  # the run's account is kept per bucket of at least 5 minutes


@dataclass
class Tally:
    """The run's serving account, per time bucket (so that a window, a fault's, can be read)."""

    start: float
    bucket_s: float
    offered: FloatArray  # requests, per bucket
    served: FloatArray
    good: FloatArray
    shed: FloatArray
    failed: FloatArray  # failed transfers
    hist: FloatArray  # (buckets, bins): served requests per TTFT bin
    ejections: int = 0

    @classmethod
    def new(cls, start: float, end: float) -> Tally:
        bucket = max(300.0, (end - start) / MAX_BUCKETS)
        n = math.ceil((end - start) / bucket) + 1
        z = np.zeros(n)
        return cls(
            start, bucket, z, z.copy(), z.copy(), z.copy(), z.copy(), np.zeros((n, TTFT_BINS.size - 1))
        )

    def bucket(self, t: float) -> int:
        return min(int((t - self.start) // self.bucket_s), self.offered.size - 1)

    def window(self, t0: float = -math.inf, t1: float = math.inf) -> dict[str, float]:
        """Goodput, TTFT percentiles and shares over the buckets that end within [t0, t1]."""
        ends = self.start + self.bucket_s * (np.arange(self.offered.size) + 1)
        sel = (ends > t0 + 1e-9) & (ends - self.bucket_s < t1 - 1e-9)
        off, served = float(self.offered[sel].sum()), float(self.served[sel].sum())
        h = self.hist[sel].sum(axis=0)
        return {
            "goodput": float(self.good[sel].sum()) / max(off, 1e-12),
            "p95_ttft_ms": _quantile(h, 0.95), "p50_ttft_ms": _quantile(h, 0.5), "p99_ttft_ms": _quantile(h, 0.99),
            "shed_share": float(self.shed[sel].sum()) / max(off, 1e-12),
            "failed_transfer_share": float(self.failed[sel].sum()) / max(served, 1e-12),
            "offered_requests": off,
        }  # fmt: skip


def _quantile(h: FloatArray, q: float) -> float:
    if h.sum() <= 0:
        return math.nan
    i = int(np.searchsorted(np.cumsum(h) / h.sum(), q))
    return float(math.sqrt(TTFT_BINS[i] * TTFT_BINS[min(i + 1, TTFT_BINS.size - 1)]))


class ServingModel:
    """One run's disaggregated deployment, stepped by the twin after its jobs."""

    def __init__(self, world: World, jobs: list[TrainingJob | InferenceJob], policy: str) -> None:
        spec = world.scenario.serving
        assert spec is not None
        self.spec: Serving = spec
        self.topology = world.topology
        by_name = {j.spec.name: j for j in jobs if isinstance(j, InferenceJob)}
        self.prefill = Pool.of([by_name[n] for n in spec.prefill])
        self.decode = Pool.of([by_name[n] for n in spec.decode])
        kind = (
            spec.router
            if spec.router != "auto"
            else ("seamguard" if policy.startswith("seamguard") else "baseline")
        )
        self.router: Router = make_router(kind, spec, self.prefill.names, self.decode.names, world.seed)
        self.start = world.start
        rng = np.random.default_rng([world.seed, 20, 1])
        u = (np.arange(SAMPLES) + 0.5) / SAMPLES
        self._u_wait, self._u_fail, self._u_z = rng.permutation(u), rng.permutation(u), rng.permutation(u)
        self._z = _normal_ppf(self._u_z)
        self._rate_rng = np.random.default_rng([world.seed, 20, 2])  # the same draws whatever the router
        self._obs_rng = np.random.default_rng([world.seed, 20, 3])
        self.backlog_p = np.zeros(len(self.prefill.names))
        self.backlog_d = np.zeros(len(self.decode.names))
        self.seen: Measured | None = None
        self.tally = Tally.new(world.start, world.end)
        # While a serving path's fault is on (the twin knows; the routers do not): the fault window.
        on = [(f.onset, min(f.end, world.end)) for f in world.faults if f.spec.serving]
        self.fault_window = (min(a for a, _ in on), max(b for _, b in on)) if on else None

    # ---- one tick -------------------------------------------------------------------------------
    def step(self, twin: Twin, t0: float, t1: float, fx: Effects) -> None:
        s, dt = self.spec, t1 - t0
        hour = 2.0 * math.pi * (t1 - self.start) / 3600.0
        lam = (
            s.rate_rps
            * (1.0 + s.rate_swing * math.sin(hour))
            * max(1.0 + s.rate_noise * self._rate_rng.standard_normal(), 0.0)
        )
        node_p, node_d = self.prefill.nodes(), self.decode.nodes()
        up_p, up_d = self.prefill.serving(t1), self.decode.serving(t1)
        pace = twin.node_pace()
        pace_p = np.where(up_p, pace[np.maximum(node_p, 0)], 1.0)
        pace_d = np.where(up_d, pace[np.maximum(node_d, 0)], 1.0)
        mean, sd, fail = self.paths(twin, fx, node_p, node_d)
        cap_p = s.prefill_parallel * 1000.0 / s.prefill_ms * pace_p
        itl0 = s.itl_ms / pace_d / 1000.0  # s per token on an idle replica
        cap_d = SATURATION * s.decode_slots / (s.output_tokens * itl0 * max(s.itl_gain, 1e-9))
        adm_p = twin.admission(self.prefill.jobs[0].spec.job_class)[np.maximum(node_p, 0)] < 2
        adm_d = twin.admission(self.decode.jobs[0].spec.job_class)[np.maximum(node_d, 0)] < 2
        weight, shed = self.router.route(
            t1,
            up_p,
            up_d,
            adm_p & up_p,
            adm_d & up_d,
            np.where(up_p, cap_p, 0.0),
            np.where(up_d, cap_d, 0.0),
            self.seen,
        )
        lam_pd = lam * (1.0 - shed) * weight * (up_p[:, None] & up_d[None, :])
        lam_p, lam_d = lam_pd.sum(axis=1), lam_pd.sum(axis=0)
        wait_ms, wait_q = self._prefill_wait(lam_p, cap_p, dt)
        recompute_s = s.prefill_ms * s.recompute_factor / pace_d / 1000.0
        steal = np.minimum((lam_pd * fail).sum(axis=0) * recompute_s / s.prefill_parallel, 0.9)
        itl, streams, decode_wait = self._decode(lam_d, itl0 / (1.0 - steal), dt)
        # Time to first token, per pair and quantile point (ms).
        transfer = np.maximum(mean[:, :, None] + sd[:, :, None] * self._z, 0.2 * mean[:, :, None])
        failed = self._u_fail[None, None, :] < fail[:, :, None]
        retry = s.kv_timeout_ms + 1000.0 * recompute_s[None, :, None]
        ttft = (
            wait_ms[:, None, :] + (s.prefill_ms / pace_p)[:, None, None] + transfer + failed * retry
            + (1000.0 * (decode_wait + itl))[None, :, None]
        )  # fmt: skip
        meets = (ttft <= s.ttft_slo_ms) & (1000.0 * itl <= s.itl_slo_ms)[None, :, None]
        n_pd = lam_pd * dt
        tl, b = self.tally, self.tally.bucket(t1 - 1e-9)
        tl.offered[b] += lam * dt
        tl.shed[b] += lam * shed * dt
        tl.served[b] += float(n_pd.sum())
        tl.good[b] += float((n_pd * meets.mean(axis=2)).sum())
        tl.failed[b] += float((n_pd * fail).sum())
        live = n_pd > 0
        if live.any():
            w = np.repeat(n_pd[live] / SAMPLES, SAMPLES)
            tl.hist[b] += np.histogram(np.clip(ttft[live].ravel(), 1.0, 9.9e5), TTFT_BINS, weights=w)[0]
        # What telemetry shows the router next tick.
        load_p = lam_p * (wait_q + s.prefill_ms / pace_p / 1000.0) + self.backlog_p
        rng = self._obs_rng
        noise = rng.standard_normal((3, *mean.shape))
        f_seen = np.clip(fail + np.sqrt(fail * (1.0 - fail) / PROBES) * noise[2], 0.0, 1.0)
        err = np.divide(
            (lam_pd * fail).sum(axis=0) * s.error_share, lam_d, out=np.zeros_like(lam_d), where=lam_d > 0
        )
        self.seen = Measured(
            latency_ms=mean * (1.0 + 0.05 * noise[0]), jitter_ms=sd * (1.0 + 0.1 * np.abs(noise[1])),
            failure_rate=f_seen, prefill_load=load_p, decode_load=streams + self.backlog_d,
            decode_itl_ms=1000.0 * itl, demand_rps=lam, decode_requests=lam_d * dt, decode_error_rate=err,
        )  # fmt: skip
        tl.ejections = self.router.ejections

    def paths(
        self, twin: Twin, fx: Effects, node_p: IntArray, node_d: IntArray
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Per (prefill, decode) pair: the KV transfer's mean and standard deviation (ms) and the
        share of transfers failing, from the fabric as it is now."""
        s, topo = self.spec, self.topology
        leaf_p, leaf_d = topo.node_leaf[np.maximum(node_p, 0)], topo.node_leaf[np.maximum(node_d, 0)]
        cross = leaf_p[:, None] != leaf_d[None, :]
        bw = s.path_gbps * np.where(cross, s.cross_leaf_share, 1.0)
        hops = np.where(cross, 3.0, 1.0)
        lf = np.asarray(twin.plant.link_latency, dtype=np.float64)
        slow = np.maximum(lf[np.maximum(node_p, 0)][:, None], lf[np.maximum(node_d, 0)][None, :])
        base = (s.kv_mb * 8.0 / bw) * slow + s.hop_ms * hops
        leaf_deg = fx.leaf_kv_degraded
        deg = np.where(cross, leaf_deg[leaf_p][:, None] + leaf_deg[leaf_d][None, :], 0.0)
        d = s.degradation
        mean = base * (1.0 + d.latency_rise * deg)
        sd = s.jitter_share * mean + d.jitter_ms * deg
        down = twin.plant.link_down
        fail = np.clip(d.failure_rate * deg, 0.0, 0.95)
        fail = np.where(
            down[np.maximum(node_p, 0)][:, None] | down[np.maximum(node_d, 0)][None, :], 1.0, fail
        )
        return mean, sd, fail

    def _prefill_wait(self, lam: FloatArray, cap: FloatArray, dt: float) -> tuple[FloatArray, FloatArray]:
        """Per replica and quantile point, the queueing wait (ms), and per replica its mean (s)."""
        c = float(self.spec.prefill_parallel)
        rho = np.divide(lam, cap, out=np.zeros_like(lam), where=cap > 0)
        over = np.maximum(lam - SATURATION * cap, 0.0)
        under = np.maximum(SATURATION * cap - lam, 0.0)
        self.backlog_p = np.maximum(self.backlog_p + (over - under) * dt, 0.0)
        r = np.minimum(rho, SATURATION)
        p_wait = np.clip(r ** (math.sqrt(2.0 * (c + 1.0)) - 1.0), 0.0, 1.0)
        service = np.divide(c, cap, out=np.zeros_like(cap), where=cap > 0)
        wq = p_wait / (c * (1.0 - r)) * service * (1.0 + SERVICE_CV2) / 2.0
        backlog_wait = np.divide(self.backlog_p, cap, out=np.zeros_like(cap), where=cap > 0)
        cond = np.divide(wq, p_wait, out=np.zeros_like(wq), where=p_wait > 0)
        u = self._u_wait[None, :]
        tail = np.maximum((1.0 - u) / np.maximum(p_wait[:, None], 1e-12), 1e-12)
        wait = np.where(u < 1.0 - p_wait[:, None], 0.0, -cond[:, None] * np.log(np.minimum(tail, 1.0)))
        return 1000.0 * (wait + backlog_wait[:, None]), wq + backlog_wait

    def _decode(
        self, lam: FloatArray, itl0: FloatArray, dt: float
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Per decode replica: ITL (s), streams in its batch, and the wait of its backlog (s)."""
        s = self.spec
        g, slots, tokens = max(s.itl_gain, 1e-9), float(s.decode_slots), float(s.output_tokens)
        cap = SATURATION * slots / (tokens * itl0 * g)
        taken = np.minimum(lam, cap)
        self.backlog_d = np.maximum(self.backlog_d + (lam - cap) * dt, 0.0)
        x = taken * tokens * itl0 * g / slots
        streams = taken * tokens * itl0 / (1.0 - x)
        itl = itl0 * (1.0 + g * streams / slots)
        return itl, streams, np.divide(self.backlog_d, cap, out=np.zeros_like(cap), where=cap > 0)

    def summary(self) -> dict[str, float]:
        """The whole run's figures, and (``*_fault``) those while a serving path's fault was on."""
        out = self.tally.window()
        out["ejections"] = float(self.tally.ejections)
        out["degrade_ticks"] = float(getattr(self.router, "degrade_ticks", 0))
        if self.fault_window is not None:
            out.update({f"{k}_fault": v for k, v in self.tally.window(*self.fault_window).items()})
        return out


def _normal_ppf(u: FloatArray) -> FloatArray:
    """Standard normal quantiles (Acklam's rational approximation, |error| < 1.2e-9)."""
    a = (
        -3.969683028665376e01,
        2.209460984245205e02,
        -2.759285104469687e02,
        1.383577518672690e02,
        -3.066479806614716e01,
        2.506628277459239e00,
    )
    b = (
        -5.447609879822406e01,
        1.615858368580409e02,
        -1.556989798598866e02,
        6.680131188771972e01,
        -1.328068155288572e01,
    )
    c = (
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e00,
        -2.549732539343734e00,
        4.374664141464968e00,
        2.938163982698783e00,
    )
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)  # fmt: skip
    out = np.empty_like(u)
    lo, hi = u < 0.02425, u > 1 - 0.02425
    mid = ~lo & ~hi
    q = np.sqrt(-2 * np.log(np.where(lo, u, 1 - u)))
    tail = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
        (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1
    )
    out[lo], out[hi] = tail[lo], -tail[hi]
    r = (u[mid] - 0.5) ** 2
    qm = u[mid] - 0.5
    out[mid] = (
        (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5])
        * qm
        / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    )
    return out
