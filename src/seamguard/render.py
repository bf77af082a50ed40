"""Rich renderings shared by the CLI commands."""

from __future__ import annotations

import math

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from seamguard.control.controller import Controller
from seamguard.diagnose.explain import Explanation, valued
from seamguard.diagnose.history import JobDiagnosis
from seamguard.model.states import State
from seamguard.ops.jobs import job_rows
from seamguard.timeparse import format_time

STATE_STYLE: dict[State, str] = {
    State.HEALTHY: "green",
    State.DEGRADED: "yellow",
    State.RECOVERY_UNSAFE: "magenta",
    State.QUARANTINE: "red",
    State.HARMFUL: "bright_red",
    State.FAILED: "bold red",
    State.UNKNOWN: "dim",
}


def state_text(label: str) -> Text:
    state = State.parse(label)
    return Text(state.label, style=STATE_STYLE[state])


def render_explanation(console: Console, ex: Explanation) -> None:
    one_state = ex.rolled if ex.rolled is not None else ex.state
    head = Text.assemble(
        (ex.entity, "bold"), " is ", state_text(one_state.label), f" at {format_time(ex.at)}",
        (f" (since {format_time(ex.since)})" if ex.since is not None else " (no transition recorded)"),
    )  # fmt: skip
    rolled = None
    if ex.rolled is not None and ex.rolled_from:
        parts_of = ", ".join(f"{n} {s}" for s, n in sorted(ex.rolled_from.items()))
        rolled = Text(f"as an operator sees it: the most severe of its own state ({ex.state.label}) and its GPUs' and "
                      f"uplink's ({parts_of}; the rest healthy)",
                      style="dim")  # fmt: skip
    scores = Table.grid(padding=(0, 2))
    if ex.gfs is not None:
        scores.add_row("GFS", f"{ex.gfs:.2f}", "gray-failure score")
        scores.add_row("PRS", f"{ex.prs:.2f}", "propagation risk")
        scores.add_row("FAE", f"{ex.fae:.1f}x", "failure amplification")
    evidence = Table(title="top evidence", show_edge=False, expand=False)
    evidence.add_column("detector")
    evidence.add_column("weight×evidence", justify="right")
    evidence.add_column("what")
    for item in ex.evidence:
        evidence.add_row(item.detector, f"{item.evidence:.2f}", item.text)
    history = Table(title="transitions that led here", show_edge=False)
    history.add_column("time")
    history.add_column("from")
    history.add_column("to")
    history.add_column("GFS", justify="right")
    history.add_column("reason")
    for t in ex.transitions:
        history.add_row(
            format_time(t.ts), state_text(t.from_state), state_text(t.to_state), f"{t.gfs:.2f}", t.reason
        )
    parts: list[Table | Text] = [head, *([rolled] if rolled is not None else []), scores]
    if ex.evidence:
        parts.append(evidence)
    if ex.transitions:
        parts.append(history)
    parts.append(Text(f"admissibility as {ex.state.label}: {ex.admission}", style="cyan"))
    if ex.upstream:
        up = Table(title="upstream: domains it depends on that were unwell", show_edge=False)
        for col in ("entity", "state", "since", "why"):
            up.add_column(col)
        for u in ex.upstream:
            up.add_row(u.entity, state_text(u.state), format_time(u.since), u.reason)
        parts.append(up)
    elif not ex.domains_known:
        parts.append(Text("upstream: not known (this journal has no map of failure domains)", style="dim"))
    if ex.below:
        shown = ", ".join(f"{n} {s}" for s, n in sorted(ex.below.items()))
        parts.append(Text(f"below it, unwell since it turned {ex.state.label}: {shown}"))
    if ex.groups:
        acts = Table(title="what seamguard decided (identical decisions counted once)", show_edge=False)
        for col in ("time", "action", "on", "×", "predicted cost / benefit (GPU-h)", "outcome"):
            acts.add_column(col, justify="right" if col == "×" else "left")
        for g in ex.groups:
            d = g.first
            when = format_time(d.ts) + (f" … {format_time(g.last_ts)}" if g.count > 1 else "")
            outcome = g.outcome
            if g.realised is not None:
                outcome += (
                    f"; realised {valued(g.realised.realised_cost_gpu_h, g.realised.realised_benefit_gpu_h)}"
                )
            on = (
                d.entity
                if len(g.targets) <= 1
                else f"{', '.join(g.targets[:3])}{' …' if len(g.targets) > 3 else ''} ({len(g.targets)})"
            )
            acts.add_row(when, d.action, on, str(g.count),
                         valued(d.predicted_cost_gpu_h, d.predicted_benefit_gpu_h), outcome)  # fmt: skip
        parts.append(acts)
        for o in ex.outcomes:
            parts.append(Text(f"outcome of {o.action} on {o.entity} ({format_time(o.decided_at)}): {o.note}",
                              style="dim"))  # fmt: skip
    if ex.next_steps:
        parts.append(Text("next steps for a person:", style="bold"))
        parts.extend(Text(f"  • {step}") for step in ex.next_steps)
    console.print(Panel(Group(*parts), title="seamguard explain", expand=False))


