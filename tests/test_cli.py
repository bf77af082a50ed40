"""End to end through the command line: the demo, then `score` replaying its telemetry, then `explain`."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seamguard.cli import app
from seamguard.journal.sqlite import SqliteJournal
from seamguard.journal.transitions_csv import TRANSITION_HEADER

runner = CliRunner(env={"COLUMNS": "240"})


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == TRANSITION_HEADER
        return list(reader)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo")
    result = runner.invoke(app, ["demo", "--out", str(out), "--no-live"])
    assert result.exit_code == 0, result.output
    assert "faults detected" in result.output
    return out, result.output


@pytest.fixture(scope="module")
def demo_out(demo_run: tuple[Path, str]) -> Path:
    return demo_run[0]


@pytest.fixture(scope="module")
def replayed(demo_out: Path) -> Path:
    result = runner.invoke(
        app,
        ["score", "--inventory", str(demo_out / "inventory.csv"), "--jobs", str(demo_out / "jobs.csv"),
         "--telemetry", str(demo_out / "telemetry.csv.gz"), "--out", str(demo_out / "replayed.csv"),
         "--journal", str(demo_out / "replay.sqlite")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # the demo's counter_reset confounder zeroes three counters of one GPU: read as resets, no rate
    assert "3 counter resets (reboot, driver reload) gave no rate" in " ".join(result.output.split())
    return demo_out


def test_demo_prints_its_commands_whole_when_piped(demo_run: tuple[Path, str]) -> None:
    """Captured output is not a terminal: the commands to copy stay one line each, however long
    the paths (rich broke them at the console's 200 columns, into lines a shell runs apart)."""
    out, output = demo_run
    lines = output.splitlines()
    assert (
        f"replay it: seamguard score --inventory {out}/inventory.csv --jobs {out}/jobs.csv "
        f"--telemetry {out}/telemetry.csv.gz --out {out}/replayed.csv --journal {out}/replay.sqlite"
    ) in lines
    assert f"ask why:  seamguard explain <entity> --journal {out}/journal.sqlite" in lines


def test_demo_says_which_benign_part_it_flagged_although_it_quarantined_none(
    demo_run: tuple[Path, str],
) -> None:
    """The benign slow GPU is a straggler to its job (harmful, not quarantined): the summary says
    so beside its "0 false quarantines", and how often it entered that state."""
    _, output = demo_run
    text = " ".join(output.split())
    assert "false quarantines of benign confounders: 0" in text
    assert "benign confounder flagged, not quarantined: slow_gpu gpu/n0009/1 harmful" in text
    assert "replace_rank" in text


def test_demo_groups_a_cdu_event_by_its_cause(demo_run: tuple[Path, str]) -> None:
    out, output = demo_run
    grouped = [line for line in output.splitlines() if "(under cdu/cdu1 (quarantine))" in line]
    assert grouped and any(" × gpu healthy -> degraded (under cdu/cdu1" in line for line in grouped)
    printed = sum(1 for line in output.splitlines() if line.startswith("t+"))
    assert printed < len(rows(out / "transitions.csv")) / 2  # the CDU event is lines, not one per GPU


def test_demo_detects_its_faults_and_journals_them(demo_out: Path) -> None:
    live = rows(demo_out / "transitions.csv")
    assert live, "the demo injects faults: there must be transitions"
    times = [float(r["timestamp"]) for r in live]
    assert times == sorted(times)
    to_states = {r["to_state"] for r in live}
    assert {"degraded", "failed"} <= to_states
    assert all(r["reason"] for r in live)
    with SqliteJournal(demo_out / "journal.sqlite", create=False) as journal:
        assert len(journal.transitions()) == len(live)
        assert journal.decisions(), "entering bad states proposes actions"


def test_score_replays_the_demo_to_the_same_transitions(replayed: Path) -> None:
    live = rows(replayed / "transitions.csv")
    again = rows(replayed / "replayed.csv")
    key = ("timestamp", "entity", "from_state", "to_state")
    assert [tuple(r[k] for k in key) for r in again] == [tuple(r[k] for k in key) for r in live]


def test_explain_a_failed_gpu(replayed: Path) -> None:
    failed = next(r for r in rows(replayed / "replayed.csv") if r["to_state"] == "failed")
    result = runner.invoke(
        app,
        [
            "explain",
            failed["entity"],
            "--journal",
            str(replayed / "replay.sqlite"),
            "--at",
            failed["timestamp"],
        ],
    )
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert failed["entity"] in out and "failed" in out
    assert failed["reason"].split(",")[0][:40] in out


def test_explain_before_the_fault_says_healthy(replayed: Path) -> None:
    first = rows(replayed / "replayed.csv")[0]
    before = str(float(first["timestamp"]) - 60)
    result = runner.invoke(
        app, ["explain", first["entity"], "--journal", str(replayed / "replay.sqlite"), "--at", before]
    )
    assert result.exit_code == 0, result.output
    assert "healthy" in result.output


def test_explain_unknown_entity_suggests_close_ids(replayed: Path) -> None:
    entity = rows(replayed / "replayed.csv")[0]["entity"]
    typo = entity[:-1] + ("9" if entity[-1] != "9" else "8") + "x"
    result = runner.invoke(app, ["explain", typo, "--journal", str(replayed / "replay.sqlite")])
    assert result.exit_code == 2
    assert "does not appear in the journal" in result.output


def test_explain_refuses_bad_time_and_missing_journal(replayed: Path, tmp_path: Path) -> None:
    bad_at = runner.invoke(
        app, ["explain", "gpu/x/0", "--journal", str(replayed / "replay.sqlite"), "--at", "yesterday"]
    )
    assert bad_at.exit_code == 2 and "--at" in bad_at.output
    missing = runner.invoke(app, ["explain", "gpu/x/0", "--journal", str(tmp_path / "nope.sqlite")])
    assert missing.exit_code == 2 and "no such journal" in missing.output


def test_score_refuses_to_reuse_a_journal(replayed: Path, tmp_path: Path) -> None:
    journal = replayed / "replay.sqlite"
    before = len(SqliteJournal(journal, create=False).transitions())
    result = runner.invoke(
        app,
        ["score", "--inventory", str(replayed / "inventory.csv"), "--telemetry", str(replayed / "telemetry.csv.gz"),
         "--out", str(tmp_path / "t.csv"), "--journal", str(journal)],
    )  # fmt: skip
    assert result.exit_code == 2 and "already holds a run" in result.output
    assert len(SqliteJournal(journal, create=False).transitions()) == before


def test_score_names_bad_inputs(replayed: Path, tmp_path: Path) -> None:
    base = ["score", "--telemetry", str(replayed / "telemetry.csv.gz"), "--out", str(tmp_path / "t.csv")]
    missing = runner.invoke(app, [*base, "--inventory", str(tmp_path / "absent.csv")])
    assert missing.exit_code == 2 and "absent.csv" in missing.output
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("classifier:\n  degraded_enter: lots\n")
    result = runner.invoke(
        app, [*base, "--inventory", str(replayed / "inventory.csv"), "--config", str(bad_cfg)]
    )
    assert result.exit_code == 2
    assert "bad.yaml" in result.output and "classifier.degraded_enter" in result.output
    bad_tick = runner.invoke(app, [*base, "--inventory", str(replayed / "inventory.csv"), "--tick", "-5"])
    assert bad_tick.exit_code == 2 and "--tick" in bad_tick.output


def test_score_prints_bad_rows_verbatim_and_refuses_mostly_bad_files(replayed: Path, tmp_path: Path) -> None:
    tel = tmp_path / "tel.csv"
    good = "1767225630,gpu/n0000/0,gpu.temp_c,61.5\n" * 5
    tel.write_text(
        "timestamp,entity,signal,value\n" + good + "1767225630,gpu/n0000/0,gpu.temp_c,[red]hot[/red]\n"
    )
    base = ["score", "--inventory", str(replayed / "inventory.csv"), "--out", str(tmp_path / "t.csv")]
    result = runner.invoke(app, [*base, "--telemetry", str(tel)])
    assert result.exit_code == 0, result.output
    assert "tel.csv:7" in result.output and "[red]hot[/red]" in result.output  # markup shown, not applied
    junk = tmp_path / "junk.csv"
    junk.write_text("timestamp,entity,signal,value\n" + "x,y\n" * 50 + good)
    refused = runner.invoke(app, [*base, "--telemetry", str(junk)])
    assert refused.exit_code == 2 and "junk.csv" in refused.output and "malformed" in refused.output
