"""What a world change costs the daemon at fleet scale, the engine and the safety layer together.

Prints one JSON line: for a change of jobs only (``model.world.with_jobs``: one job ends and a
new one starts on its nodes) and for a change of the inventory (one node removed: the topology
rebuilt and matched by id, ``world_change``), the median and worst time in ms of making the new
topology, ``Controller.apply_world`` and ``SafetyLayer.carry_over``, over ``--repeats`` changes
made after ``--warmup`` ticks of telemetry (so every memory has something to carry).

    python bench/world.py --gpus 131072
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np

from seamguard.config import load_config
from seamguard.control.controller import Controller
from seamguard.control.engine_world import apply_world
from seamguard.control.safety import SafetyLayer, safety_from_mapping
from seamguard.model.inventory import Inventory
from seamguard.model.topology import build_topology
from seamguard.model.world import WorldChange, with_jobs, world_change
from seamguard.twin.suite import build, scale_scenario


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gpus", type=int, default=16384, help="fleet size in GPUs (multiple of 8)")
    parser.add_argument("--warmup", type=int, default=4, help="ticks of telemetry before the changes")
    parser.add_argument("--repeats", type=int, default=3, help="changes timed of each kind")
    args = parser.parse_args()
    if args.gpus <= 0 or args.gpus % 8:
        parser.error("--gpus must be a positive multiple of 8")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    scenario = scale_scenario(args.gpus)
    inventory, _jobs, topology, fleet = build(scenario, 1)
    config = load_config()
    controller = Controller(topology, config)
    safety = SafetyLayer(topology, safety_from_mapping())
    now = fleet.start
    for _ in range(args.warmup):
        now += scenario.tick_s
        controller.tick(now, fleet.batch(now))
    jobs_ms: list[float] = []
    nodes_ms: list[float] = []
    for k in range(args.repeats):
        jobs = controller.topology.jobs
        t0 = time.perf_counter()
        got = with_jobs(controller.topology, (*jobs[1:], replace(jobs[0], job=f"bench-{k}")))
        assert got is not None
        _apply(controller, safety, got[1], now)
        jobs_ms.append((time.perf_counter() - t0) * 1000)
        inventory = Inventory(inventory.nodes[:-1])  # the last node leaves
        t0 = time.perf_counter()
        kept = {r.node for r in inventory.nodes}
        left_jobs = tuple(
            replace(j, nodes=tuple(n for n in j.nodes if n in kept)) for j in controller.topology.jobs
        )
        new = build_topology(inventory, tuple(j for j in left_jobs if j.nodes))
        _apply(controller, safety, world_change(controller.topology, new), now)
        nodes_ms.append((time.perf_counter() - t0) * 1000)
    print(json.dumps({
        "gpus": args.gpus, "entities": topology.n_entities, "jobs": len(topology.jobs),
        "jobs_change_p50_ms": _ms(jobs_ms, 50), "jobs_change_max_ms": _ms(jobs_ms, 100),
        "node_change_p50_ms": _ms(nodes_ms, 50), "node_change_max_ms": _ms(nodes_ms, 100),
    }))  # fmt: skip


def _apply(controller: Controller, safety: SafetyLayer, change: WorldChange, now: float) -> None:
    apply_world(controller, change)
    safety.carry_over(change, now)


def _ms(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1)


if __name__ == "__main__":
    main()
