"""Jobs' diagnosis findings in the journal: stored and read back, an older journal upgraded, the
rule of when the daemon journals one (a change, a repeat while unwell, nothing while steady), the
daemon writing them (the leader only, a failing write costing no tick), and ``seamguard diagnose``
on what was journaled."""

from __future__ import annotations

import json
import logging
import math
import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seamguard.cli import app
from seamguard.daemon import Daemon
from seamguard.diagnose.findings_log import FindingsLog, finding_record
from seamguard.diagnose.history import NoFindingsError, UnknownJobError, episodes, job_diagnosis
from seamguard.diagnose.modes import MITIGATION, Finding, Mode
from seamguard.ha.view import LeaderView
from seamguard.journal.base import JournalUnavailableError
from seamguard.journal.buffered import BufferedJournal
from seamguard.journal.records import MAX_FINDING_JSON, FindingRecord, OperatorRecord
from seamguard.journal.sqlite import SCHEMA_VERSION, SqliteJournal
from seamguard.model.topology import build_topology
from seamguard.site_config import daemon_config_from_mapping
from seamguard.telemetry.sources.build import build_sources
from tests.conftest import small_inventory, small_jobs
from tests.console_harness import RACK_QUARANTINED_AT, console_daemon

runner = CliRunner(env={"COLUMNS": "300"})
T0 = 1_800_000_000.0  # 2027-01-15 08:00:00Z


def finding(job: str, mode: Mode, since: float = math.nan, cost: float = 0.0, rate: float = 0.0) -> Finding:
    if mode is Mode.HEALTHY:
        return Finding(job, mode, 0.8, (), (), math.nan, 0.0, 0.0, "", None)
    text, action = MITIGATION[mode]
    return Finding(job, mode, 0.85, ("cdu/cdu1", "gpu/n0001/2"), ("steps +20% against its usual 1.00 s",
                   "cdu/cdu1 unwell"), since, cost, rate, text, action)  # fmt: skip


# ---- storage ----------------------------------------------------------------------------------


def test_findings_round_trip_and_filter(tmp_path: Path) -> None:
    hot = finding_record(finding("train", Mode.THERMAL_POWER, T0 + 10, 1.5, 12.0), T0 + 20)
    records = [finding_record(finding("train", Mode.HEALTHY), T0), hot,
               finding_record(finding("batch", Mode.STRAGGLER, T0 + 5), T0 + 30)]  # fmt: skip
    with SqliteJournal(tmp_path / "j.sqlite") as j:
        j.append_findings(records)
        j.append_findings([])
    with SqliteJournal(tmp_path / "j.sqlite", read_only=True) as j:
        assert j.findings() == records
        assert j.findings("train") == records[:2] and j.findings(until=T0 + 20) == records[:2]
        assert j.findings(since=T0 + 20) == records[1:] and j.finding_jobs() == ["batch", "train"]
        data = json.loads(j.findings("train", since=T0 + 1)[0].finding)
        assert data == finding("train", Mode.THERMAL_POWER, T0 + 10, 1.5, 12.0).to_json()  # whole
        assert j.time_range() is None  # findings are not engine output: explain's span is unchanged


def test_a_finding_past_its_bound_is_refused_naming_the_job() -> None:
    big = "x" * (MAX_FINDING_JSON + 1)
    with pytest.raises(
        ValueError, match=r"finding of job 'train': 16,385 bytes of JSON, more than the 16,384"
    ):
        FindingRecord(T0, "train", "hang", big)
    with pytest.raises(ValueError, match="job name or mode longer"):
        FindingRecord(T0, "j" * 2000, "hang", "{}")
    FindingRecord(T0, "train", "hang", "x" * MAX_FINDING_JSON)  # at the bound: kept


