"""Engine tick latency and memory at fleet scale.

Prints one JSON line: gpus, series, samples per tick, tick p50/p99 in ms (ingest + score +
classify + journal; generating the synthetic telemetry is not timed) and peak RSS in MB
(the whole process, generator included, so it over-states the engine alone).

    python bench/tick.py --gpus 16384
    python bench/tick.py --gpus 131072 --ticks 12
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress

from seamguard.config import load_config
from seamguard.control.controller import Controller
from seamguard.journal.sqlite import SqliteJournal
from seamguard.model.catalog import SignalKind, signal_catalog
from seamguard.synth.scenarios import build, scale_scenario


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
    args = parser.parse_args()
    if args.gpus <= 0 or args.gpus % 8:
        parser.error("--gpus must be a positive multiple of 8")
    if args.tick_s is not None and not args.tick_s > 0:
        parser.error("--tick-s must be positive")

    scenario = scale_scenario(args.gpus)
    _inv, _jobs, topology, fleet = build(scenario, args.seed)
    catalog = signal_catalog()
    series = sum(topology.count(s.entity) for s in catalog.signals if s.kind is not SignalKind.EVENT)
    durations: list[float] = []
    samples: list[int] = []
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
                t0 = time.perf_counter()
                controller.tick(now, batch)
                elapsed = time.perf_counter() - t0
                if i >= args.warmup:
                    durations.append(elapsed * 1000)
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
                "peak_rss_mb": round(peak_mb, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
