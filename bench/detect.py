"""Detection quality of the engine on two labelled suites.

* synth: the `detect-suite` scenario (seven of the twin's fault kinds several times, plus benign
  confounders) from seamguard.twin.suite and the twin's labelled generator (seamguard.twin.labelled),
  the generator the engine was developed against;
* field: seamguard.fieldsim, written apart from it with its own fleet, noise, delivery and
  fault shapes, to measure detection on telemetry the engine was not tuned to.

Prints precision, recall and the median detection delay and lead time per fault kind; for the
field suite also false actions and the benign confounders they violated. Definitions:
seamguard/twin/detection.py and seamguard/fieldsim/evaluate.py.

    python bench/detect.py --seeds 3                      # both suites
    python bench/detect.py --suite field --field-seeds 1,2,3 --tick 30
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from seamguard.fieldsim import evaluate as field
from seamguard.fieldsim.suite import DEFAULT_TICK_S, SUITE_DURATION_S, TUNING_SEEDS
from seamguard.twin.detection import median_or_nan, pooled, run_scenario
from seamguard.twin.suite import SCENARIOS

EXAMPLES = 8  # false-positive entities listed in the summary


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds like 1,2,3, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("no seeds given")
    return seeds


def _synth(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    scenario = SCENARIOS[args.scenario]
    n_ticks = int(scenario.duration_s // scenario.tick_s)
    runs = []
    for seed in range(1, args.seeds + 1):
        task = progress.add_task(f"synth seed {seed}", total=n_ticks)
        runs.append(run_scenario(scenario, seed, on_tick=_advance(progress, task)))
    ev = pooled(runs)
    rows = []
    for kind, fs in sorted(ev.by_kind().items()):
        hit = [f for f in fs if f.detected]
        rows.append(
            _kind_row(kind, fs, hit)
            | {
                "within_one_tick": sum(1 for f in hit if (f.delay_s or 0) <= scenario.tick_s),
                "sudden": all(f.sudden for f in fs),
            }
        )
    return {
        "scenario": args.scenario, "seeds": args.seeds, "precision": round(ev.precision, 4),
        "recall": round(ev.recall, 4), "f1": round(ev.f1, 4), "false_positive_entities": len(ev.false_entities),
        "false_quarantines_of_confounders": len(ev.false_quarantines), "kinds": rows,
        "false_quarantines": list(ev.false_quarantines[:5]),
    }  # fmt: skip


def _field(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    duration = args.field_hours * 3600.0
    n_ticks = field.n_ticks(duration, args.tick)
    runs = []
    for seed in args.field_seeds:
        task = progress.add_task(f"field seed {seed}", total=n_ticks)
        ev = field.run_field(seed, duration_s=duration, tick_s=args.tick, on_tick=_advance(progress, task))
        runs.append((f"seed{seed}", ev))
    ev = field.pooled(runs)
    rows = []
    for kind, fs in ev.by_kind().items():
        hit = [f for f in fs if f.detected_at is not None]
        rows.append(
            _kind_row(kind, fs, hit)
            | {
                "on_target": sum(1 for f in fs if f.on_target_at is not None),
                "median_on_target_delay_s": median_or_nan(
                    None if f.on_target_at is None else f.on_target_at - f.label.onset for f in fs
                ),
                "sudden": fs[0].label.sudden,
                "first": [f"{f.first_entity} {f.first_state}: {f.first_reason}" for f in hit],
            }
        )
    by_state: dict[str, int] = {}
    for h in ev.false_entities:
        by_state[h.state] = by_state.get(h.state, 0) + 1
    examples = sorted(ev.false_entities, key=lambda h: (h.state not in field.ACTION_STATES, h.entity))
    return {
        "suite": "field", "seeds": list(args.field_seeds), "tick_s": args.tick, "hours": args.field_hours,
        "precision": round(ev.precision, 4), "recall": round(ev.recall, 4),
        "false_positive_entities": len(ev.false_entities), "false_positive_states": by_state,
        "false_actions": len(ev.false_actions), "confounders_violated": list(ev.violated), "kinds": rows,
        "false_examples": [{"entity": h.entity, "state": h.state, "reason": h.reason} for h in examples[:EXAMPLES]],
    }  # fmt: skip


def _kind_row(kind: str, faults: Sequence[Any], hit: Sequence[Any]) -> dict[str, Any]:
    """What both suites report per fault kind (their outcomes share these fields)."""
    return {
        "kind": kind,
        "faults": len(faults),
        "detected": len(hit),
        "recall": len(hit) / len(faults),
        "median_delay_s": median_or_nan(f.delay_s for f in hit),
        "median_lead_s": median_or_nan(f.lead_s for f in hit),
        "before_impact": sum(1 for f in hit if (f.lead_s or 0) > 0),
    }


def _secs(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.0f} s"


def _mins(x: float) -> str:
    return "-" if math.isnan(x) else f"{x / 60:+.1f} min"


def _advance(progress: Progress, task: Any) -> Callable[[], None]:
    return lambda: progress.advance(task)


def _print_synth(console: Console, r: dict[str, Any]) -> None:
    table = Table(title=f"synth: detection on '{r['scenario']}', {r['seeds']} seeds")
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
    for k in r["kinds"]:
        table.add_row(
            k["kind"], str(k["faults"]), str(k["detected"]), f"{k['recall']:.2f}", f"{k['median_delay_s']:.0f} s",
            f"{k['median_lead_s'] / 60:+.1f} min", f"{k['before_impact']}/{k['detected']}",
            f"{k['within_one_tick']}/{k['detected']}" if k["sudden"] else "-",
        )  # fmt: skip
    console.print(table)
    console.print(
        f"precision {r['precision']:.3f}  recall {r['recall']:.3f}  F1 {r['f1']:.3f}  "
        f"false-positive entities {r['false_positive_entities']}  false quarantines of benign confounders "
        f"{r['false_quarantines_of_confounders']} {' '.join(r['false_quarantines'])}"
    )


def _print_field(console: Console, r: dict[str, Any]) -> None:
    seeds = ",".join(str(s) for s in r["seeds"])
    table = Table(
        title=f"field: {r['hours']:g} h at {r['tick_s']:g} s ticks, seeds {seeds}",
        caption="* sudden: impact is onset, no lead is possible. On target: the fault's own entity went bad "
        "(detection counts its own entity or hardware in its reach; a job slowing names no part)",
    )
    for col in ("fault kind", "faults", "detected", "recall", "median delay", "median lead", "before impact",
                "on target", "delay on target"):  # fmt: skip
        table.add_column(col, justify="right" if col != "fault kind" else "left")
    for k in r["kinds"]:
        table.add_row(
            k["kind"] + ("*" if k["sudden"] else ""), str(k["faults"]), str(k["detected"]),
            f"{k['recall']:.2f}", _secs(k["median_delay_s"]), _mins(k["median_lead_s"]),
            f"{k['before_impact']}/{k['detected']}", f"{k['on_target']}/{k['faults']}",
            _secs(k["median_on_target_delay_s"]),
        )  # fmt: skip
    console.print(table)
    states = ", ".join(f"{n} {s}" for s, n in sorted(r["false_positive_states"].items()))
    violated = r["confounders_violated"]
    console.print(
        f"precision {r['precision']:.3f}  recall {r['recall']:.3f}  false-positive entities "
        f"{r['false_positive_entities']} ({states or 'none'})  false actions {r['false_actions']}  "
        f"confounders violated {len(violated)}: {', '.join(violated) or 'none'}"
    )
    for h in r["false_examples"]:
        console.print(f"  {h['entity']} -> {h['state']}: {h['reason']}", highlight=False)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--suite", choices=("synth", "field", "both"), default="both")
    parser.add_argument("--seeds", type=int, default=3, help="synth: runs with seeds 1..N")
    parser.add_argument(
        "--scenario", default="detect-suite", choices=sorted(SCENARIOS), help="synth scenario"
    )
    parser.add_argument("--field-seeds", type=_seeds, default=TUNING_SEEDS, help="field: seeds, e.g. 1,2,3")
    parser.add_argument("--tick", type=float, default=DEFAULT_TICK_S, help="field: engine tick in seconds")
    parser.add_argument(
        "--field-hours", type=float, default=SUITE_DURATION_S / 3600.0, help="field: run length"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if not args.tick > 0 or not args.field_hours * 3600 >= 600:
        parser.error("--tick must be positive and --field-hours at least 1/6")
    report: dict[str, Any] = {}
    with Progress(console=Console(stderr=True), transient=True) as progress:
        if args.suite in ("synth", "both"):
            report["synth"] = _synth(args, progress)
        if args.suite in ("field", "both"):
            report["field"] = _field(args, progress)
    if args.json:
        print(json.dumps(report))
        return
    console = Console()
    if "synth" in report:
        _print_synth(console, report["synth"])
    if "field" in report:
        _print_field(console, report["field"])


if __name__ == "__main__":
    main()
