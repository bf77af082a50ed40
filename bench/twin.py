"""The twin's speed and memory, and the windows shortcut checked at full cadence.

Part 1 runs every policy of one scenario (default ``llama3-16k-54d``, one seed), each in its own
spawned process (seamguard's first: it takes longest), and prints per run: simulated GPU-hours
per wall-clock second, wall time, engine ticks, node-days the policy observed, peak RSS of the
process, ETTR and false quarantines, then the campaign's wall time (target for llama3-16k-54d:
all four policies in <= 15 minutes on two cores) with, beside it, the engine's median tick at
16,384 GPUs (``bench/tick.py``), so that a slower machine reads as one.

Part 2 (``--healthy-node-days``) measures what the windows shortcut might hide: a fault-free
fleet observed at the full telemetry cadence (every tick, every node, with the twin's noise,
dropouts, sentinels, benign XIDs and diurnal swing) for at least that many node-days, and counts
each policy's false quarantines and the seamguard engine's non-healthy calls on it.

    python bench/twin.py                                   # llama3-16k-54d, four policies
    python bench/twin.py --scenario thermal-cascade --seed 1
    python bench/twin.py --skip-scenario --healthy-node-days 1000
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import resource
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from rich.console import Console

from seamguard.model.entities import EntityKind
from seamguard.twin.scenario import Scenario, load_scenario, scenario_from_mapping
from seamguard.twin.sim import POLICIES, Twin
from seamguard.twin.world import build_world

HEALTHY_NODES = 128  # 8 CDUs x 4 racks x 4 nodes, one 120-node synchronous job and 8 spares


def run_one(scenario: Scenario, seed: int, policy: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    world = build_world(scenario, seed)
    twin = Twin(world, policy)
    result = twin.run()
    wall = time.perf_counter() - t0
    n_gpus = world.topology.count(EntityKind.GPU)
    gpu_hours = n_gpus * scenario.duration_h
    non_healthy = sum(
        1 for t in getattr(twin.policy, "transitions", []) if t[2] not in ("healthy", "unknown")
    )
    return {
        "scenario": scenario.name, "policy": policy, "seed": seed, "gpus": n_gpus,
        "sim_gpu_hours_per_s": round(gpu_hours / wall, 1), "wall_s": round(wall, 1),
        "engine_ticks": result.engine_ticks, "observed_node_days": round(twin.observed_node_s / 86400, 1),
        "node_days": round(result.node_days, 1), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "ettr": round(result.ettr, 4), "false_quarantines": result.false_quarantines, "non_healthy_calls": non_healthy,
    }  # fmt: skip


def healthy_scenario(node_days: float) -> Scenario:
    """A fault-free fleet at full cadence, long enough for ``node_days``."""
    days = math.ceil(node_days / HEALTHY_NODES)
    data = {
        "name": "healthy-full-cadence", "duration_h": 24 * days,
        "cluster": {"cdus": 8, "racks_per_cdu": 4, "nodes_per_rack": 4, "gpus_per_node": 8, "storage": ["ckpt0", "ckpt1"]},
        "jobs": [{"name": "train", "class": "sync_training", "nodes": 120, "checkpoint_gb": 1000, "fallback_storage": "ckpt1"}],
        "observation": {"mode": "full"},
    }  # fmt: skip
    return scenario_from_mapping(data, "healthy-full-cadence")


def sweep(
    console: Console, scenario: Scenario, policies: list[str], seed: int, workers: int, tick_gpus: int = 0
) -> None:
    console.print(f"[bold]{scenario.name}[/]: {', '.join(policies)}, seed {seed}, {workers} worker(s)")
    start = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, max_tasks_per_child=1) as pool:
        # Longest first: a run that ticks the engine takes several times a baseline's, so it
        # starts at once and the others share the remaining worker(s) meanwhile.
        ordered = sorted(policies, key=lambda p: not p.startswith("seamguard"))
        futures = [pool.submit(run_one, scenario, seed, p) for p in ordered]
        with console.status(f"running {len(policies)} policies"):
            for f in as_completed(futures):
                print(json.dumps(f.result()), flush=True)
    wall = round(time.perf_counter() - start, 1)
    line: dict[str, Any] = {"scenario": scenario.name, "campaign_wall_s": wall, "policies": len(policies),
                            "workers": workers}  # fmt: skip
    if tick_gpus > 0:  # the engine's speed on this machine, so that a slower machine reads as one
        with console.status(f"engine tick at {tick_gpus:,} GPUs (bench/tick.py)"):
            line["engine_tick_p50_ms"] = engine_tick_p50_ms(tick_gpus)
        line["engine_tick_gpus"] = tick_gpus
    print(json.dumps(line))


def engine_tick_p50_ms(gpus: int) -> float:
    """``bench/tick.py``'s median tick at ``gpus``, run as its own process (its own peak memory)."""
    tick = Path(__file__).with_name("tick.py")
    out = subprocess.run([sys.executable, str(tick), "--gpus", str(gpus), "--ticks", "10", "--warmup", "4"],
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    return float(json.loads(out.strip().splitlines()[-1])["tick_p50_ms"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", default="llama3-16k-54d", help="built-in name or YAML file")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="processes (one policy each)")
    parser.add_argument("--skip-scenario", action="store_true", help="only the healthy full-cadence check")
    parser.add_argument("--healthy-node-days", type=float, default=0.0, help="0: skip the healthy check")
    parser.add_argument("--healthy-policies", default="binary,seamguard")
    parser.add_argument(
        "--tick-gpus", type=int, default=16384, help="also time the engine's tick at this size (0: skip)"
    )
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.tick_gpus < 0 or args.tick_gpus % 8:
        parser.error("--tick-gpus must be 0 or a positive multiple of 8")
    console = Console(stderr=True)
    if not args.skip_scenario:
        sweep(console, load_scenario(args.scenario), args.policies.split(","), args.seed, args.workers,
              args.tick_gpus)  # fmt: skip
    if args.healthy_node_days > 0:
        sweep(
            console,
            healthy_scenario(args.healthy_node_days),
            args.healthy_policies.split(","),
            args.seed,
            args.workers,
        )


if __name__ == "__main__":
    main()