def job_economics_table(controller: Controller) -> Table | None:
    """Each running job's checkpoint plan and what is at stake, as the engine sees it now."""
    rows = job_rows(controller)
    if not rows:
        return None
    table = Table(title="jobs: checkpoint plan and what is at stake", expand=False)
    for col in (
        "job",
        "GPUs",
        "plan",
        "every",
        "expected ETTR",
        "at risk (GPU-h)",
        "at risk ($)",
        "slip risk",
    ):
        table.add_column(col, justify="left" if col in ("job", "plan") else "right")
    for r in rows:
        every, ettr, slip = r["every_s"], r["expected_ettr"], r["slip_probability"]
        table.add_row(
            str(r["job"]), f"{r['gpus']:.0f}", str(r["plan"] or "none"),
            "-" if not isinstance(every, float) else f"{every / 60:.1f} min",
            "-" if not isinstance(ettr, float) else f"{ettr:.3f}",
            _num(_nan(r["rollback_gpu_h"]), 1), _num(_nan(r["rollback_cost"]), 0),
            "-" if not isinstance(slip, float) else f"{slip:.0%}",
        )  # fmt: skip
    return table


def _nan(x: object) -> float:
    return float(x) if isinstance(x, (int, float)) else math.nan


def _num(x: float, places: int) -> str:
    return "-" if math.isnan(x) else f"{x:,.{places}f}"


MODE_STYLE = {"healthy": "green", "input_stall": "yellow", "straggler": "yellow", "hang": "bold red"}


def render_job_diagnosis(console: Console, d: JobDiagnosis) -> None:
    """``seamguard diagnose``: the finding in force (mode, where, how much, what to do) and the
    job's modes up to then."""
    f = d.finding
    since = f.get("since")  # a healthy finding has none: then since its stretch began
    since = since if isinstance(since, int | float) else d.history[-1].start if d.history else None
    head = Text.assemble(
        (f"job {d.job}", "bold"), " is ", (d.mode, MODE_STYLE.get(d.mode, "red")),
        f" (confidence {_num(_nan(f.get('confidence')), 2)})" if "confidence" in f else "",
        f" since {format_time(float(since))}" if isinstance(since, int | float) else "",
        (f" · as journaled at {format_time(d.recorded)}"
         + (f", asked at {format_time(d.at)}" if d.at is not None else ", the journal's last word")),
    )  # fmt: skip
    parts: list[Table | Text] = [head]
    if d.mode != "healthy":
        cost, rate = _nan(f.get("cost_gpu_h")), _nan(f.get("rate_gpu_h_per_h"))
        parts.append(Text(f"cost so far {_num(cost, 2)} GPU-h, now {_num(rate, 2)} GPU-h per hour"))
        held = f.get("held_back_gpu_s_per_s")
        if isinstance(held, int | float) and held > 0:
            parts.append(Text(f"holds back {held:,.1f} healthy GPU-seconds per second (its other GPUs wait)"))
    for label, key in (("points at", "entities"), ("at risk from", "risk")):
        shown = f.get(key)
        if isinstance(shown, list) and shown:
            parts.append(
                Text(f"{label}: {', '.join(map(str, shown[:12]))}" + (" …" if len(shown) > 12 else ""))
            )
    evidence = f.get("evidence")
    if isinstance(evidence, list) and evidence:
        parts.append(Text("evidence:", style="bold"))
        parts.extend(Text(f"  • {e}") for e in evidence)
    if f.get("mitigation"):
        parts.append(Text(f"mitigation: {f['mitigation']}", style="cyan"))
        none = "the planner's, on each part at risk" if f.get("risk") else "none (no part is at fault)"
        parts.append(Text(f"seamguard's action: {f.get('action') or none}", style="cyan"))
    lead = f.get("lead_time_s")
    if isinstance(lead, int | float):
        parts.append(Text(f"named as a risk {lead:,.0f} s before it cost the job anything"))
    history = Table(title="mode history" + (" up to then" if d.at is not None else ""), show_edge=False)
    for col in ("from", "until", "mode", "cost (GPU-h)"):
        history.add_column(col, justify="right" if col.startswith("cost") else "left")
    for e in d.history:
        paid = "-" if e.cost_gpu_h is None else f"{e.cost_gpu_h:,.2f}"
        until = "(in force)" if e.end is None else format_time(e.end)
        history.add_row(format_time(e.start), until, Text(e.mode, MODE_STYLE.get(e.mode, "red")), paid)
    parts.append(history)
    console.print(Panel(Group(*parts), title="seamguard diagnose", expand=False))
