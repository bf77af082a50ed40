"""``seamguard demo``: the real engine on a generated cluster with injected gray failures.

The demo writes its inputs in the telemetry contract's format (inventory.csv, jobs.csv,
telemetry.csv.gz) so the same run can be replayed with ``seamguard score`` and inspected
with ``seamguard explain``.
"""

from __future__ import annotations

import csv
import time
from collections import Counter, deque
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from seamguard.config import load_config
from seamguard.control.controller import Controller
from seamguard.diagnose.domains import record_domains
from seamguard.diagnose.grouping import group_transitions, upstream_cause
from seamguard.journal.records import DecisionRecord, TransitionRecord
from seamguard.journal.sqlite import SqliteJournal
from seamguard.journal.transitions_csv import TRANSITION_HEADER, transition_row
from seamguard.model.catalog import signal_catalog
from seamguard.model.entities import EntityKind, kind_of
from seamguard.model.states import State
from seamguard.render import STATE_STYLE, job_economics_table, state_text
from seamguard.telemetry.writer import TelemetryCsvWriter
from seamguard.twin.cluster import write_inventory_csv, write_jobs_csv
from seamguard.twin.detection import Evaluation, evaluate
from seamguard.twin.suite import SCENARIOS, build

SHOWN_KINDS = (EntityKind.GPU, EntityKind.NODE, EntityKind.LINK, EntityKind.RACK, EntityKind.CDU,
               EntityKind.SWITCH, EntityKind.STORAGE, EntityKind.JOB)  # fmt: skip


def _fleet_table(controller: Controller) -> Table:
    table = Table(title="fleet states", expand=False)
    table.add_column("kind")
    for state in State:
        table.add_column(state.label, justify="right", style=STATE_STYLE[state])
    topo = controller.topology
    for kind in SHOWN_KINDS:
        members = topo.members[kind]
        if members.size == 0:
            continue
        counts = Counter(controller.states[members].tolist())
        table.add_row(kind.value, *[str(counts.get(int(s), 0)) or "" for s in State])
    return table


def _log_table(recent: deque[tuple[float, TransitionRecord]], start: float) -> Table:
    table = Table(title="state changes (newest last)", expand=True)
    table.add_column("t+", justify="right", no_wrap=True)
    table.add_column("entity", no_wrap=True)
    table.add_column("change", no_wrap=True)
    table.add_column("reason")
    for _, t in recent:
        change = Text.assemble(state_text(t.from_state), "→", state_text(t.to_state))
        table.add_row(f"{(t.ts - start) / 60:.0f}m", t.entity, change, t.reason)
    return table


def _view(controller: Controller, recent: deque[tuple[float, TransitionRecord]], start: float, end: float,
          now: float, title: str) -> Group:  # fmt: skip
    done = (now - start) / (end - start)
    header = Table.grid(padding=(0, 2))
    header.add_row(
        Text(title, style="bold"),
        ProgressBar(total=1.0, completed=done, width=40),
        Text(f"simulated {(now - start) / 3600:.2f} h of {(end - start) / 3600:.1f} h"),
    )
    return Group(Panel(header), _fleet_table(controller), _log_table(recent, start))


def run_demo(*, out: Path, seed: int, console: Console, live: bool, delay: float) -> Evaluation:
    scenario = SCENARIOS["demo"]
    inventory, jobs, topology, fleet = build(scenario, seed)
    config = load_config()
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm"):
        (out / stale).unlink(missing_ok=True)
    write_inventory_csv(inventory, out / "inventory.csv")
    write_jobs_csv(jobs, out / "jobs.csv")
    catalog = signal_catalog()
    start = fleet.start
    end = start + scenario.duration_s
    tick = scenario.tick_s
    transitions: list[TransitionRecord] = []
    decisions: list[DecisionRecord] = []
    recent: deque[tuple[float, TransitionRecord]] = deque(maxlen=14)
    title = f"seamguard demo: {topology.count(EntityKind.GPU)} GPUs, scenario '{scenario.name}', seed {seed}"
    with (
        SqliteJournal(out / "journal.sqlite") as journal,
        TelemetryCsvWriter(out / "telemetry.csv.gz", topology, catalog) as writer,
        (out / "transitions.csv").open("w", newline="", encoding="utf-8") as fh,
    ):
        journal.set_meta("source", f"seamguard demo seed={seed}")
        record_domains(journal, topology)  # explain names upstream causes
        rows = csv.writer(fh)
        rows.writerow(TRANSITION_HEADER)
        controller = Controller(topology, config, journal=journal, catalog=catalog)
        live_view = Live(console=console, refresh_per_second=8, transient=False) if live else None
        if live_view is None:
            console.print(f"[bold]{title}[/]")
        else:
            live_view.start()
        try:
            now = start + tick
            while now <= end + 1e-9:
                batch = fleet.batch(now)
                writer.write(batch)
                result = controller.tick(now, batch)
                for t in result.transitions:
                    transitions.append(t)
                    recent.append((now, t))
                    rows.writerow(transition_row(t))
                if live_view is None:  # grouped by cause: a CDU event is a line, not one per GPU
                    cause = upstream_cause(controller.topology, controller.classifier.state)
                    for g in group_transitions(result.transitions, cause):
                        console.print(
                            f"t+{(now - start) / 60:5.1f}m {g.line()}", markup=False, highlight=False
                        )
                decisions.extend(result.decisions)
                if live_view is not None:
                    live_view.update(_view(controller, recent, start, end, now, title))
                    if delay > 0:
                        time.sleep(delay)
                now += tick
        finally:
            if live_view is not None:
                live_view.stop()
    evaluation = evaluate(fleet.truth(), transitions)
    scopes = {f.fid: scope for f, scope, _impact in fleet.truth()}
    _summary(console, evaluation, scopes, decisions, start, out, transitions)
    stakes = job_economics_table(controller)
    if stakes is not None:
        console.print(stakes)
    return evaluation


