"""``seamguard check CONFIG``: would ``seamguard run`` start on this config, and reach what it names?

First what ``run`` checks before it contacts anything: the config loaded and validated as ``run``
loads it (``load_daemon_config``), at least one source, every secret the config names by variable
present in the environment (``run_preflight.secret_variables``), the inventory and jobs files read
as ``run`` reads them. Any of these wrong is an ``InputError`` (exit 2) and nothing is contacted.

Then every source and actuator, etcd and the journal are reached once, read-only, each with its
configured timeout, all at once (``check.probe``), under a status line on stderr; a table on
stdout says, for each, what was tried, whether it answered, and why not with what to fix. Exit 0
when everything answered, 1 when anything did not. Nothing is changed anywhere: no drain, no
weight, no webhook action, no journal lock (``check.backends``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from seamguard.check.backends import actuator_probes, etcd_probes, journal_probe
from seamguard.check.probe import Outcome, Probe, run_probes
from seamguard.check.sources import source_probes
from seamguard.errors import InputError
from seamguard.model.inventory import read_inventory, read_jobs
from seamguard.run_preflight import secret_variables
from seamguard.site_config import SiteConfig, load_daemon_config

SHOWN_WAITING = 3  # components named in the status line while they are awaited
QUIET_LOGGERS = ("pymodbus", "urllib3", "kubernetes", "httpx", "httpcore", "etcd3gw", "requests")


def plan_check(
    *,
    config_path: Path,
    inventory: Path | None = None,
    jobs: Path | None = None,
    journal: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[Probe]:
    """The probes for a config, after what ``run`` refuses at start (``InputError``, nothing contacted)."""
    site = load_daemon_config(config_path).site
    if not site.sources.any():  # as run_daemon refuses it
        raise InputError(
            str(config_path), "sources: nothing to read; configure at least one source (docs/sources.md)"
        )
    env = os.environ if environ is None else environ
    for key, variable in secret_variables(site):  # as run_preflight.check_run refuses it
        if not env.get(variable):
            raise InputError(key, f"environment variable {variable} is not set")
    return probes_for(site, _inventory_nodes(inventory, jobs), journal)


def probes_for(site: SiteConfig, nodes: Sequence[str], journal: str | None) -> list[Probe]:
    """Sources, actuators, etcd and the journal, in that order."""
    probes = source_probes(site.sources, nodes) + actuator_probes(site.actuators, nodes)
    if site.ha is not None:
        probes += etcd_probes(site.ha)
    if journal is not None:
        probes.append(journal_probe(journal))
    return probes


def _inventory_nodes(inventory: Path | None, jobs: Path | None) -> list[str]:
    """The inventory's node names, its file and the jobs file read as ``run`` reads them."""
    if inventory is None:
        if jobs is not None:
            raise InputError("--jobs", "needs --inventory: a jobs file names the inventory's nodes")
        return []
    if not inventory.exists():
        raise InputError(str(inventory), "inventory not found")
    inv = read_inventory(inventory)
    if jobs is not None:
        if not jobs.exists():
            raise InputError(str(jobs), "jobs file not found")
        read_jobs(jobs, inv)
    return [n.node for n in inv.nodes]


def run_check(
    *,
    config_path: Path,
    inventory: Path | None,
    jobs: Path | None,
    journal: str | None,
    err: Console,
    out: Console | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """``seamguard check``: 0 when every component answered, 1 when any did not; ``InputError``
    (the caller's exit 2) for a config ``run`` would refuse. The table goes to ``out`` (default:
    stdout, at least 200 columns wide when it is not a terminal, so that a log keeps rows whole)."""
    if out is None:
        shown = Console()
        out = shown if shown.is_terminal else Console(width=max(200, shown.width))
    probes = plan_check(
        config_path=config_path, inventory=inventory, jobs=jobs, journal=journal, environ=environ
    )
    with _libraries_quiet(), err.status(f"checking {len(probes)} component(s)...") as status:

        def progress(finished: int, total: int, waiting: Sequence[Probe]) -> None:
            names = ", ".join(escape(p.tried) for p in waiting[:SHOWN_WAITING])
            more = f" and {len(waiting) - SHOWN_WAITING} more" if len(waiting) > SHOWN_WAITING else ""
            status.update(f"checking: {finished} of {total} answered; waiting for {names}{more}")

        outcome = run_probes(probes, progress)
    out.print(check_table(outcome))
    out.print(summary(outcome), soft_wrap=True)
    return 1 if outcome.failed else 0


@contextmanager
def _libraries_quiet() -> Iterator[None]:
    """The clients' own log lines (pymodbus' connection errors, urllib3's warnings) say again,
    half-formatted on stderr, what the table says: silenced while the probes run."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    before = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, before, strict=True):
            lg.setLevel(level)


def check_table(outcome: Outcome) -> Table:
    table = Table()
    table.add_column("component", no_wrap=True)
    table.add_column("tried", overflow="fold")
    table.add_column("result", no_wrap=True)
    table.add_column("reason", overflow="fold")
    for r in outcome.rows:
        result = "[green]ok[/]" if r.ok else "[bold red]failed[/]"
        table.add_row(escape(r.component), escape(r.tried), result, escape(r.reason))
    return table


def summary(outcome: Outcome) -> str:
    failed = outcome.failed
    if not failed:
        return f"[green]all {len(outcome.rows)} check(s) passed[/]: seamguard run can reach everything this config names"
    return (
        f"[bold red]{failed} of {len(outcome.rows)} check(s) failed[/]: fix them (the reason column says how), "
        "then check again"
    )
