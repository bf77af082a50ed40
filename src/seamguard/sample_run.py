"""``seamguard simulate --sample N``: the four policies on N sampled scenarios, side by side.

Scenario ``i`` is drawn from seed ``S + i`` and runs on the world of that same seed. With ``--out``
each drawn scenario is written as YAML first (``--scenario FILE --seeds 1 --first-seed SEED``
replays it), then ``results.json``: one row per scenario and the overall comparison.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from seamguard.errors import InputError
from seamguard.simulate_run import SimHours
from seamguard.twin.generalise import Comparison, compare_runs
from seamguard.twin.sampler import Bounds, check_sample, sample_scenario, sample_yaml

RESULTS_SCHEMA = 1


def rows_table(cmp: Comparison) -> Table:
    """Per scenario: what was drawn, and each policy's ETTR (the best of the non-oracle in bold)."""
    table = Table(title=f"{len(cmp.rows)} sampled scenario(s)")
    for col in ("seed", "scenario", "GPUs", "spares", "restart", "hours", "faults and confounders"):
        table.add_column(col, justify="left" if col in ("scenario", "faults and confounders") else "right")
    for p in cmp.policies:
        table.add_column(p, justify="right")
    for r in cmp.rows:
        f = r.facts
        real = [p for p in cmp.policies if p != "oracle"]
        best = max((r.ettr[p] for p in real), default=None)
        cells = [
            f"[bold]{r.ettr[p]:.4f}[/]" if p != "oracle" and r.ettr[p] == best else f"{r.ettr[p]:.4f}"
            for p in cmp.policies
        ]
        table.add_row(
            str(r.seed), f.name, f"{f.gpus:,}", str(f.spares), f"{f.restart_min:.1f} min", f"{f.duration_h:g}",
            ", ".join(f.kinds), *cells,
        )  # fmt: skip
    return table


def overall_table(cmp: Comparison) -> Table:
    share = cmp.share_at_least_best_baseline()
    title = "overall" + ("" if share is None else f": seamguard >= the better baseline in {100 * share:.0f}%")
    table = Table(title=title)
    for col in ("policy", "mean ETTR", "mean ratio to oracle", "false quarantines"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for p in cmp.policies:
        ratio = cmp.mean_ratio_to_oracle(p)
        table.add_row(
            p,
            f"{cmp.mean_ettr(p):.4f}",
            "-" if ratio is None else f"{ratio:.4f}",
            str(cmp.false_quarantines(p)),
        )
    return table


def shortfalls_table(cmp: Comparison) -> Table | None:
    """Where seamguard ended below the better baseline, and which loss grew most against it."""
    rows = cmp.shortfalls()
    if not rows:
        return None
    table = Table(title="where seamguard fell short of the better baseline")
    for col in ("seed", "baseline", "ETTR gap", "loss that grew most", "by"):
        table.add_column(col, justify="right" if col in ("seed", "ETTR gap", "by") else "left")
    for s in rows:
        table.add_row(str(s.seed), s.baseline, f"{s.gap:.4f}", s.bucket, f"{100 * s.extra:.2f}% of reserved")
    return table


def results_json(cmp: Comparison) -> dict[str, Any]:
    return {
        "schema": RESULTS_SCHEMA,
        "rows": [
            {"seed": r.seed, "scenario": r.facts.name, "gpus": r.facts.gpus, "spares": r.facts.spares,
             "restart_min": r.facts.restart_min, "duration_h": r.facts.duration_h, "kinds": list(r.facts.kinds),
             "ettr": r.ettr, "false_quarantines": r.false_quarantines, "wall_s": r.wall_s}
            for r in cmp.rows
        ],
        "overall": cmp.to_json(),
    }  # fmt: skip


def run_sampled(
    count: int,
    first_seed: int,
    policies: tuple[str, ...],
    console: Console,
    *,
    out: Path | None = None,
    workers: int | None = None,
    bounds: Bounds | None = None,
) -> Comparison:
    check_sample(count, first_seed)
    seeds = list(range(first_seed, first_seed + count))
    scenarios = [sample_scenario(s, bounds) for s in seeds]
    if out is not None:
        try:
            (out / "scenarios").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(str(out), f"cannot create the output directory: {exc.strerror}") from None
        for seed, sc in zip(seeds, scenarios, strict=True):
            (out / "scenarios" / f"{sc.name}.yaml").write_text(sample_yaml(seed, bounds), encoding="utf-8")
    total = sum(sc.duration_s for sc in scenarios) * len(policies)
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), SimHours(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task(f"{count} sampled scenario(s)", total=total)
        done: dict[tuple[str, int], float] = {}
        length = {seed: sc.duration_s for seed, sc in zip(seeds, scenarios, strict=True)}
        finished: list[tuple[str, int]] = []

        def on_step(policy: str, seed: int, seconds: float) -> None:
            delta = seconds - done.get((policy, seed), 0.0)
            done[policy, seed] = seconds
            progress.update(task, advance=delta, description=f"sample {seed}: {policy}")
            if seconds >= length[seed] - 1e-3 and delta > 0:  # a line per finished run: logs show it too
                finished.append((policy, seed))
                progress.console.print(
                    f"{len(finished)}/{len(length) * len(policies)} runs: sample {seed}, {policy}"
                )

        cmp = compare_runs(scenarios, seeds, policies, on_step, workers=workers)
    console.print(rows_table(cmp))
    short = shortfalls_table(cmp)
    if short is not None:
        console.print(short)
    console.print(overall_table(cmp))
    if out is not None:
        tmp = out / "results.json.tmp"
        tmp.write_text(json.dumps(results_json(cmp), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        tmp.replace(out / "results.json")
        console.print(  # whole: the paths stay copyable
            f"wrote {out / 'results.json'} and {len(scenarios)} scenario file(s) in {out / 'scenarios'}",
            soft_wrap=True,
        )
    return cmp
