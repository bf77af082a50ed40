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

from seamguard.config import load_config
from seamguard.control.controller import Controller
from seamguard.journal.records import TransitionRecord
from seamguard.synth.evaluate import FaultOutcome, evaluate, median_or_nan
from seamguard.synth.scenarios import SCENARIOS, build

SUDDEN = {"xid79", "hw_thermal", "pcie_downtrain"}


def run(
    seed: int, progress: Progress, scenario_name: str
) -> tuple[list[FaultOutcome], set[str], list[str], int, float]:
    scenario = SCENARIOS[scenario_name]
    _inv, _jobs, topology, fleet = build(scenario, seed)
    controller = Controller(topology, load_config())
    transitions: list[TransitionRecord] = []
    n_ticks = int(scenario.duration_s // scenario.tick_s)
    task = progress.add_task(f"seed {seed}", total=n_ticks)
    now = fleet.start
    for _ in range(n_ticks):
        now += scenario.tick_s
        transitions.extend(controller.tick(now, fleet.batch(now)).transitions)
        progress.advance(task)
    ev = evaluate(fleet.labels(), transitions)
    return list(ev.faults), set(ev.false_entities), list(ev.false_quarantines), ev.detected, scenario.tick_s


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--scenario", default="detect-suite", choices=sorted(SCENARIOS))
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of tables")
    args = parser.parse_args()
    console = Console()
    outcomes: list[FaultOutcome] = []
    false_entities = 0
    false_q: list[str] = []
    detected = 0
    tick_s = 30.0
    with Progress(console=Console(stderr=True), transient=True) as progress:
        for seed in range(1, args.seeds + 1):
            faults, fps, fq, det, tick_s = run(seed, progress, args.scenario)
            outcomes += faults
            false_entities += len(fps)
            false_q += [f"seed{seed}:{e}" for e in fq]
            detected += det
    precision = detected / (detected + false_entities) if detected + false_entities else 1.0
    recall = detected / len(outcomes) if outcomes else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    kinds: dict[str, list[FaultOutcome]] = {}
    for f in outcomes:
        kinds.setdefault(f.label.kind, []).append(f)
    rows = []
    for kind, fs in sorted(kinds.items()):
        hit = [f for f in fs if f.detected_at is not None]
        within_tick = sum(1 for f in hit if (f.delay_s or 0) <= tick_s)
        rows.append(
            {
                "kind": kind,
                "faults": len(fs),
                "detected": len(hit),
                "recall": len(hit) / len(fs),
                "median_delay_s": median_or_nan(f.delay_s for f in hit),
                "median_lead_s": median_or_nan(f.lead_s for f in hit),
                "before_impact": sum(1 for f in hit if (f.lead_s or 0) > 0),
                "within_one_tick": within_tick,
                "sudden": kind in SUDDEN,
            }
        )
    summary = {
        "scenario": args.scenario, "seeds": args.seeds, "precision": round(precision, 4),
        "recall": round(recall, 4), "f1": round(f1, 4), "false_positive_entities": false_entities,
        "false_quarantines_of_confounders": len(false_q), "kinds": rows,
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
    console.print(table)
    console.print(
        f"precision {precision:.3f}  recall {recall:.3f}  F1 {f1:.3f}  false-positive entities {false_entities}  "
        f"false quarantines of benign confounders {len(false_q)} {' '.join(false_q[:5])}"
    )


if __name__ == "__main__":
    main()
