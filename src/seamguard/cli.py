"""The ``seamguard`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from seamguard.cli_support import installed_version, show_flags_as_flags
from seamguard.ctl_cli import ctl_app
from seamguard.errors import InputError

show_flags_as_flags()  # typer 0.29 would print `--help <bool>` (cli_support)

app = typer.Typer(
    help="seamguard: a seam-aware reliability orchestrator for GPU clusters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)


def _print_version(given: bool) -> None:
    """``seamguard --version``: eager, so that it answers before a command is required."""
    if given:
        typer.echo(f"seamguard {installed_version()}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    """Options of ``seamguard`` itself, before any command (the app's help is set above)."""


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)  # whole lines: paths stay copyable
    return typer.Exit(code)


@app.command()
def score(
    inventory: Annotated[
        Path, typer.Option(help="INV.csv: node, rack, cdu, leaf, gpus[, row, pdu, storage, model, mig]")
    ],
    telemetry: Annotated[
        list[Path], typer.Option(help="telemetry file(s) or a directory: CSV, CSV.gz, Parquet")
    ],
    out: Annotated[Path, typer.Option(help="TRANSITIONS.csv to write")],
    jobs: Annotated[
        Path | None, typer.Option(help="JOBS.csv: job, job_class, nodes, start, end[, storage]")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML policy merged over the defaults")] = None,
    journal: Annotated[Path | None, typer.Option(help="SQLite journal to write (for explain)")] = None,
    tick: Annotated[
        float | None, typer.Option(help="tick length in seconds (default: engine.tick_s)")
    ] = None,
) -> None:
    """Run the engine over recorded telemetry and write every state transition."""
    from seamguard.replay_run import run_score

    try:
        run_score(
            inventory=inventory, telemetry=telemetry, out=out, jobs=jobs, config_path=config,
            journal_path=journal, tick_s=tick, console=err,
        )  # fmt: skip
    except InputError as exc:
        raise _fail(str(exc)) from None


@app.command()
def run(
    inventory: Annotated[
        Path, typer.Option(help="INV.csv: node, rack, cdu, leaf, gpus[, row, pdu, storage, model, mig]")
    ],
    config: Annotated[Path, typer.Option(help="YAML policy with a sources: section (docs/sources.md)")],
    journal: Annotated[
        str,
        typer.Option(
            help="SQLite journal file, or a postgresql:// DSN shared by replicas (docs/ha.md): every decision and action"
        ),
    ],
    jobs: Annotated[
        Path | None,
        typer.Option(help="JOBS.csv; without it, the jobs Slurm runs (sources.slurm), followed each poll"),
    ] = None,
    listen: Annotated[
        str | None, typer.Option(help="HOST:PORT for the HTTP API and the console (docs/operating.md)")
    ] = None,
    ticks: Annotated[
        int | None, typer.Option(help="stop after this many ticks (default: run until stopped)")
    ] = None,
) -> None:
    """Run the engine on live telemetry: sources, scoring, safety, actuators (advise mode by default).

    Jobs follow Slurm's placements every poll; the inventory and jobs files are re-read when they change and on SIGHUP (kill -HUP), without a restart. SIGINT/SIGTERM stop after the tick."""
    from seamguard.daemon_run import run_daemon, run_logging
    from seamguard.run_preflight import check_run

    if ticks is not None and ticks < 1:
        raise _fail(f"--ticks: must be at least 1, got {ticks}")
    try:
        check_run(config_path=config, inventory=inventory, jobs=jobs, listen=listen)  # before any contact
        with run_logging():
            run_daemon(
                config_path=config, inventory=inventory, jobs=jobs, journal_path=journal, listen=listen,
                ticks=ticks, console=err,
            )  # fmt: skip
    except InputError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(str(exc)) from None


@app.command()
def check(
    config: Annotated[Path, typer.Argument(help="the YAML config seamguard run would be given")],
    inventory: Annotated[Path | None, typer.Option(help="INV.csv: read as run reads it; its nodes looked up in Slurm and Kubernetes")] = None,
    jobs: Annotated[Path | None, typer.Option(help="JOBS.csv: read as run reads it (needs --inventory)")] = None,
    journal: Annotated[str | None, typer.Option(help="the journal run would write: its schema read, no lock taken")] = None,
) -> None:  # fmt: skip
    """Validate a config, then reach every source and actuator once, read-only, and say what answered.

    Exit 0: everything answered; 1: something did not (the table says why); 2: a config, file or secret run would refuse."""
    from seamguard.check_run import run_check

    try:
        code = run_check(config_path=config, inventory=inventory, jobs=jobs, journal=journal, err=err)
    except InputError as exc:
        raise _fail(str(exc)) from None
    raise typer.Exit(code)


@app.command()
def explain(
    entity: Annotated[str, typer.Argument(help="entity id, e.g. gpu/n0012/3 or cdu/cdu1")],
    journal: Annotated[Path, typer.Option(help="journal written by score or demo")],
    at: Annotated[
        str | None, typer.Option(help="unix seconds or ISO 8601; default: end of the journal")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="policy used (for the admissibility row)")] = None,
) -> None:
    """Say why an entity is in its state: scores, top evidence, the transitions that led there."""
    from seamguard.config import load_config
    from seamguard.diagnose.explain import UnknownEntityError
    from seamguard.diagnose.explain import explain as do_explain
    from seamguard.journal.sqlite import SqliteJournal
    from seamguard.render import render_explanation
    from seamguard.timeparse import parse_time

    if not journal.exists():
        raise _fail(f"{journal}: no such journal")
    try:
        when = parse_time(at) if at is not None else None
    except ValueError as exc:
        raise _fail(f"--at: {exc}") from None
    try:
        cfg = load_config(config)
        with SqliteJournal(journal, read_only=True) as jr:
            ex = do_explain(jr, cfg, entity, when)
    except InputError as exc:
        raise _fail(str(exc)) from None
    except UnknownEntityError as exc:
        raise _fail(str(exc)) from None
    render_explanation(Console(), ex)