def test_a_version_6_journal_is_upgraded_and_loses_nothing(tmp_path: Path) -> None:
    """A journal as version 6 left it (every table but ``finding``): opened to read (as
    ``seamguard diagnose`` opens it), it is upgraded in place, its rows kept, and it says it has no
    findings; a writer then journals findings into it."""
    path = tmp_path / "v6.sqlite"
    control = OperatorRecord(T0, "alice", "pause", "fleet", "maintenance", T0 + 600, "")
    with SqliteJournal(path) as j:
        j.append_operator([control])
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE finding; UPDATE meta SET value = '6' WHERE key = 'schema_version';")
    db.commit()
    db.close()
    result = runner.invoke(app, ["diagnose", "train", "--journal", str(path)])
    assert result.exit_code == 2 and "no diagnosis findings in this journal" in result.output, result.output
    with SqliteJournal(path, read_only=True) as j:
        assert j.get_meta("schema_version") == str(SCHEMA_VERSION) == "8"
        assert j.operator_actions() == [control] and j.findings() == []
    with SqliteJournal(path) as j:
        j.append_findings([finding_record(finding("train", Mode.HANG, T0), T0)])
        assert [f.mode for f in j.findings()] == ["hang"]


def test_findings_kept_while_the_journal_is_away_go_when_it_is_back(tmp_path: Path) -> None:
    class Away(SqliteJournal):
        away = False

        def append_findings(self, records: Sequence[FindingRecord]) -> None:
            if self.away:
                raise JournalUnavailableError("restarting")
            super().append_findings(records)

    with Away(tmp_path / "j.sqlite") as inner:
        j = BufferedJournal(inner)
        inner.away = True
        j.append_findings([finding_record(finding("train", Mode.HANG, T0), T0)])
        assert j.kept_records == 1 and j.findings() == []
        inner.away = False
        j.append_findings([finding_record(finding("train", Mode.HEALTHY), T0 + 10)])
        assert [f.mode for f in j.findings("train")] == ["hang", "healthy"] and j.kept_records == 0
        assert j.finding_jobs() == ["train"]


# ---- when to journal --------------------------------------------------------------------------


def modes_journaled(
    log: FindingsLog, ticks: Sequence[tuple[float, Sequence[Finding]]]
) -> list[tuple[float, str, str]]:
    return [(r.ts - T0, r.job, r.mode) for now, fs in ticks for r in log.due(fs, now)]


def test_journaled_when_first_seen_when_the_mode_changes_and_every_few_minutes_while_unwell() -> None:
    log = FindingsLog(every_s=300.0)
    ticks: list[tuple[float, list[Finding]]] = []
    for k in range(100):  # a tick every 10 s; train is thermal from 200 s to 800 s, batch healthy throughout
        mode = Mode.THERMAL_POWER if 20 <= k < 80 else Mode.HEALTHY
        ticks.append(
            (T0 + 10 * k, [finding("train", mode, T0 + 200, cost=k / 10), finding("batch", Mode.HEALTHY)])
        )
    got = modes_journaled(log, ticks)
    assert got == [
        (0.0, "train", "healthy"), (0.0, "batch", "healthy"),  # first seen; then nothing while healthy
        (200.0, "train", "thermal_power"),  # the change
        (500.0, "train", "thermal_power"),  # 300 s on, still unwell: its cost so far
        (790.0, "train", "thermal_power"),  # its last tick, the stretch's whole cost (it ends at the next)
        (800.0, "train", "healthy"),  # back to healthy
    ], got  # fmt: skip


def test_a_risk_named_and_its_end_are_journaled_and_the_lead_time_reads_back() -> None:
    """The start of a pre-failure window is news (its lead time is read from the journal later);
    the same risk tick after tick is not."""
    from dataclasses import replace

    log = FindingsLog(every_s=300.0)
    calm = finding("train", Mode.HEALTHY)
    risky = replace(calm, risk=("cdu/cdu1",), risk_since=T0 + 10)
    hot = replace(finding("train", Mode.THERMAL_POWER, T0 + 60), lead_time_s=50.0)
    ticks = [
        (T0, [calm]),
        *[(T0 + 10 * k, [risky]) for k in range(1, 6)],
        (T0 + 60, [hot]),
        (T0 + 70, [calm]),
    ]
    got = [(r.ts - T0, r.mode, json.loads(r.finding)["risk"], json.loads(r.finding)["lead_time_s"])
           for now, fs in ticks for r in log.due(fs, now)]  # fmt: skip
    assert got == [
        (0.0, "healthy", [], None), (10.0, "healthy", ["cdu/cdu1"], None),  # first seen; the risk named once
        (60.0, "thermal_power", [], 50.0), (70.0, "healthy", [], None),  # the impact, with its lead time
    ], got  # fmt: skip