def benign_flagged(ev: Evaluation, transitions: Sequence[TransitionRecord]) -> list[str]:
    """Each benign confounder the engine did not leave healthy, said plainly: the summary's
    "0 false quarantines" must not hide a part that was flagged (or flapped) without being
    quarantined."""
    out: list[str] = []
    for f in ev.benign:
        if f.worst_state in (None, "healthy", "unknown"):
            continue
        entries = sum(1 for t in transitions if t.entity == f.target and t.to_state == f.worst_state)
        why = (
            " — a GPU that much slower is a straggler to its synchronous job: seamguard would move its rank at"
            " the job's next restart (replace_rank); the GPU stays in service"
            if f.kind == "slow_gpu"
            else ""
        )
        again = (
            f", entered {entries} times (it left and came back as its job's peers changed)"
            if entries > 1
            else ""
        )
        out.append(
            f"benign confounder flagged, not quarantined: {f.kind} {f.target} {f.worst_state}{again}{why}"
        )
    return out


def _summary(
    console: Console,
    ev: Evaluation,
    scopes: dict[int, frozenset[str]],
    decisions: list[DecisionRecord],
    start: float,
    out: Path,
    transitions: Sequence[TransitionRecord] = (),
) -> None:
    table = Table(title="what seamguard detected", expand=False)
    for col in ("fault", "target", "onset", "impact", "first detected", "as", "lead", "would do"):
        table.add_column(col, overflow="fold")
    for f in (*ev.faults, *ev.benign):
        # Actions caused by the fault's own entities after its onset; a job it slows also degrades
        # for reasons of its own, so a job's decisions are not credited to a node's fault.
        causes = {f.target, *(a for a in scopes[f.fid] if kind_of(a) is not EntityKind.JOB)}
        acts = sorted({d.action for d in decisions if d.cause in causes and d.ts >= f.onset})
        detected = f"t+{(f.detected_at - start) / 60:.1f}m ({f.first_entity})" if f.detected else "-"
        lead = "-" if f.lead_s is None else f"{f.lead_s / 60:+.1f}m"
        name = f"{f.kind} (benign)" if f.benign else f.kind
        table.add_row(
            name, f.target, f"t+{(f.onset - start) / 60:.0f}m", "-" if f.benign else f"t+{(f.impact - start) / 60:.0f}m",
            detected, f.worst_state or "healthy", "-" if f.benign else lead, ", ".join(acts[:4]) or "nothing",
        )  # fmt: skip
    console.print(table)
    console.print(
        f"faults detected: {ev.detected}/{len(ev.faults)}  precision {ev.precision:.2f}  recall {ev.recall:.2f}  "
        f"false quarantines of benign confounders: {len(ev.false_quarantines)}"
    )
    for line in benign_flagged(ev, transitions):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    # Commands to copy: soft_wrap, or rich breaks them at the console's width into lines a shell
    # reads as two commands (a log or a pipe has no terminal to wrap them back).
    console.print(
        f"replay it: seamguard score --inventory {out}/inventory.csv --jobs {out}/jobs.csv "
        f"--telemetry {out}/telemetry.csv.gz --out {out}/replayed.csv --journal {out}/replay.sqlite",
        soft_wrap=True,
    )
    console.print(f"ask why:  seamguard explain <entity> --journal {out}/journal.sqlite", soft_wrap=True)