@app.command()
def diagnose(
    job: Annotated[str, typer.Argument(help="the job's name (or job/NAME), as the scheduler calls it")],
    journal: Annotated[str, typer.Option(help="journal written by seamguard run: a SQLite file or a postgresql:// DSN")],
    at: Annotated[str | None, typer.Option(help="unix seconds or ISO 8601; default: the job's last finding")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object instead of the panel")] = False,
) -> None:  # fmt: skip
    """Say which failure mode cost a job throughput at a time, where, how much, what to do, and its modes until then."""
    import json

    from seamguard.diagnose.history import NoFindingsError, UnknownJobError, job_diagnosis
    from seamguard.journal.base import JournalUnavailableError
    from seamguard.journal.postgres import PostgresJournal, is_postgres, shown_location
    from seamguard.journal.sqlite import SqliteJournal
    from seamguard.render import render_job_diagnosis
    from seamguard.timeparse import parse_time

    if not is_postgres(journal) and not Path(journal).exists():
        raise _fail(f"{journal}: no such journal")
    try:
        when = parse_time(at) if at is not None else None
    except ValueError as exc:
        raise _fail(f"--at: {exc}") from None
    try:
        # opened to read only: a SQLite journal without the writer's lock (WAL: while a daemon writes)
        opened = (
            PostgresJournal(journal) if is_postgres(journal) else SqliteJournal(Path(journal), read_only=True)
        )
        with opened as jr:
            found = job_diagnosis(jr, job, when, shown_location(journal))
    except (InputError, JournalUnavailableError, NoFindingsError, UnknownJobError) as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(found.to_json()))
        return
    render_job_diagnosis(Console(), found)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="directory for telemetry, journal and transitions")] = Path(
        "demo-out"
    ),
    seed: Annotated[int, typer.Option(help="random seed of the generated fleet")] = 7,
    live: Annotated[bool | None, typer.Option(help="live view (default: when on a terminal)")] = None,
    delay: Annotated[float, typer.Option(help="seconds to pause per tick in the live view")] = 0.03,
) -> None:
    """Run the embedded demo: a generated few-hundred-GPU cluster with injected gray failures."""
    from seamguard.demo import run_demo

    console = Console()
    if not console.is_terminal:  # a log or CI: no terminal width to respect, keep rows whole
        console = Console(width=200)
    use_live = console.is_terminal if live is None else live
    run_demo(out=out, seed=seed, console=console, live=use_live, delay=delay if use_live else 0.0)


