"""Economic harm: when keeping a slow rank costs the job more than swapping it out.

A synchronous job runs at the pace of its slowest rank, so replacing that rank speeds the
whole job up to the pace of the second slowest: gain = (t1 - t2) / t1 x job GPUs, in
GPU-equivalents. The swap costs a restart of the job, amortised over a horizon:
cost = restart_cost_s x job GPUs / horizon_s. The ratio gain / cost drives `harmful`.
An evenly slow job is never harmful (swapping would buy nothing), nor is a rank inside the
normal same-SKU spread: it must be min_slowdown over its job's median *and* an outlier among
its peers (robust z >= min_z against the job's median and MAD, the
spread never taken below the known same-SKU spread sku_spread). Without the second test a
job's naturally slowest rank, which sits ~2.5 sigma out in every job, would flap in and out
of harmful whenever the gap to the runner-up grazed the cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.config import EconomicsConfig
from seamguard.scoring.evidence import FloatArray
from seamguard.scoring.groupstats import group_median_mad

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Harm:
    ratio: FloatArray  # per GPU: gain / cost, 0 when not the job's straggler
    gain_gpus: FloatArray
    cost_gpus: FloatArray
    slowdown: FloatArray  # per GPU: step time over its job's median, minus 1


def straggler_harm(
    step_time: FloatArray,
    gpu_job: IntArray,
    job_sync: npt.NDArray[np.bool_],
    job_gpus: FloatArray,
    config: EconomicsConfig,
) -> Harm:
    n_jobs = job_sync.size
    n = step_time.size
    zeros = np.zeros(n)
    groups = (
        np.where(job_sync[np.maximum(gpu_job, 0)] & (gpu_job >= 0), gpu_job, -1) if n_jobs else np.full(n, -1)
    )
    valid = np.isfinite(step_time) & (groups >= 0)
    if not valid.any():
        return Harm(zeros, zeros, zeros, np.full(n, np.nan))
    med, mad, _ = group_median_mad(step_time, groups, n_jobs)
    idx = np.flatnonzero(valid)
    g = groups[idx]
    v = step_time[idx]
    order = np.lexsort((v, g))
    g_s, v_s, idx_s = g[order], v[order], idx[order]
    last = np.ones(g_s.size, dtype=bool)
    last[:-1] = g_s[1:] != g_s[:-1]
    top_pos = np.flatnonzero(last)
    has_second = np.zeros(top_pos.size, dtype=bool)
    has_second[1:] = g_s[top_pos[1:] - 1] == g_s[top_pos[1:]]
    has_second[0] = top_pos[0] > 0 and g_s[top_pos[0] - 1] == g_s[top_pos[0]]
    t1 = v_s[top_pos]
    t2 = np.where(has_second, v_s[np.maximum(top_pos - 1, 0)], t1)
    jobs = g_s[top_pos]
    gain = np.where(t1 > 0, (t1 - t2) / t1, 0.0) * job_gpus[jobs]
    cost = config.restart_cost_s * job_gpus[jobs] / config.horizon_s
    slowdown = np.full(n, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        slowdown[valid] = step_time[valid] / med[groups[valid]] - 1.0
    gain_all = zeros.copy()
    cost_all = zeros.copy()
    stragglers = idx_s[top_pos]
    gain_all[stragglers] = gain
    cost_all[stragglers] = cost
    z = np.zeros(n)
    # The spread is never taken below the known same-SKU spread: the MAD of a small job's eight
    # ranks is itself noisy and would otherwise make its naturally slowest rank an "outlier".
    scale = np.maximum(1.4826 * mad, config.sku_spread * np.abs(med))
    with np.errstate(divide="ignore", invalid="ignore"):
        z[valid] = (step_time[valid] - med[groups[valid]]) / scale[groups[valid]]
    eligible = (np.nan_to_num(slowdown) >= config.min_slowdown) & (np.nan_to_num(z) >= config.min_z)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where((cost_all > 0) & eligible, gain_all / cost_all, 0.0)
    return Harm(ratio=ratio, gain_gpus=gain_all, cost_gpus=cost_all, slowdown=slowdown)
