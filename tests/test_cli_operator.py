"""What a new SRE meets first on the command line (issue 18): ``--version``, help screens that show
a flag as a flag, output that stays copyable in a log, and ``run`` refusing at once what it can
tell is wrong from its arguments, config and environment."""

from __future__ import annotations

import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

import click
import pytest
import typer
from typer.testing import CliRunner

from seamguard.cli import app

EXAMPLE_SITE = Path(__file__).resolve().parents[1] / "examples" / "site.yaml"


def runner(columns: int) -> CliRunner:
    return CliRunner(env={"COLUMNS": str(columns)})


def test_version_flag_prints_the_installed_version() -> None:
    result = runner(100).invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"seamguard {version('seamguard')}\n"


def command_paths(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and sub-app of the CLI, as the arguments that reach it."""
    out = [path]
    if isinstance(command, click.Group) or hasattr(command, "commands"):
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            out.extend(command_paths(sub, (*path, name)))
    return out


@pytest.mark.parametrize("columns", [60, 80, 200])
def test_help_shows_flags_without_a_value_type(columns: int) -> None:
    """typer 0.29 rendered ``--help <bool>`` (and ``--live --no-live <bool>``) on every help
    screen; a flag takes no value, so no type is shown for it, at any terminal width."""
    paths = command_paths(typer.main.get_command(app))
    assert ("run",) in paths and ("token", "create") in paths
    for path in paths:
        result = runner(columns).invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, (path, result.output)
        (help_line,) = [line for line in result.output.splitlines() if "--help" in line]
        assert "<" not in help_line, (path, help_line)
    demo = runner(columns).invoke(app, ["demo", "--help"]).output
    (live,) = [line for line in demo.splitlines() if "--live" in line]
    assert "--no-live" in live and "<" not in live, live
    seed = next(line for line in demo.splitlines() if "--seed" in line)
    assert "<int>" in seed  # options that take a value still show its type


def test_help_keeps_column_lists_whole_on_a_narrow_terminal() -> None:
    """An unbreakable ``node,rack,...`` was cut to ``node,rack,...,mode…`` at 80 columns."""
    for command in ("run", "score"):
        out = runner(80).invoke(app, [command, "--help"]).output
        assert "…" not in out, out
        assert "model, mig]" in out, out


def test_piped_output_keeps_paths_and_commands_on_one_line(tmp_path: Path) -> None:
    """Captured stdout is not a terminal: rich must not break a path an operator copies from a
    log (it used to, at the console's width, in the middle of the report's path)."""
    out = tmp_path / ("a-rather-long-directory-name-" * 4) / "simulate-out"
    result = runner(80).invoke(
        app,
        ["simulate", "--scenario", "thermal-cascade", "--seeds", "1", "--policies", "binary",
         "--duration-h", "2.5", "--workers", "1", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    (report,) = [line for line in lines if line.startswith("report: ")]
    assert report == f"report: {(out / 'report.html').resolve()}"
    (wrote,) = [line for line in lines if line.startswith("wrote ")]
    assert wrote.startswith(f"wrote {out / 'summary.json'}, ") and wrote.endswith("report.html")


def write_inventory(path: Path) -> Path:
    path.write_text("node,rack,cdu,leaf,gpus\nn0000,r000,cdu0,leaf00,8\nn0001,r000,cdu0,leaf00,8\n")
    return path


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every process started (scontrol and the like): recorded, and never really started."""
    started: list[Any] = []

    def popen(args: Any, *_a: Any, **_k: Any) -> Any:
        started.append(args)
        raise FileNotFoundError(2, "not started in this test", str(args))

    monkeypatch.setattr(subprocess, "Popen", popen)
    return started


def run_example(tmp_path: Path, *extra: str) -> tuple[int, str, Path]:
    journal = tmp_path / "journal.sqlite"
    result = runner(400).invoke(
        app,
        ["run", "--inventory", str(write_inventory(tmp_path / "inv.csv")), "--config", str(EXAMPLE_SITE),
         "--journal", str(journal), "--ticks", "1", *extra],
    )  # fmt: skip
    return result.exit_code, result.output, journal


def test_run_with_push_but_no_listen_is_refused_naming_the_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spawned: list[Any]
) -> None:
    monkeypatch.setenv("SEAMGUARD_WEBHOOK_SECRET", "s3cret")
    code, output, journal = run_example(tmp_path)
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --listen: sources.push is configured"), output
    assert "--listen HOST:PORT" in lines[0]
    assert spawned == [] and not journal.exists()


def test_run_missing_a_secret_fails_before_contacting_slurm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spawned: list[Any]
) -> None:
    """examples/site.yaml reads the jobs from Slurm at start: with slurmctld out of reach that
    took some 30 s of scontrol timeouts before the missing webhook secret was reported. Now the
    secret is checked first: no scontrol is started, and the error names the variable."""
    monkeypatch.delenv("SEAMGUARD_WEBHOOK_SECRET", raising=False)
    code, output, journal = run_example(tmp_path, "--listen", "127.0.0.1:0")
    assert code == 2, output
    assert output.strip() == (
        "error: actuators.webhook.secret_env: environment variable SEAMGUARD_WEBHOOK_SECRET is not set"
    )
    assert spawned == [], "no source or actuator is contacted before the secret is known to be there"
    assert not journal.exists()


def test_the_secret_check_reads_every_secret_env_field() -> None:
    from seamguard.run_preflight import secret_variables
    from seamguard.site_config import load_daemon_config

    site = load_daemon_config(EXAMPLE_SITE).site
    assert secret_variables(site) == [("actuators.webhook.secret_env", "SEAMGUARD_WEBHOOK_SECRET")]