@app.command()
def simulate(
    scenario: Annotated[
        str | None, typer.Option(help="a built-in scenario name or a scenario YAML file (or --sample)")
    ] = None,
    sample: Annotated[
        int | None, typer.Option(help="instead of --scenario: N scenarios drawn at random (docs/twin.md)")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="with --sample: the first draw's seed (then seed+1, ...); default 0")
    ] = None,
    policies: Annotated[
        str, typer.Option(help="comma-separated: binary, young-daly, seamguard, oracle")
    ] = "binary,young-daly,seamguard,oracle",
    seeds: Annotated[
        int | None, typer.Option(help="how many seeds (0, 1, ... unless --first-seed); default 5")
    ] = None,
    first_seed: Annotated[int | None, typer.Option(help="the first seed; default 0")] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="directory for summary.json, the plots and report.html (default simulate-out); "
            "with --sample: the drawn scenarios and results.json (nothing written without it)"
        ),
    ] = None,
    duration_h: Annotated[
        float | None,
        typer.Option(help="override the scenario's duration (hours); with --sample, every draw's"),
    ] = None,
    engine: Annotated[
        str, typer.Option(help="local: processes on this machine; ray: tasks on a Ray cluster (RAY_ADDRESS)")
    ] = "local",
    workers: Annotated[
        int | None,
        typer.Option(
            help="parallel runs (default: one per CPU; 1: in this process; ray: local instance CPUs)"
        ),
    ] = None,
) -> None:
    """Run reliability policies side by side in the digital twin, on the same faults and seeds."""
    from seamguard.simulate_run import run_simulate
    from seamguard.twin.campaign import check_engine, parse_policies, seed_list
    from seamguard.twin.scenario import load_scenario

    try:
        names = parse_policies(policies)
        check_engine(engine, workers)
        if duration_h is not None and not duration_h > 0:
            raise InputError("--duration-h", f"must be positive, got {duration_h:g}")
        console = Console()
        if not console.is_terminal:  # a log or CI: keep table rows whole
            console = Console(width=160)
        if sample is not None or seed is not None:
            _simulate_sample(
                sample, seed, scenario, seeds, first_seed, engine, duration_h, names, console, out, workers
            )
            return
        if scenario is None:
            raise InputError(
                "--scenario", "name a built-in scenario or a file, or draw scenarios with --sample N"
            )
        seed_values = seed_list(5 if seeds is None else seeds, 0 if first_seed is None else first_seed)
        overrides = {"duration_h": duration_h} if duration_h is not None else None
        sc = load_scenario(scenario, overrides)
        where = Path("simulate-out") if out is None else out
        run_simulate(sc, names, seed_values, where, console, engine=engine, workers=workers)
    except InputError as exc:
        raise _fail(str(exc)) from None


def _simulate_sample(
    sample: int | None, seed: int | None, scenario: str | None, seeds: int | None, first_seed: int | None,
    engine: str, duration_h: float | None, names: tuple[str, ...], console: Console, out: Path | None,
    workers: int | None,
) -> None:  # fmt: skip
    """``--sample N [--seed S]``: options that belong to one scenario are refused by name."""
    from seamguard.sample_run import run_sampled
    from seamguard.twin.sampler import Bounds

    if sample is None:
        raise InputError("--seed", "only with --sample N (a scenario's runs take --seeds and --first-seed)")
    for given, option in ((scenario, "--scenario"), (seeds, "--seeds"), (first_seed, "--first-seed")):
        if given is not None:
            raise InputError(
                option, "not with --sample: each drawn scenario runs on the world of its own seed"
            )
    if engine != "local":
        raise InputError("--engine", "--sample runs on local processes only")
    bounds = None if duration_h is None else Bounds().with_duration(duration_h)
    run_sampled(sample, 0 if seed is None else seed, names, console, out=out, workers=workers, bounds=bounds)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(installed_version())


@app.command()
def gateway(
    config: Annotated[
        Path | None,
        typer.Option(help="YAML with a gateway: section: keys, tenants, upstreams (docs/serving.md)"),
    ] = None,
    listen: Annotated[
        str, typer.Option(help="HOST:PORT to serve the OpenAI-compatible API on")
    ] = "127.0.0.1:8480",
    new_key: Annotated[
        str | None, typer.Option(help="print a new key for NAME (shown once) and its config entry, and exit")
    ] = None,
) -> None:
    """The admission gateway in front of OpenAI-compatible inference servers: token budgets, rate
    limits, zombie keys, circuit breakers and a retry budget (docs/serving.md)."""
    if new_key is not None:
        from seamguard.gateway.serve import new_key_lines
        from seamguard.service.sections import NAME_RE

        if not NAME_RE.fullmatch(new_key):
            raise _fail(f"--new-key: a name of letters, digits and . _ @ - (at most 64), got {new_key!r}")
        secret, entry = new_key_lines(new_key)
        typer.echo(f"key (shown once; give it to {new_key} as its OpenAI API key):")
        typer.echo(f"  {secret}")
        typer.echo("entry for gateway.keys (its digest only):")
        typer.echo(f"  {entry}")
        return
    if config is None:
        raise _fail("--config: the gateway's config file is required (docs/serving.md)")
    from seamguard.gateway.serve import run_gateway

    try:
        run_gateway(config, listen, err)
    except (InputError, OSError) as exc:
        raise _fail(str(exc)) from None


