"""`seamguard score` on a large recorded file: does memory stay flat as the file grows?

Writes the synthetic fleet's telemetry in the contract's CSV to a temporary directory (not
timed), then runs the same code path as ``seamguard score`` over it in this process and prints
one JSON line: file size, rows, ticks, seconds, rows/s and the peak RSS of the scoring step
alone (a fresh child process, so the generator's memory is not counted).

    python bench/replay.py --gpus 16384 --ticks 100     # ~1 GB of CSV
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from seamguard.model.catalog import signal_catalog
from seamguard.replay_run import run_score
from seamguard.telemetry.writer import TelemetryCsvWriter
from seamguard.twin.cluster import write_inventory_csv, write_jobs_csv
from seamguard.twin.suite import build, scale_scenario


def _score(tmp: Path, queue: mp.Queue[dict[str, float]]) -> None:
    t0 = time.perf_counter()
    summary = run_score(
        inventory=tmp / "inventory.csv", telemetry=[tmp / "telemetry.csv"], out=tmp / "transitions.csv",
        jobs=tmp / "jobs.csv", config_path=None, journal_path=tmp / "journal.sqlite", tick_s=None,
        console=Console(stderr=True, quiet=True),
    )  # fmt: skip
    queue.put(
        {
            "seconds": time.perf_counter() - t0,
            "ticks": summary.ticks,
            "transitions": summary.transitions,
            "rows": summary.ingest.accepted,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gpus", type=int, default=16384, help="fleet size in GPUs (multiple of 8)")
    parser.add_argument("--ticks", type=int, default=100, help="ticks of telemetry to record")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    scenario = scale_scenario(args.gpus)
    inventory, jobs, topology, fleet = build(scenario, args.seed)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        write_inventory_csv(inventory, tmp / "inventory.csv")
        write_jobs_csv(jobs, tmp / "jobs.csv")
        with (
            TelemetryCsvWriter(tmp / "telemetry.csv", topology, signal_catalog()) as writer,
            Progress(console=Console(stderr=True), transient=True) as progress,
        ):
            task = progress.add_task("recording telemetry", total=args.ticks)
            for i in range(args.ticks):
                writer.write(fleet.batch(fleet.start + scenario.tick_s * (i + 1)))
                progress.advance(task)
        size_mb = (tmp / "telemetry.csv").stat().st_size / 1e6
        ctx = mp.get_context("spawn")
        queue: mp.Queue[dict[str, float]] = ctx.Queue()
        child = ctx.Process(target=_score, args=(tmp, queue))
        child.start()
        result = queue.get()
        child.join()
    print(
        json.dumps(
            {
                "gpus": args.gpus,
                "file_mb": round(size_mb, 1),
                "rows": int(result["rows"]),
                "ticks": int(result["ticks"]),
                "transitions": int(result["transitions"]),
                "seconds": round(result["seconds"], 1),
                "rows_per_s": int(result["rows"] / result["seconds"]),
                "peak_rss_mb": round(result["peak_rss_mb"], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
