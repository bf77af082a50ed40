"""Detection quality of the engine on the labelled scenario suite.

Runs the `detect-suite` scenario (every fault kind several times, plus benign confounders)
through the real engine for several seeds and prints precision, recall, F1 and the median
detection delay and lead time per fault kind. Definitions: seamguard/synth/evaluate.py.

    python bench/detect.py --seeds 3
"""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from seamguard.synth.evaluate import median_or_nan, pooled, run_scenario
from seamguard.synth.faults import SUDDEN_KINDS
from seamguard.synth.scenarios import SCENARIOS


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3, help="runs with seeds 1..N")
    parser.add_argument("--scenario", default="detect-suite", choices=sorted(SCENARIOS))
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of tables")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    scenario = SCENARIOS[args.scenario]
    n_ticks = int(scenario.duration_s // scenario.tick_s)
    with Progress(console=Console(stderr=True), transient=True) as progress:
        runs = []
        for seed in range(1, args.seeds + 1):
            task = progress.add_task(f"seed {seed}", total=n_ticks)
            runs.append(run_scenario(scenario, seed, on_tick=lambda task=task: progress.advance(task)))
    ev = pooled(runs)
    rows = []
    for kind, fs in sorted(ev.by_kind().items()):
        hit = [f for f in fs if f.detected_at is not None]
        rows.append(
            {
                "kind": kind,
                "faults": len(fs),
                "detected": len(hit),
                "recall": len(hit) / len(fs),
                "median_delay_s": median_or_nan(f.delay_s for f in hit),
                "median_lead_s": median_or_nan(f.lead_s for f in hit),
                "before_impact": sum(1 for f in hit if (f.lead_s or 0) > 0),
                "within_one_tick": sum(1 for f in hit if (f.delay_s or 0) <= scenario.tick_s),
                "sudden": kind in SUDDEN_KINDS,
            }
        )
    summary = {
        "scenario": args.scenario, "seeds": args.seeds, "precision": round(ev.precision, 4),
        "recall": round(ev.recall, 4), "f1": round(ev.f1, 4), "false_positive_entities": len(ev.false_entities),
        "false_quarantines_of_confounders": len(ev.false_quarantines), "kinds": rows,
    }  # fmt: skip
    if args.json:
        print(json.dumps(summary))
        return
    table = Table(title=f"detection on '{args.scenario}', {args.seeds} seeds")
    for col in (
        "fault kind",
        "faults",
        "detected",
        "recall",
        "median delay",
        "median lead",
        "before impact",
        "≤ 1 tick",
    ):
        table.add_column(col, justify="right" if col != "fault kind" else "left")
    for r in rows:
        table.add_row(
            r["kind"], str(r["faults"]), str(r["detected"]), f"{r['recall']:.2f}", f"{r['median_delay_s']:.0f} s",
            f"{r['median_lead_s'] / 60:+.1f} min", f"{r['before_impact']}/{r['detected']}",
            f"{r['within_one_tick']}/{r['detected']}" if r["sudden"] else "-",
        )  # fmt: skip
    console = Console()
    console.print(table)
    console.print(
        f"precision {ev.precision:.3f}  recall {ev.recall:.3f}  F1 {ev.f1:.3f}  "
        f"false-positive entities {len(ev.false_entities)}  false quarantines of benign confounders "
        f"{len(ev.false_quarantines)} {' '.join(ev.false_quarantines[:5])}"
    )


if __name__ == "__main__":
    main()