token_app = typer.Typer(help="Bearer tokens for the HTTP API of seamguard run (docs/security.md).")
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="who holds it: journaled with every request it makes")],
    role: Annotated[list[str], typer.Option(help="viewer, pusher, operator or admin; repeat for several")],
    expires: Annotated[
        str | None, typer.Option(help="ISO 8601 time with a zone after which it is refused")
    ] = None,
) -> None:
    """Make a token: print its secret once, and the tokens-file line that holds only its digest."""
    from pydantic import ValidationError

    from seamguard.service.auth import new_token, token_line
    from seamguard.service.sections import TokenEntry

    secret = new_token()
    try:
        entry = TokenEntry.model_validate(
            {"name": name, "roles": role, "digest": "sha256:" + "0" * 64, "expires": expires}
        )
    except ValidationError as exc:
        e = exc.errors()[0]
        opt = {"name": "--name", "roles": "--role", "expires": "--expires"}.get(str(e["loc"][0]), "--role")
        raise _fail(f"{opt}: {e['msg']} (got {e.get('input')!r})") from None
    line = token_line(entry.name, entry.roles, secret, entry.expires)
    typer.echo(f"secret (shown once; give it to {entry.name} as SEAMGUARD_TOKEN or a token file):")
    typer.echo(f"  {secret}")
    typer.echo("line for the tokens file (service.auth.tokens_file):")
    typer.echo(f"  {line}")


journal_app = typer.Typer(help="The shared PostgreSQL journal of replicas (docs/ha.md).")
app.add_typer(journal_app, name="journal")
app.add_typer(ctl_app, name="ctl")  # a running daemon's state and the operator's controls


@journal_app.command("migrate")
def journal_migrate(
    journal: Annotated[
        str, typer.Option(help="postgresql:// DSN (the password from PGPASSWORD or ~/.pgpass)")
    ],
) -> None:
    """Bring the journal's schema to this seamguard's version (one transaction; safe to re-run)."""
    from seamguard.journal.postgres import SCHEMA_VERSION, is_postgres, migrate, shown_location

    if not is_postgres(journal):
        raise _fail(
            f"--journal: expected a postgresql:// DSN, got {journal!r} (a SQLite journal upgrades itself)"
        )
    try:
        applied = migrate(journal)
    except InputError as exc:
        raise _fail(str(exc)) from None
    done = ", ".join(str(v) for v in applied) if applied else "none (already current)"
    typer.echo(f"{shown_location(journal)}: schema version {SCHEMA_VERSION}; migrations applied: {done}")


@journal_app.command("copy")
def journal_copy(
    source: Annotated[Path, typer.Option("--from", help="the SQLite journal to copy")],
    target: Annotated[str, typer.Option("--to", help="an empty, migrated postgresql:// journal")],
) -> None:
    """Copy a SQLite journal into a PostgreSQL one (moving a single daemon to replicas)."""
    from rich.progress import Progress

    from seamguard.journal.copy import copy_journal, count_rows
    from seamguard.journal.postgres import PostgresJournal, is_postgres

    if not is_postgres(target):
        raise _fail(f"--to: expected a postgresql:// DSN, got {target!r}")
    if not source.exists():
        raise _fail(f"--from: {source}: no such journal")
    try:
        total = sum(count_rows(source).values())
        with PostgresJournal(target) as pg, Progress(console=err) as progress:
            task = progress.add_task("copying", total=total)
            counts = copy_journal(
                source, pg, lambda table, n: progress.update(task, advance=n, description=table)
            )
    except InputError as exc:
        raise _fail(str(exc)) from None
    shown = ", ".join(f"{t} {n:,}" for t, n in counts.items() if n)
    typer.echo(f"copied {sum(counts.values()):,} records ({shown or 'none'})")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