def test_nothing_while_steady_and_a_steady_unwell_job_only_every_few_minutes() -> None:
    log = FindingsLog(every_s=300.0)
    assert len(log.due([finding("a", Mode.HEALTHY), finding("b", Mode.STRAGGLER)], T0)) == 2
    for k in range(1, 30):  # 290 s: a healthy, b a straggler all along
        assert log.due([finding("a", Mode.HEALTHY), finding("b", Mode.STRAGGLER)], T0 + 10 * k) == []
    [again] = log.due([finding("a", Mode.HEALTHY), finding("b", Mode.STRAGGLER)], T0 + 300)
    assert (again.job, again.mode) == ("b", "straggler")


def test_a_job_first_seen_unwell_a_job_that_ends_and_a_new_leadership() -> None:
    log = FindingsLog()
    log.due([finding("a", Mode.HEALTHY)], T0)
    first = log.due([finding("a", Mode.HEALTHY), finding("b", Mode.HANG, T0 + 10, 0.5)], T0 + 10)
    assert [(r.job, r.mode) for r in first] == [("b", "hang")]
    log.due([finding("a", Mode.HEALTHY), finding("b", Mode.HANG, T0 + 10, 0.9)], T0 + 20)
    ended = log.due([finding("a", Mode.HEALTHY)], T0 + 30)  # b leaves while hung: its last cost kept
    assert [(r.ts, r.job, json.loads(r.finding)["cost_gpu_h"]) for r in ended] == [(T0 + 20, "b", 0.9)]
    assert log.due([finding("a", Mode.HEALTHY)], T0 + 40) == [] and set(log.last) == {"a"}
    log.forget()  # followed for a while: the next leadership journals every job once again
    assert [(r.job, r.mode) for r in log.due([finding("a", Mode.HEALTHY)], T0 + 50)] == [("a", "healthy")]


def test_a_finding_too_big_to_journal_is_logged_and_the_rest_go(caplog: pytest.LogCaptureFixture) -> None:
    huge = Finding("a", Mode.NETWORK, 0.8, tuple(f"link/n{i:05d}" for i in range(2000)), (), T0, 0.0, 1.0,
                   "route around", "reroute")  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="seamguard.diagnose.findings_log"):
        got = FindingsLog().due([huge, finding("b", Mode.HANG, T0)], T0)
    assert [r.job for r in got] == ["b"] and "finding of job 'a'" in caplog.text


def test_episodes_fold_repeats_and_keep_each_stretchs_last_cost() -> None:
    records = [finding_record(f, t) for f, t in (
        (finding("a", Mode.HEALTHY), T0), (finding("a", Mode.STORAGE_IO, T0 + 10, 0.1), T0 + 10),
        (finding("a", Mode.STORAGE_IO, T0 + 10, 2.5), T0 + 310), (finding("a", Mode.HEALTHY), T0 + 400))]  # fmt: skip
    assert [(e.mode, e.start - T0, None if e.end is None else e.end - T0, e.cost_gpu_h) for e in episodes(records)] == [
        ("healthy", 0.0, 10.0, None), ("storage_io", 10.0, 400.0, 2.5), ("healthy", 400.0, None, None)]  # fmt: skip


# ---- the daemon -------------------------------------------------------------------------------


class Following:
    """A leadership this replica does not hold (or holds, once ``leading`` is set)."""

    leading = False

    def view(self) -> LeaderView:
        return LeaderView("b", self.leading, 3 if self.leading else 0, "b" if self.leading else "a", 10.0)

    def ticked(self, now: float) -> None:
        pass


class FailingFindings(SqliteJournal):
    def append_findings(self, records: Sequence[FindingRecord]) -> None:
        raise sqlite3.OperationalError("disk I/O error")


def small_daemon(journal: SqliteJournal, leadership: Following | None = None) -> Daemon:
    topo = build_topology(small_inventory(), small_jobs(start=1.0e9 - 60))  # running at the ticks
    config = daemon_config_from_mapping({"engine": {"tick_s": 1}, "sources": {"push": {}}})
    return Daemon(config, topo, build_sources(config.site.sources, topo, lambda: 1.0e9), journal=journal,
                  leadership=leadership)  # type: ignore[arg-type]  # fmt: skip


