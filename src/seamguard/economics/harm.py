"""Economic harm: when keeping slow ranks costs a synchronous job more than swapping them out.

A synchronous job runs at the pace of its slowest rank. The stragglers of a job are its ranks
that are both ``min_slowdown`` over the job's median step time and peer outliers (robust
z >= ``min_z`` against the job's median and MAD, the spread never taken below the known
same-SKU spread ``sku_spread``: eight ranks' MAD is too noisy on its own). One restart swaps
all of them at once and the job then runs at the pace of its slowest remaining rank t_rest:

    gain = (t_slowest - t_rest) / t_slowest x job GPUs x w  (GPU-equivalents, weighted)
    cost = swap_s x job GPUs / horizon_s                   (the swap, amortised)

with ``swap_s`` the job's planned swap (``valuation.planned_swap_s``): the save before it, the
restart and the restore (a 20-minute restart with a 5-minute restore costs 25 minutes and the
save, not ``economics.restart_cost_s``), and the horizon never past the job's own end (its time
limit): a swap an hour before the job ends has an hour to pay for its restart, not ``horizon_s``.

with ``w`` the job's weight (``economics.criticality_weight``, raised by its deadline risk): a
straggler in a release-blocking run is worth a swap four times sooner than in a standard one.

A swap needs a node to restart on. A job with fewer spares (``control.spares``) than it has
straggling nodes restarts on nothing: it waits, whole, until the node it gave up comes back from
diagnosis (``diagnose_s``), and most likely comes back as slow. So its cost adds that wait,

    cost = (swap_s + diagnose_s) x job GPUs / horizon

and only a rank slow enough to be worth a third of the job's horizon idle is swapped with nowhere
to go. Counting spares is the controller's (it reads states and the safety layer's holds):
``with_waits`` prices them in where a job has stragglers.

Every straggler of the job carries the ratio gain / cost, which drives ``harmful``. Judging
them together means two equally slow ranks are both harmful (swapping either alone buys
nothing, swapping both does), while a job's naturally slowest rank, which sits ~2.5 sigma out
in every job, is not a straggler and never flaps in and out of harmful. An evenly slow job has
no stragglers: swapping would buy nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from seamguard.config import EconomicsConfig
from seamguard.economics.valuation import amortised_over_s, wait_for_node_s
from seamguard.scoring.evidence import FloatArray
from seamguard.scoring.groupstats import group_median_mad

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Harm:
    ratio: FloatArray  # per GPU: gain / cost for its job's stragglers, 0 elsewhere
    gain_gpus: FloatArray
    cost_gpus: FloatArray
    slowdown: FloatArray  # per GPU: step time over its job's median, minus 1
    stragglers: IntArray  # per GPU: how many stragglers its job has (0 outside synchronous jobs)
    horizon_s: FloatArray | None = None  # per GPU: what its job's swap is amortised over
    waits: npt.NDArray[np.bool_] | None = None  # per GPU: its swap would find no spare (``with_waits``)


def straggler_harm(
    step_time: FloatArray,
    gpu_job: IntArray,
    job_sync: npt.NDArray[np.bool_],
    job_gpus: FloatArray,
    config: EconomicsConfig,
    job_weight: FloatArray | None = None,
    job_left_s: FloatArray | None = None,
    job_swap_s: FloatArray | None = None,
) -> Harm:
    """``job_left_s``: per job, seconds until its end (None: every job runs past the horizon);
    ``job_swap_s``: per job, what a swap with a spare stalls it (None or NaN: ``restart_cost_s``)."""
    n_jobs = job_sync.size
    n = step_time.size
    zeros = np.zeros(n)
    groups = (
        np.where(job_sync[np.maximum(gpu_job, 0)] & (gpu_job >= 0), gpu_job, -1) if n_jobs else np.full(n, -1)
    )
    valid = np.isfinite(step_time) & (groups >= 0)
    if not valid.any():
        return Harm(zeros, zeros, zeros, np.full(n, np.nan), np.zeros(n, dtype=np.int64))
    med, mad, _ = group_median_mad(step_time, groups, n_jobs)
    g = np.where(valid, groups, 0)
    scale = np.maximum(1.4826 * mad, config.sku_spread * np.abs(med))
    slowdown = np.full(n, np.nan)
    z = np.zeros(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        slowdown[valid] = step_time[valid] / med[g[valid]] - 1.0
        z[valid] = (step_time[valid] - med[g[valid]]) / scale[g[valid]]
    straggler = valid & (np.nan_to_num(slowdown) >= config.min_slowdown) & (np.nan_to_num(z) >= config.min_z)

    slowest = np.full(n_jobs, -np.inf)
    np.maximum.at(slowest, g[valid], step_time[valid])
    rest = np.full(n_jobs, -np.inf)  # the pace once every straggler is swapped out
    keep = valid & ~straggler
    np.maximum.at(rest, g[keep], step_time[keep])
    count = np.bincount(g[straggler], minlength=n_jobs)
    has = (count > 0) & np.isfinite(rest)  # a job of nothing but stragglers is evenly slow
    with np.errstate(divide="ignore", invalid="ignore"):
        gain_job = np.where(has, (slowest - rest) / slowest * job_gpus, 0.0)
    if job_weight is not None:
        gain_job = gain_job * job_weight[:n_jobs]
    left = job_left_s[:n_jobs] if job_left_s is not None else np.full(n_jobs, np.nan)
    horizon = amortised_over_s(left, config.horizon_s)
    swap = np.full(n_jobs, config.restart_cost_s)
    if job_swap_s is not None:
        swap = np.where(np.isfinite(job_swap_s[:n_jobs]), job_swap_s[:n_jobs], swap)
    cost_job = swap * job_gpus[:n_jobs] / horizon

    on = straggler & has[g]
    gain = np.where(on, gain_job[g], 0.0)
    cost = np.where(on, cost_job[g], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(cost > 0, gain / cost, 0.0)
    per_gpu_count = np.where(valid, count[g], 0).astype(np.int64)
    return Harm(ratio=ratio, gain_gpus=gain, cost_gpus=cost, slowdown=slowdown, stragglers=per_gpu_count,
                horizon_s=np.where(groups >= 0, horizon[g], config.horizon_s))  # fmt: skip


def with_waits(
    harm: Harm, gpu_job: IntArray, short: npt.NDArray[np.bool_], job_gpus: FloatArray, config: EconomicsConfig
) -> Harm:
    """``harm`` with the wait added to the swap's cost of every job ``short`` of spares (per job)."""
    on = (harm.cost_gpus > 0) & (gpu_job >= 0)
    waits = on & short[np.maximum(gpu_job, 0)]
    horizon = harm.horizon_s if harm.horizon_s is not None else np.full(gpu_job.size, config.horizon_s)
    wait = wait_for_node_s(waits, config.diagnose_s) * job_gpus[np.maximum(gpu_job, 0)] / horizon
    cost = harm.cost_gpus + wait
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(cost > 0, harm.gain_gpus / cost, 0.0)
    return replace(harm, ratio=ratio, cost_gpus=cost, waits=waits)
