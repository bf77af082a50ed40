"""``seamguard simulate``: run policies side by side in the twin, print the comparison, write the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from seamguard.errors import InputError
from seamguard.twin.campaign import run_campaign, run_seconds
from seamguard.twin.report import require_plots, write_report
from seamguard.twin.scenario import Scenario
from seamguard.twin.summary import summarize, write_summary


def _results_table(summary: dict[str, Any]) -> Table:
    seeds = len(summary["seeds"])
    table = Table(
        title=f"{summary['scenario']}: {summary['gpus']:,} GPUs, {summary['duration_h']:g} h, {seeds} seed(s)"
    )
    for col in (
        "policy",
        "ETTR",
        "95% CI",
        "useful GPU-h",
        "largest loss",
        "false quar.",
        "missed gray",
        "median lead",
    ):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for name, p in summary["policies"].items():
        lo, hi = p["ettr"]["ci95"]
        worst = max(p["lost_share"].items(), key=lambda kv: kv[1] or 0.0)
        lead = p["median_detection_lead_s"]
        table.add_row(
            name, f"{p['ettr']['mean']:.4f}", f"{lo:.4f}–{hi:.4f}", f"{p['useful_gpu_hours']:,.0f}",
            f"{worst[0].replace('_', ' ')} {100 * (worst[1] or 0):.1f}%", str(p["false_quarantines"]),
            str(p["missed_gray_failures"]), "-" if lead is None else f"{lead / 60:+.1f} min",
        )  # fmt: skip
    return table


def _serving_table(summary: dict[str, Any]) -> Table | None:
    """A disaggregated deployment's figures per policy (its router), whole run and while a
    serving path's fault was on; None when the scenario has no serving section."""
    rows = {name: p["serving"] for name, p in summary["policies"].items() if p.get("serving")}
    if not rows:
        return None
    faulted = any("goodput_fault" in s for s in rows.values())
    table = Table(title="serving (disaggregated prefill/decode)")
    cols = ["policy", "goodput", "P50 TTFT", "P95 TTFT", "P99 TTFT", "shed", "failed KV"]
    cols += ["goodput (fault)", "P95 TTFT (fault)"] if faulted else []
    for col in cols:
        table.add_column(col, justify="left" if col == "policy" else "right")

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:,.0f} ms"

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.2f}%"

    for name, s in rows.items():
        cells = [name, pct(s.get("goodput")), ms(s.get("p50_ttft_ms")), ms(s.get("p95_ttft_ms")),
                 ms(s.get("p99_ttft_ms")), pct(s.get("shed_share")), pct(s.get("failed_transfer_share"))]  # fmt: skip
        if faulted:
            cells += [pct(s.get("goodput_fault")), ms(s.get("p95_ttft_ms_fault"))]
        table.add_row(*cells)
    return table


class SimHours(ProgressColumn):
    """Simulated hours done of all runs' total: the bar counts seconds, people read hours."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.completed / 3600:,.1f}/{(task.total or 0) / 3600:,.1f} sim-h")


def run_simulate(
    scenario: Scenario,
    policies: tuple[str, ...],
    seeds: tuple[int, ...],
    out: Path,
    console: Console,
    *,
    engine: str = "local",
    workers: int | None = None,
) -> dict[str, Any]:
    require_plots()  # before the campaign, not after it
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(str(out), f"cannot create the output directory: {exc.strerror}") from None
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), SimHours(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task(scenario.name, total=run_seconds(scenario) * len(policies) * len(seeds))
        done: dict[tuple[str, int], float] = {}  # per run: seconds already counted

        def on_step(policy: str, seed: int, seconds: float) -> None:
            delta = seconds - done.get((policy, seed), 0.0)
            done[policy, seed] = seconds
            progress.update(task, advance=delta, description=f"{scenario.name}: {policy}, seed {seed}")

        results = run_campaign(scenario, policies, seeds, on_step, engine=engine, workers=workers)
    summary = summarize(scenario, results)
    write_summary(summary, out / "summary.json")
    written = write_report(scenario, summary, results, out)
    console.print(_results_table(summary))
    serving = _serving_table(summary)
    if serving is not None:
        console.print(serving)
    # Paths to copy: whole lines whatever the console's width (a log or a pipe has no terminal).
    console.print(f"wrote {out / 'summary.json'}, " + ", ".join(str(p) for p in written), soft_wrap=True)
    console.print(f"[bold]report:[/] {(out / 'report.html').resolve()}", soft_wrap=True)
    return summary
