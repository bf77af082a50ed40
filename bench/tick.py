"""Engine tick latency and memory at fleet scale.

Prints one JSON line: gpus, series, samples per tick, tick p50/p99 in ms (ingest + score +
classify + journal; generating the synthetic telemetry is not timed) and peak RSS in MB
(the whole process, generator included, so it over-states the engine alone).

With ``--churn F`` the job table changes before every timed tick as the scheduler's would: a
share F of the jobs end and as many new ones start on their nodes, and F/2 of the jobs shrink by
a node while as many grow by one. The world change (``model.world.with_jobs``, the engine's
carry-over, the new placement) is timed with the tick; its own cost is reported apart as
world_p50_ms/world_p99_ms.

    python bench/tick.py --gpus 16384
    python bench/tick.py --gpus 131072 --ticks 12
    python bench/tick.py --gpus 131072 --ticks 12 --churn 0.01
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.progress import Progress

from seamguard.config import load_config
from seamguard.control.controller import Controller
from seamguard.control.engine_world import apply_world
from seamguard.journal.sqlite import SqliteJournal
from seamguard.model.catalog import SignalKind, signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import JobRecord
from seamguard.model.topology import Topology
from seamguard.model.world import with_jobs
from seamguard.twin.suite import build, scale_scenario


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gpus", type=int, default=16384, help="fleet size in GPUs (multiple of 8)")
    parser.add_argument("--ticks", type=int, default=20, help="timed ticks after warm-up")
    parser.add_argument("--warmup", type=int, default=8, help="untimed ticks that fill the trend window")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--tick-s", type=float, default=None, help="engine tick (default: the scenario's 30 s)"
    )
    parser.add_argument(
        "--churn",
        type=float,
        default=0.0,
        help="share of jobs replaced each timed tick (0: a fixed job table)",
    )
    args = parser.parse_args()
    if args.gpus <= 0 or args.gpus % 8:
        parser.error("--gpus must be a positive multiple of 8")
    if not 0.0 <= args.churn <= 1.0:
        parser.error("--churn must be between 0 and 1")
    if args.tick_s is not None and not args.tick_s > 0:
        parser.error("--tick-s must be positive")

    scenario = scale_scenario(args.gpus)
    _inv, _jobs, topology, fleet = build(scenario, args.seed)
    catalog = signal_catalog()
    series = sum(topology.count(s.entity) for s in catalog.signals if s.kind is not SignalKind.EVENT)
    durations: list[float] = []
    world_ms: list[float] = []
    samples: list[int] = []
    rng = np.random.default_rng(args.seed)
    original = topology
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory() as tmp:
        journal = SqliteJournal(Path(tmp) / "bench.sqlite")
        config = load_config()
        tick_s = scenario.tick_s if args.tick_s is None else args.tick_s
        config = config.model_copy(update={"engine": config.engine.model_copy(update={"tick_s": tick_s})})
        controller = Controller(topology, config, journal=journal, catalog=catalog)
        now = fleet.start
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"ticking {args.gpus} GPUs", total=args.warmup + args.ticks)
            for i in range(args.warmup + args.ticks):
                now += tick_s
                batch = fleet.batch(now)
                churning = args.churn > 0 and i >= args.warmup
                if churning:
                    jobs = churned(controller.topology.jobs, args.churn, rng, f"c{i}-")
                    batch = batch.reindexed(
                        job_back(original, controller.topology, jobs)
                    )  # not timed: the source's side
                t0 = time.perf_counter()
                if churning:
                    got = with_jobs(controller.topology, jobs)
                    assert got is not None
                    change = got[1]
                    apply_world(controller, change)
                    controller.set_placement({j.job: j.nodes for j in change.new.jobs})
                t1 = time.perf_counter()
                controller.tick(now, batch)
                elapsed = time.perf_counter() - t0
                if i >= args.warmup:
                    durations.append(elapsed * 1000)
                    world_ms.append((t1 - t0) * 1000)
                    samples.append(len(batch))
                progress.advance(task)
        journal.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "gpus": args.gpus,
                "tick_s": tick_s,
                "series": series,
                "samples_per_tick": int(np.median(samples)),
                "tick_p50_ms": round(float(np.percentile(durations, 50)), 1),
                "tick_p99_ms": round(float(np.percentile(durations, 99)), 1),
                **(
                    {
                        "churn": args.churn,
                        "world_p50_ms": round(float(np.percentile(world_ms, 50)), 1),
                        "world_p99_ms": round(float(np.percentile(world_ms, 99)), 1),
                    }
                    if args.churn > 0
                    else {}
                ),
                "peak_rss_mb": round(peak_mb, 1),
            }
        )
    )


def churned(
    jobs: tuple[JobRecord, ...], share: float, rng: np.random.Generator, prefix: str
) -> tuple[JobRecord, ...]:
    """The next poll's job table: ``share`` of the jobs ended and replaced by new ones on their
    nodes; ``share / 2`` shrunk by their last node, as many grown by one of the nodes freed."""
    out = list(jobs)
    n = max(1, round(share * len(out)))
    for k, i in enumerate(rng.choice(len(out), size=min(n, len(out)), replace=False).tolist()):
        out[i] = replace(out[i], job=f"{prefix}{k}")
    multi = [i for i, j in enumerate(out) if len(j.nodes) > 1]
    moves = min(max(1, n // 2), len(multi) // 2)
    picked = rng.choice(multi, size=2 * moves, replace=False).tolist() if moves else []
    for shrink, grow in zip(picked[:moves], picked[moves:], strict=True):
        freed = out[shrink].nodes[-1]
        out[shrink] = replace(out[shrink], nodes=out[shrink].nodes[:-1])
        out[grow] = replace(out[grow], nodes=(*out[grow].nodes, freed))
    return tuple(out)


def job_back(original: Topology, current: Topology, jobs: tuple[JobRecord, ...]) -> npt.NDArray[np.int64]:
    """The generator indexes by the first world: its jobs' rows go to the same job now, or are dropped."""
    back = np.arange(original.n_entities, dtype=np.int64)
    base = int(current.members[EntityKind.JOB][0]) if current.count(EntityKind.JOB) else current.n_entities
    where = {j.job: base + i for i, j in enumerate(jobs)}
    members = original.members[EntityKind.JOB]
    back[members] = [where.get(j.job, -1) for j in original.jobs]
    return back


if __name__ == "__main__":
    main()
