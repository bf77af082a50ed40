"""The checkpoint control loop: decision latency at fleet scale, and its waste against the best
fixed interval found in hindsight.

Latency (always): a fleet with ``--jobs`` running jobs (8 to 64 nodes each); every tick the
parts' scores move, and the loop re-plans every job from scratch (the live hazard, the cost
table of every mode on every storage path, the plan, the decisions worth journaling). Prints
one JSON line with p50/p99 in ms. Target: 1,000 jobs in at most 50 ms per tick.

Stationary waste (``--stationary``): the built-in ``drift`` scenario with its drift removed, so
rates stay what the engine was told. The ``binary`` policy runs at each of a sweep of fixed
intervals, and ``seamguard-remote`` (storage saves only, like the sweep) and ``seamguard``
once, on the same seeds (the same failures). Checkpoint waste is the share of reserved GPU time
spent saving, restoring and redoing lost work. Prints one JSON line per policy and interval and
a last line comparing the loop with the best fixed interval. Target: within 1 percentage point.

    python bench/checkpoint.py --jobs 1000
    python bench/checkpoint.py --stationary --seeds 3
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from rich.console import Console
from rich.progress import Progress

from seamguard.config import load_config
from seamguard.control.checkpoint_loop import CheckpointLoop
from seamguard.economics.checkpoint_modes import StoragePath
from seamguard.economics.hazard import job_hazard, job_parts
from seamguard.model.inventory import JobRecord
from seamguard.model.states import TRAINING_CLASSES, JobClass, State
from seamguard.model.topology import build_topology
from seamguard.model.workload import workload_from_nodes
from seamguard.twin.accounting import Bucket
from seamguard.twin.campaign import run_campaign
from seamguard.twin.cluster import ClusterSpec, generate_cluster
from seamguard.twin.results import RunResult
from seamguard.twin.scenario import load_scenario

WASTE_BUCKETS = (Bucket.CHECKPOINT_SAVE, Bucket.RESTORE, Bucket.ROLLBACK)
SWEEP_MIN = (4.0, 5.5, 7.0, 9.0, 12.0, 16.0, 22.0)


def latency(jobs: int, ticks: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(8, 65, jobs)
    nodes = int(sizes.sum())
    racks = -(-nodes // 4)
    cdus = -(-racks // 16)
    inv = generate_cluster(ClusterSpec(cdus=cdus, racks_per_cdu=16, nodes_per_rack=4, gpus_per_node=8,
                                       nodes_per_leaf=16, storage="ckpt0", gpu_model="H100"))  # fmt: skip
    names = [n.node for n in inv.nodes]
    cut = np.concatenate([[0], np.cumsum(sizes)])
    records = [
        JobRecord(f"j{k:04d}", JobClass.SYNC_TRAINING, tuple(names[cut[k] : cut[k + 1]]), 0.0, 1e12)
        for k in range(jobs)
    ]
    topo = build_topology(inv, records, storage=("ckpt0", "ckpt1", "ckpt2"))
    node_job = np.full(len(names), -1, dtype=np.int64)
    for k in range(jobs):
        node_job[cut[k] : cut[k + 1]] = k
    work = workload_from_nodes(topo, node_job)
    cfg = load_config()
    loop = CheckpointLoop(cfg, topo)
    pairs = job_parts(topo, work)
    paths = [StoragePath(n, 400.0, 600.0, State.HEALTHY) for n in ("ckpt0", "ckpt1", "ckpt2")]
    states = np.zeros(jobs, dtype=np.int64)
    since = rng.uniform(0, 3600, jobs)
    times = []
    for i in range(ticks + 3):
        gfs = np.where(rng.random(topo.n_entities) < 0.001, rng.random(topo.n_entities), 0.0)
        prs = np.zeros(topo.n_entities)
        t0 = time.perf_counter()
        hazard = job_hazard(cfg.hazard, topo, work, gfs, prs, 1.0, pairs)
        loop.step(30.0 * i, work, hazard, paths, since + 30.0 * i, states)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1e3
    return {"jobs": jobs, "gpus": nodes * 8, "ticks": ticks, "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2)}  # fmt: skip


def waste_share(result: RunResult) -> float:
    jobs = [j for j in result.jobs if JobClass(j.job_class) in TRAINING_CLASSES]
    lost = sum(float(sum(j.buckets[b] for b in WASTE_BUCKETS)) for j in jobs)
    return lost / sum(j.reserved_gpu_s for j in jobs)


def stationary(seeds: int, console: Console) -> None:
    seed_list = tuple(range(seeds))
    runs: dict[str, float] = {}
    sweep = [("binary", m) for m in SWEEP_MIN] + [("seamguard-remote", None), ("seamguard", None)]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("stationary drift scenario", total=len(sweep))
        for policy, minutes in sweep:
            overrides: dict[str, object] = {"hazard_drift": [], "duration_h": 96}
            if minutes is not None:
                overrides["policies"] = {"binary": {"checkpoint_interval_min": minutes}}
            scenario = load_scenario("drift", overrides)
            results = run_campaign(scenario, (policy,), seed_list)
            share = float(np.mean([waste_share(r) for r in results]))
            label = policy if minutes is None else f"fixed {minutes:g} min"
            runs[label] = share
            print(
                json.dumps({"policy": label, "seeds": seeds, "checkpoint_waste_pct": round(100 * share, 2)})
            )
            progress.advance(task)
    fixed = {k: v for k, v in runs.items() if k.startswith("fixed")}
    best = min(fixed, key=lambda k: fixed[k])
    print(json.dumps({
        "best_fixed": best, "best_fixed_waste_pct": round(100 * fixed[best], 2),
        "seamguard_remote_minus_best_pp": round(100 * (runs["seamguard-remote"] - fixed[best]), 2),
        "seamguard_minus_best_pp": round(100 * (runs["seamguard"] - fixed[best]), 2),
    }))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--stationary", action="store_true", help="also run the fixed-interval sweep (minutes)"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds for --stationary")
    args = parser.parse_args()
    if args.jobs < 1 or args.ticks < 1 or args.seeds < 1:
        parser.error("--jobs, --ticks and --seeds must be positive")
    console = Console(stderr=True)
    with console.status(f"planning {args.jobs} jobs"):
        print(json.dumps(latency(args.jobs, args.ticks, args.seed)))
    if args.stationary:
        stationary(args.seeds, console)


if __name__ == "__main__":
    main()
