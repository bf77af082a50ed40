"""Disaggregated serving under a degraded inter-pool path (issue 20; docs/twin.md, docs/serving.md).

The twin's built-in ``disagg-serving-path`` scenario (two leaves, a prefill and a decode pool on
each, leaf01's spine uplinks degraded for three hours: ``kv_path_degraded``) played three ways on
the same seeds, each under the ``binary`` reliability policy so that only the router differs:

* ``healthy``: no fault, seamguard's router (``healthy-baseline``: no fault, the baseline router);
* ``baseline``: the fault, least outstanding requests with Envoy's passive outlier ejection;
* ``seamguard``: the fault, ``seamguard.serving.plan_routing`` fed by the path's measured latency,
  jitter and failures and the replicas' states.

Figures are over the fault's window (its onset to its end; the same window in the healthy runs),
means over seeds: goodput (requests within the TTFT and ITL objective over requests offered) and
P95 time to first token. Issue 20's target: seamguard's P95 TTFT within 1.2x the healthy run and
its goodput at least 95 % of it, where the baseline loses more.

    python bench/serving.py [--seeds 3] [--first-seed 0] [--duration-h 6]

Prints a table (rich) and, as its last line, one JSON object with ``goodput_healthy``,
``goodput_baseline``, ``goodput_seamguard``, ``p95_ttft_ms_healthy``, ``p95_ttft_ms_baseline``,
``p95_ttft_ms_seamguard`` (and the healthy baseline's, the failed-transfer shares, the ratios to
healthy, ``seeds`` and ``wall_s``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from seamguard.twin.scenario import load_scenario
from seamguard.twin.sim import Twin
from seamguard.twin.world import build_world

SCENARIO = "disagg-serving-path"
RUNS = (("healthy", "seamguard", False), ("healthy-baseline", "baseline", False),
        ("baseline", "baseline", True), ("seamguard", "seamguard", True))  # fmt: skip
KEYS = ("goodput", "p95_ttft_ms", "p50_ttft_ms", "p99_ttft_ms", "failed_transfer_share", "shed_share")


def run_one(router: str, fault: bool, seed: int, duration_h: float | None) -> dict[str, float]:
    over: dict[str, Any] = {"serving": {"router": router}}
    if duration_h is not None:
        over["duration_h"] = duration_h
    sc = load_scenario(SCENARIO, over)
    window = next(f for f in build_world(sc, seed).faults if f.spec.serving)
    if not fault:
        sc = sc.model_copy(update={"faults": ()})
    twin = Twin(build_world(sc, seed), "binary")
    twin.run()
    assert twin.serving is not None
    return twin.serving.tally.window(window.onset, min(window.end, twin.world.end))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--duration-h", type=float, default=None, help="default: the scenario's (6 h)")
    args = ap.parse_args(argv)
    wall = time.perf_counter()
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    means: dict[str, dict[str, float]] = {}
    for label, router, fault in RUNS:
        per_seed = [run_one(router, fault, s, args.duration_h) for s in seeds]
        means[label] = {k: statistics.fmean(r[k] for r in per_seed) for k in KEYS}
    h = means["healthy"]
    table = Table(title=f"{SCENARIO}: while the path is degraded, seeds {seeds[0]}-{seeds[-1]} (means)")
    for col in ("run", "router", "goodput", "vs healthy", "P50 TTFT ms", "P95 TTFT ms", "P95 vs healthy",
                "P99 TTFT ms", "failed transfers"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("run", "router") else "right")
    for label, router, _ in RUNS:
        m = means[label]
        table.add_row(
            label, router, f"{m['goodput']:.4f}", f"{m['goodput'] / h['goodput']:.3f}", f"{m['p50_ttft_ms']:.0f}",
            f"{m['p95_ttft_ms']:.0f}", f"{m['p95_ttft_ms'] / h['p95_ttft_ms']:.2f}x", f"{m['p99_ttft_ms']:.0f}",
            f"{m['failed_transfer_share']:.2%}",
        )  # fmt: skip
    Console(stderr=True, width=150).print(table)
    out: dict[str, Any] = {"scenario": SCENARIO, "seeds": len(seeds)}
    for label, key in (("healthy", "healthy"), ("healthy-baseline", "healthy_baseline"),
                       ("baseline", "baseline"), ("seamguard", "seamguard")):  # fmt: skip
        out[f"goodput_{key}"] = round(means[label]["goodput"], 4)
        out[f"p95_ttft_ms_{key}"] = round(means[label]["p95_ttft_ms"], 1)
        out[f"failed_transfer_share_{key}"] = round(means[label]["failed_transfer_share"], 4)
    for key in ("baseline", "seamguard"):
        out[f"goodput_ratio_{key}"] = round(means[key]["goodput"] / h["goodput"], 4)
        out[f"p95_ttft_ratio_{key}"] = round(means[key]["p95_ttft_ms"] / h["p95_ttft_ms"], 3)
    out["wall_s"] = round(time.perf_counter() - wall, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