def test_only_the_leader_journals_findings(tmp_path: Path) -> None:
    lead = Following()
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        daemon = small_daemon(journal, lead)
        for k in range(3):
            daemon.step(1.0e9 + k)
        assert {f.job for f in daemon.jobs.findings} == {"train", "batch"} and journal.findings() == []
        lead.leading = True
        daemon.step(1.0e9 + 3)
        assert [(f.job, f.mode) for f in journal.findings()] == [("train", "healthy"), ("batch", "healthy")]


def test_a_failing_findings_write_is_logged_and_the_tick_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        FailingFindings(tmp_path / "j.sqlite") as journal,
        caplog.at_level(logging.ERROR, "seamguard.daemon"),
    ):
        daemon = small_daemon(journal)
        daemon.step(1.0e9)
        daemon.step(1.0e9 + 1)
        assert daemon.status().now == 1.0e9 + 1 and "2 diagnosis finding(s) not written" in caplog.text


# ---- seamguard diagnose -----------------------------------------------------------------------


@pytest.fixture
def journal_of_a_thermal_stretch(tmp_path: Path) -> Path:
    """train: healthy, thermal from T0+500 s to T0+1200 s (36 GPU-h per hour), then healthy; batch
    healthy. Ticks of 10 s through the daemon's rule."""
    log = FindingsLog()
    path = tmp_path / "j.sqlite"
    with SqliteJournal(path) as j:
        for k in range(150):
            now = T0 + 10 * k
            mode = Mode.THERMAL_POWER if 50 <= k < 120 else Mode.HEALTHY
            fs = [finding("train", mode, T0 + 500, (k - 50) * 0.1, 36.0), finding("batch", Mode.HEALTHY)]
            j.append_findings(log.due(fs, now))
    return path


def test_diagnose_prints_the_finding_in_force_and_the_mode_history(
    journal_of_a_thermal_stretch: Path,
) -> None:
    path = str(journal_of_a_thermal_stretch)
    now = runner.invoke(app, ["diagnose", "train", "--journal", path])
    assert now.exit_code == 0, now.output
    assert "job train is healthy (confidence 0.80) since 2027-01-15 08:20:00Z" in now.output
    rows = [re.sub(r"\s*│\s*", " | ", ln.strip(" │")) for ln in now.output.splitlines() if ln.count("│") >= 4]
    assert rows == [
        "2027-01-15 08:00:00Z | 2027-01-15 08:08:20Z | healthy | -",
        "2027-01-15 08:08:20Z | 2027-01-15 08:20:00Z | thermal_power | 6.90",  # its whole cost
        "2027-01-15 08:20:00Z | (in force) | healthy | -",
    ], now.output
    then = runner.invoke(app, ["diagnose", "job/train", "--journal", path, "--at", "2027-01-15T08:15:00Z"])
    assert then.exit_code == 0, then.output
    for said in ("job train is thermal_power (confidence 0.85) since 2027-01-15 08:08:20Z",
                 "cost so far 3.00 GPU-h, now 36.00 GPU-h per hour", "points at: cdu/cdu1, gpu/n0001/2",
                 "cdu/cdu1 unwell", "mitigation: checkpoint now", "seamguard's action: checkpoint_now",
                 "as journaled at 2027-01-15 08:13:20Z"):  # fmt: skip
        assert said in then.output, (said, then.output)
    assert "08:20:00Z" not in then.output  # nothing after the time asked for


def test_diagnose_json_is_one_object(journal_of_a_thermal_stretch: Path) -> None:
    out = runner.invoke(app, ["diagnose", "train", "--journal", str(journal_of_a_thermal_stretch),
                              "--at", str(T0 + 900), "--json"])  # fmt: skip
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    assert (got["job"], got["at"], got["recorded"]) == ("train", T0 + 900, T0 + 800)
    assert got["finding"]["mode"] == "thermal_power" and got["finding"]["action"] == "checkpoint_now"
    assert [(h["mode"], h["start"], h["end"]) for h in got["history"]] == [
        ("healthy", T0, T0 + 500), ("thermal_power", T0 + 500, None)]  # fmt: skip


