"""The failure-amplification firewall in the twin: a gray leaf under two synchronous jobs.

Runs the built-in ``gray-leaf-two-jobs`` scenario (a leaf switch congesting for five hours under
one rank of each of two 9-node synchronous jobs, spares on another leaf) under ``binary``,
``young-daly``, ``seamguard``, ``seamguard-nofirewall`` (the same engine never containing a gray
leaf) and ``oracle``, over a few seeds, and prints per policy: each training job's ETTR, the
fleet's ETTR, the healthy GPU-hours that waited (GPUs under no fault that their synchronous job
held back for the gray one: ``RunResult.healthy_wait_gpu_h``), the GPU-hours lost to restarts and
the restarts. The last line on stdout is one JSON object with those figures (means over seeds).

    python bench/firewall.py [--seeds 3] [--first-seed 0] [--workers 2] [--duration-h H]

About a minute and a half on two cores with the defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from seamguard.twin.accounting import Bucket
from seamguard.twin.campaign import run_campaign, run_seconds
from seamguard.twin.results import RunResult
from seamguard.twin.scenario import load_scenario

SCENARIO = "gray-leaf-two-jobs"
POLICIES = ("binary", "young-daly", "seamguard", "seamguard-nofirewall", "oracle")
TRAINING = ("train-a", "train-b")


def figures(runs: list[RunResult]) -> dict[str, Any]:
    """One policy's figures, means over its seeds."""

    def job_ettr(name: str) -> float:
        return float(np.mean([next(j for j in r.jobs if j.name == name).ettr for r in runs]))

    return {
        **{f"ettr_{name.replace('-', '_')}": round(job_ettr(name), 4) for name in TRAINING},
        "ettr_fleet": round(float(np.mean([r.ettr for r in runs])), 4),
        "healthy_wait_gpu_h": round(float(np.mean([r.healthy_wait_gpu_h for r in runs])), 2),
        "restart_gpu_h": round(
            float(np.mean([sum(j.buckets[Bucket.RESTART] for j in r.jobs) for r in runs])) / 3600.0, 2
        ),
        "restarts": round(
            float(np.mean([sum(j.restarts for j in r.jobs if j.name in TRAINING) for r in runs])), 2
        ),
        "drains": round(float(np.mean([sum(1 for d in r.drains if d.actor == "policy") for r in runs])), 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3, help="seeds to run (default 3)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--duration-h", type=float, default=None, help="shorter runs (the fault is at 1-7 h)")
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")
    console = Console(stderr=True)
    overrides = {"duration_h": args.duration_h} if args.duration_h else None
    scenario = load_scenario(SCENARIO, overrides)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    t0 = time.perf_counter()
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(), console=console, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task(SCENARIO, total=run_seconds(scenario) * len(POLICIES) * len(seeds))
        done: dict[tuple[str, int], float] = {}

        def on_step(policy: str, seed: int, seconds: float) -> None:
            delta = seconds - done.get((policy, seed), 0.0)
            done[policy, seed] = seconds
            progress.update(task, advance=delta, description=f"{SCENARIO}: {policy}, seed {seed}")

        results = run_campaign(scenario, POLICIES, seeds, on_step, workers=args.workers)
    per_policy = {p: figures([r for r in results if r.policy == p]) for p in POLICIES}
    table = Table(title=f"{SCENARIO}: {len(seeds)} seed(s), means (healthy wait and restarts in GPU-h)")
    for col in ("policy", "ETTR train-a", "ETTR train-b", "ETTR fleet", "healthy GPU-h waited",
                "restart GPU-h", "restarts", "drains"):  # fmt: skip
        table.add_column(col, justify="left" if col == "policy" else "right")
    for p, f in per_policy.items():
        table.add_row(p, f"{f['ettr_train_a']:.4f}", f"{f['ettr_train_b']:.4f}", f"{f['ettr_fleet']:.4f}",
                      f"{f['healthy_wait_gpu_h']:.1f}", f"{f['restart_gpu_h']:.1f}", f"{f['restarts']:g}",
                      f"{f['drains']:g}")  # fmt: skip
    console.print(table)
    out = {"scenario": SCENARIO, "seeds": seeds, "duration_h": scenario.duration_h, "per_policy": per_policy,
           "wall_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