def test_diagnose_names_an_unknown_job_and_the_jobs_it_knows(journal_of_a_thermal_stretch: Path) -> None:
    path = str(journal_of_a_thermal_stretch)
    out = runner.invoke(app, ["diagnose", "trian", "--journal", path])
    assert out.exit_code == 2
    assert "job 'trian' has no finding in the journal; did you mean train?" in out.output
    assert "(jobs it knows: batch, train)" in out.output
    early = runner.invoke(app, ["diagnose", "train", "--journal", path, "--at", str(T0 - 60)])
    assert early.exit_code == 2 and "no finding at or before 2027-01-15 07:59:00Z" in early.output
    bad = runner.invoke(app, ["diagnose", "train", "--journal", path, "--at", "yesterday"])
    assert bad.exit_code == 2 and "--at:" in bad.output
    missing = runner.invoke(app, ["diagnose", "train", "--journal", str(Path(path).parent / "none.sqlite")])
    assert missing.exit_code == 2 and "no such journal" in missing.output


def test_an_unknown_job_lists_ten_of_the_jobs(tmp_path: Path) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as j:
        j.append_findings([finding_record(finding(f"job{i:02d}", Mode.HEALTHY), T0) for i in range(14)])
        with pytest.raises(UnknownJobError, match=r"jobs it knows: job00, .*, job09 and 4 more\)"):
            job_diagnosis(j, "nope")
    with (
        SqliteJournal(tmp_path / "empty.sqlite") as j,
        pytest.raises(NoFindingsError, match="only `seamguard run`"),
    ):
        job_diagnosis(j, "nope")


def test_the_twin_fed_daemon_journals_its_jobs_failure_mode(tmp_path: Path) -> None:
    """The console's daemon fed by the twin (tests/console_harness.py): its job, under a CDU losing
    flow and a GPU heating, is journaled healthy when first seen and then in a thermal or power
    limit, in a few rows rather than one per tick; ``seamguard diagnose`` reads it back."""
    with console_daemon(tmp_path) as cd:
        cd.step_to(RACK_QUARANTINED_AT)
        with cd.journal() as j:
            rows = j.findings()
        found = runner.invoke(app, ["diagnose", "train", "--journal", str(cd.journal_path)])
    assert {r.job for r in rows} == {"train"} and rows[0].mode == "healthy" and rows[0].ts == cd.times[0]
    assert rows[-1].mode == "thermal_power" and len(rows) < RACK_QUARANTINED_AT / 4, [
        (r.ts, r.mode) for r in rows
    ]
    last = json.loads(rows[-1].finding)
    assert last["action"] == "checkpoint_now" and last["rate_gpu_h_per_h"] > 0
    assert found.exit_code == 0, found.output
    assert (
        "job train is thermal_power" in found.output and "seamguard's action: checkpoint_now" in found.output
    )


def test_diagnose_shows_a_risk_its_lead_time_and_the_healthy_time_held_back(tmp_path: Path) -> None:
    from dataclasses import replace

    risky = replace(finding("train", Mode.HEALTHY), risk=("cdu/cdu1",), risk_since=T0 + 10,
                    mitigation="not slowing it yet")  # fmt: skip
    hot = replace(finding("train", Mode.THERMAL_POWER, T0 + 600, 0.1, 36.0), lead_time_s=590.0,
                  held_back_gpu_s_per_s=9.5)  # fmt: skip
    path = tmp_path / "j.sqlite"
    with SqliteJournal(path) as j:
        j.append_findings([finding_record(risky, T0 + 10), finding_record(hot, T0 + 600)])
    then = runner.invoke(app, ["diagnose", "train", "--journal", str(path), "--at", "2027-01-15T08:05:00Z"])
    assert then.exit_code == 0, then.output
    for said in ("at risk from: cdu/cdu1", "seamguard's action: the planner's, on each part at risk"):
        assert said in then.output, (said, then.output)
    now = runner.invoke(app, ["diagnose", "train", "--journal", str(path)])
    for said in ("named as a risk 590 s before it cost the job anything",
                 "holds back 9.5 healthy GPU-seconds per second"):  # fmt: skip
        assert said in now.output, (said, now.output)
