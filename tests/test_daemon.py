"""The daemon's own behaviour, without external systems: pushed telemetry over a real loopback
HTTP server ticks the engine; a source that raises costs a notice, not the loop; notices are
journaled when they appear and when they clear; ``seamguard run`` from the command line, its
happy path and its bad input."""

from __future__ import annotations

import csv
import io
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from seamguard.cli import app
from seamguard.daemon import Daemon, NoticeLatch
from seamguard.daemon_run import parse_listen, run_daemon
from seamguard.errors import InputError
from seamguard.journal.records import NoticeRecord
from seamguard.journal.sqlite import SqliteJournal
from seamguard.model.catalog import signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import INVENTORY_OPTIONAL, INVENTORY_REQUIRED
from seamguard.model.topology import Topology, build_topology
from seamguard.service.app import create_app
from seamguard.service.server import RunningServer, serve_in_thread
from seamguard.site_config import DaemonConfig, daemon_config_from_mapping
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.base import Collected, SourceNotice
from seamguard.telemetry.sources.build import build_sources
from tests.conftest import small_inventory, small_jobs

HOT = "gpu/n02/1"  # the GPU the pushed payloads run hot (and throttled)
POLICY: dict[str, Any] = {
    "engine": {"tick_s": 1, "stale_after_s": 10, "observe_every_s": 10},
    "sources": {"push": {}},
}
runner = CliRunner(env={"COLUMNS": "400"})


def CLOCK() -> float:  # noqa: N802
    """The daemon's clock for the tests that step it by hand: pushed stamps near 1e9 are recent."""
    return 1.0e9


def payload(topo: Topology, ts: float, hot: str | None = HOT) -> dict[str, list[Any]]:
    """Every GPU's temperature and throttle reasons as JSON columns; ``hot`` at 97 °C, HW thermal."""
    gpus = [f"gpu/{n}" for n in topo.names[EntityKind.GPU]]
    temps = [60.0 + i % 3 for i in range(len(gpus))]
    bits = [0.0] * len(gpus)
    if hot is not None:
        temps[gpus.index(hot)] = 97.0
        bits[gpus.index(hot)] = 64.0  # NVML clocks-event reason HW thermal slowdown
    return {
        "entity": gpus + gpus,
        "signal": ["gpu.temp_c"] * len(gpus) + ["gpu.throttle_reasons"] * len(gpus),
        "timestamp": [ts] * (2 * len(gpus)),
        "value": temps + bits,
    }


@pytest.fixture
def topo() -> Topology:
    return build_topology(small_inventory(), small_jobs())


@pytest.fixture
def config() -> DaemonConfig:
    return daemon_config_from_mapping(POLICY)


@pytest.fixture
def served(topo: Topology, config: DaemonConfig) -> Iterator[tuple[Daemon, RunningServer]]:
    """A push-only daemon whose push router and API are served on a free loopback port."""
    daemon = Daemon(config, topo, build_sources(config.site.sources, topo, CLOCK))
    assert daemon.push is not None and config.site.sources.push is not None
    api = create_app(daemon.controller, daemon.lock)
    api.include_router(daemon.push.router(config.site.sources.push.path))
    server = serve_in_thread(api)
    try:
        yield daemon, server
    finally:
        server.stop()


def post(server: RunningServer, body: dict[str, list[Any]]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/push", json=body, trust_env=False, timeout=10)


# ---- Daemon.step ------------------------------------------------------------------------------


def test_step_ticks_the_engine_on_pushed_data(served: tuple[Daemon, RunningServer], topo: Topology) -> None:
    daemon, server = served
    n_gpus = topo.count(EntityKind.GPU)
    t0 = 1.0e9
    first = daemon.step(t0)  # nothing pushed yet: a tick on no data, no notice, no transition
    assert first.samples == 0 and not first.notices and not first.transitions
    resp = post(server, payload(topo, t0 + 0.5))
    assert resp.status_code == 202, resp.text
    report = daemon.step(t0 + 1)
    assert report.samples == 2 * n_gpus and not report.notices
    temps = daemon.controller.store.current("gpu.temp_c")
    hot = int(topo.local[topo.index[HOT]])
    assert temps[hot] == 97.0 and np.all(temps[np.arange(n_gpus) != hot] < 63)
    moved = {t.entity: t.to_state for t in report.transitions}
    assert moved == {HOT: "quarantine"}, report.transitions
    drains = [(a.kind, a.target, a.status) for a in report.actions if a.kind == "drain_node"]
    assert drains == [("drain_node", "node/n02", "advised")]  # no actuator enforces: advice only
    # the queue was drained: the next tick gets nothing new, and the values age without new data
    again = daemon.step(t0 + 2)
    assert again.samples == 0 and not again.transitions
    assert httpx.get(f"{server.url}/healthz", trust_env=False).json()["status"] == "ok"


def test_unknown_names_in_a_push_are_a_mapping_notice(
    served: tuple[Daemon, RunningServer], topo: Topology
) -> None:
    daemon, server = served
    body = payload(topo, 1.0e9, hot=None)
    body = {
        k: [*v, extra]
        for (k, v), extra in zip(body.items(), ("gpu/n99/0", "gpu.temp_c", 1.0e9, 50.0), strict=True)
    }
    assert post(server, body).status_code == 202
    report = daemon.step(1.0e9 + 1)
    assert report.samples == 2 * topo.count(EntityKind.GPU)  # the known rows arrive
    assert [(n.source, n.where) for n in report.notices] == [("push", "mapping")]
    assert "gpu/n99/0" in report.notices[0].message


class Flaky:
    """A source with a bug: ``collect`` raises while ``broken`` (sources must not raise; this one does)."""

    name = "flaky"

    def __init__(self) -> None:
        self.broken = True

    def collect(self, now: float) -> Collected:
        if self.broken:
            raise RuntimeError("lost its connection pool")
        return Collected(TelemetryBatch.empty())


def test_a_raising_source_is_a_notice_and_the_loop_goes_on(
    topo: Topology, config: DaemonConfig, tmp_path: Path
) -> None:
    flaky = Flaky()
    sources = [flaky, *build_sources(config.site.sources, topo, CLOCK)]
    with SqliteJournal(tmp_path / "journal.sqlite") as journal:
        daemon = Daemon(config, topo, sources, journal=journal)
        push = daemon.push
        assert push is not None
        t0 = 1.0e9
        reports = []
        for k in range(3):
            push.ingest(json.dumps(payload(topo, t0 + k - 0.5, hot=None)).encode())
            reports.append(daemon.step(t0 + k))
        for r in reports:
            assert r.samples == 2 * topo.count(EntityKind.GPU)  # the push source's data still arrives
            assert [str(n) for n in r.notices] == [
                "flaky collect: failed: RuntimeError: lost its connection pool"
            ]
        assert daemon.controller.store.fresh("gpu.temp_c").all()
        notices = journal.notices()
        assert [(n.source, n.level) for n in notices] == [("flaky", "warning")]  # once, not every tick
        assert notices[0].message == "collect: failed: RuntimeError: lost its connection pool"
        assert notices[0].ts == t0

        flaky.broken = False
        healed = daemon.step(t0 + 10)
        daemon.step(t0 + 11)
        assert not healed.notices
        notices = journal.notices()
        assert [(n.source, n.level) for n in notices] == [("flaky", "warning"), ("flaky", "info")]
        assert notices[1].message.startswith("collect: cleared after 10 s")
        assert notices[1].ts == t0 + 10


class StuckMeter:
    """A BMS whose register for one CDU's flow froze: the same 405.0 on every poll."""

    name = "bms"

    def __init__(self, topo: Topology) -> None:
        self.cdu = topo.index["cdu/c0"]
        self.flow = signal_catalog()["cdu.flow_lpm"].index

    def collect(self, now: float) -> Collected:
        one = np.ones(1)
        return Collected(TelemetryBatch(self.cdu * one.astype(np.int64), self.flow * one.astype(np.int64),
                                        now * one - 0.5, 405.0 * one))  # fmt: skip


def test_engine_notices_are_journaled_once(topo: Topology, tmp_path: Path) -> None:
    """A stuck sensor the engine spots (docs/scoring.md) reaches the journal, once."""
    config = daemon_config_from_mapping({**POLICY, "detectors": {"flatline": {"cdu.flow_lpm": 5}}})
    with SqliteJournal(tmp_path / "journal.sqlite") as journal:
        daemon = Daemon(config, topo, [StuckMeter(topo)], journal=journal)
        for k in range(10):
            daemon.step(1.0e9 + k)
        notices = [(n.source, n.level, n.ts) for n in journal.notices()]
        assert notices == [("engine", "warning", 1.0e9 + 5)]
        assert journal.notices()[0].message.startswith(
            "cdu.flow_lpm flatlined on cdu/c0 at 405 L/min for 5 s"
        )


def test_notice_latch_journals_appearing_and_clearing_once() -> None:
    latch = NoticeLatch()
    a = SourceNotice("modbus", "cdu-cdu0 unit 1", "timed out after 1 s")
    b = SourceNotice("slurm", "squeue", "exited 1: boom")
    first = latch.update(100.0, [a, b])
    assert [(r.source, r.level, r.message) for r in first] == [
        ("modbus", "warning", "cdu-cdu0 unit 1: timed out after 1 s"),
        ("slurm", "warning", "squeue: exited 1: boom"),
    ]
    assert latch.update(101.0, [b, a]) == []  # still there: nothing new
    assert latch.update(102.0, [a, a]) == [
        NoticeRecord(102.0, "slurm", "info", "squeue: cleared after 2 s (exited 1: boom)")
    ]
    assert latch.update(103.0, [a]) == []
    back = latch.update(110.0, [b])  # b again (a new episode), a cleared
    assert [(r.source, r.level) for r in back] == [("modbus", "info"), ("slurm", "warning")]
    assert back[0].message == "cdu-cdu0 unit 1: cleared after 10 s (timed out after 1 s)"


# ---- seamguard run ------------------------------------------------------------------------------


def write_inventory(path: Path) -> Path:
    cols = (*INVENTORY_REQUIRED, *INVENTORY_OPTIONAL)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for n in small_inventory().nodes:
            w.writerow([getattr(n, c) for c in cols])
    return path


def write_jobs(path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["job", "job_class", "nodes", "start", "end"])
        for j in small_jobs():
            w.writerow([j.job, j.job_class.value, ";".join(j.nodes), 0, 4.0e9])
    return path


def write_config(path: Path, **over: Any) -> Path:
    path.write_text(yaml.safe_dump({**POLICY, **over}), encoding="utf-8")
    return path


def seamguard_command() -> list[str]:
    """The installed entry point beside this interpreter (the venv's), else the same through -c."""
    exe = Path(sys.executable).parent / "seamguard"
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from seamguard.cli import main; main()"]


def test_run_from_the_command_line_serves_push_and_writes_a_journal(tmp_path: Path) -> None:
    journal_path = tmp_path / "journal.sqlite"
    cmd = [*seamguard_command(), "run", "--inventory", str(write_inventory(tmp_path / "inv.csv")),
           "--jobs", str(write_jobs(tmp_path / "jobs.csv")), "--config", str(write_config(tmp_path / "sg.yaml")),
           "--journal", str(journal_path), "--listen", "127.0.0.1:0", "--ticks", "3"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={"COLUMNS": "400", "PATH": ""}
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the banner names the served URL before the first tick
            lines.append(line)
            if "serving http://" in line:
                break
        url = lines[-1].rsplit("serving ", 1)[1].strip()
        assert not url.endswith(":0"), url
        topo = build_topology(small_inventory(), small_jobs())
        resp = httpx.post(f"{url}/v1/push", json=payload(topo, time.time()), trust_env=False, timeout=10)
        assert resp.status_code == 202, resp.text
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines) + rest
    assert proc.returncode == 0, output
    assert "seamguard run: " in output and "sources push" in output and "stopped after 3 tick(s)" in output
    assert f"{HOT} unknown -> quarantine" in output  # the pushed payload reached the engine
    with SqliteJournal(journal_path, create=False) as journal:
        assert journal.get_meta("source") == "seamguard run"
        assert journal.get_meta("config_sha256")
        assert [(t.entity, t.to_state) for t in journal.transitions()] == [(HOT, "quarantine")]
        advised = journal.action_results(target="node/n02")
        assert [(a.kind, a.status) for a in advised] == [("drain_node", "advised")]


def busy_port() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no sources", "sources: nothing to read; configure at least one source"),
        ("missing inventory", "nope.csv: inventory not found"),
        ("listen without a port", "--listen: expected HOST:PORT with a port from 0 to 65535, got 'localhost'"),
        ("listen port out of range", "--listen: expected HOST:PORT with a port from 0 to 65535, got '127.0.0.1:99999'"),
        ("listen on a busy port", "cannot listen on 127.0.0.1:{port}: Address already in use"),
        ("zero ticks", "--ticks: must be at least 1, got 0"),
        ("bad config key", "key sources.push.capacity_rows: Input should be greater than or equal to 1"),
    ],
)  # fmt: skip
def test_run_refuses_bad_input_in_one_line(tmp_path: Path, case: str, expected: str) -> None:
    inv = write_inventory(tmp_path / "inv.csv")
    cfg = write_config(tmp_path / "sg.yaml")
    journal = tmp_path / "journal.sqlite"
    args = {"--inventory": str(inv), "--config": str(cfg), "--journal": str(journal), "--ticks": "1"}
    held = busy_port()
    try:
        port = held.getsockname()[1]
        if case == "no sources":
            args["--config"] = str(write_config(tmp_path / "none.yaml", sources={}))
        elif case == "missing inventory":
            args["--inventory"] = str(tmp_path / "nope.csv")
        elif case == "listen without a port":
            args["--listen"] = "localhost"
        elif case == "listen port out of range":
            args["--listen"] = "127.0.0.1:99999"
        elif case == "listen on a busy port":
            args["--listen"] = f"127.0.0.1:{port}"
        elif case == "zero ticks":
            args["--ticks"] = "0"
        elif case == "bad config key":
            args["--config"] = str(
                write_config(tmp_path / "bad.yaml", sources={"push": {"capacity_rows": 0}})
            )
        result = runner.invoke(app, ["run", *(x for kv in args.items() for x in kv)])
    finally:
        held.close()
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert expected.format(port=port) in lines[0], lines[0]
    if case != "listen on a busy port":
        assert not journal.exists(), "bad input is refused before the journal is written"


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    for bad in ("8080", ":8080", "[]:80", "host:", "host:http", "host:65536"):
        with pytest.raises(InputError, match="--listen"):
            parse_listen(bad)


def test_a_failed_start_releases_the_journal(tmp_path: Path) -> None:
    """A port that cannot be bound fails the run after the journal was opened: it is closed again
    (SQLite removes the write-ahead log when its last connection closes)."""
    journal = tmp_path / "journal.sqlite"
    held = busy_port()
    try:
        with pytest.raises(OSError, match="cannot listen") as failure:
            run_daemon(
                config_path=write_config(tmp_path / "sg.yaml"), inventory=write_inventory(tmp_path / "inv.csv"),
                jobs=None, journal_path=journal, listen=f"127.0.0.1:{held.getsockname()[1]}", ticks=1,
                console=Console(file=io.StringIO()),
            )  # fmt: skip
    finally:
        held.close()
    assert failure.traceback  # the failed call's frames (and their locals) are still alive here
    assert journal.exists() and not journal.with_name(journal.name + "-wal").exists()
    with SqliteJournal(journal, create=False) as j:
        assert j.get_meta("source") == "seamguard run"


def test_status_says_what_is_wrong_what_is_held_and_what_waits(topo: Topology) -> None:
    """GET /v1/status: the source in trouble, the quarantined node, the drain a budget holds back."""
    from seamguard.daemon_run import serve_api

    config = daemon_config_from_mapping({**POLICY, "safety": {"budgets": {"max_nodes": 1}}})
    flaky = Flaky()
    daemon = Daemon(config, topo, [flaky, *build_sources(config.site.sources, topo, CLOCK)])
    push = daemon.push
    assert push is not None
    server = serve_api(daemon, "127.0.0.1", 0)
    try:
        before = httpx.get(f"{server.url}/v1/status", trust_env=False).json()
        assert before["now"] is None and before["quarantined"] == [] and before["storm_brake"] is None
        t0 = 1.0e9
        body = payload(topo, t0 - 0.5)
        second = "gpu/n03/2"  # a second hot GPU on another node: the budget allows one drain
        i = body["entity"].index(second)
        body["value"][i] = 97.0
        body["value"][i + len(body["entity"]) // 2] = 64.0
        push.ingest(json.dumps(body).encode())
        daemon.step(t0)
        st = httpx.get(f"{server.url}/v1/status", trust_env=False).json()
    finally:
        server.stop()
    assert st["now"] == t0 and st["sources"] == ["flaky", "push"]
    assert st["active_notices"] == ["flaky collect: failed: RuntimeError: lost its connection pool"]
    # the two hot GPUs; the racks, CDUs and jobs nobody pushed about are unknown, not failed
    assert {k: v for k, v in st["non_healthy"].items() if k != "unknown"} == {"quarantine": 2}
    assert len(st["quarantined"]) == 1 and len(st["queued"]) == 1
    assert {st["quarantined"][0], st["queued"][0].split()[1]} == {"node/n02", "node/n03"}
    assert st["queued"][0].startswith("drain_node ")
    # The engine ticks knowing which nodes the safety layer holds: containment counts no spare there.
    held = daemon.safety.held_nodes().tolist()
    assert held == [topo.local[topo.index[st["quarantined"][0]]]]
    daemon.step(t0 + 30.0)
    assert daemon.controller.held_nodes.tolist() == held


def test_the_daemon_clock_never_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """NTP may step the wall clock back; the engine refuses a tick earlier than the last."""
    import time as time_module

    from seamguard.daemon_run import steady_wall_clock

    wall = [1.0e9]
    mono = [100.0]
    monkeypatch.setattr(time_module, "time", lambda: wall[0])
    monkeypatch.setattr(time_module, "monotonic", lambda: mono[0])
    clock = steady_wall_clock()
    first = clock()
    wall[0] -= 30.0  # the wall clock steps back half a minute
    mono[0] += 1.0
    assert first == 1.0e9 and clock() == first + 1.0


def test_a_restarted_daemon_takes_over_the_quarantines_of_the_run_before(
    topo: Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run 1 drains n02 through an enforcing webhook and stops. Run 2, on the same journal, holds
    n02 again, says so once in the journal, and resumes it when the delay has passed. (An advised
    drain is not taken over: tests/test_security_journal.py.)"""
    from tests.http_stub import Ok, serve

    monkeypatch.setenv("SEAMGUARD_WEBHOOK_SECRET", "s")
    path = tmp_path / "journal.sqlite"
    t0 = 1.0e9
    with serve(Ok) as url:
        config = daemon_config_from_mapping(
            {**POLICY, "actuators": {"webhook": {"url": url, "mode": "enforce"}}}
        )
        with SqliteJournal(path) as journal:
            first = Daemon(config, topo, build_sources(config.site.sources, topo, CLOCK), journal=journal)
            assert first.push is not None
            first.push.ingest(json.dumps(payload(topo, t0 - 0.5)).encode())
            drained = first.step(t0).actions
            assert [(a.target, a.status) for a in drained if a.kind == "drain_node"] == [("node/n02", "done")]
            assert first.safety.quarantined() == ["node/n02"]
            first.dispatcher.close()
        with SqliteJournal(path) as journal:
            second = Daemon(config, topo, build_sources(config.site.sources, topo, CLOCK), journal=journal)
            assert second.push is not None
            second.push.ingest(json.dumps(payload(topo, t0 + 99.5, hot=None)).encode())
            second.step(t0 + 100)
            assert second.status().quarantined == ("node/n02",)
            held = [n for n in journal.notices() if "earlier run" in n.message]
            assert len(held) == 1 and "node/n02" in held[0].message
            delay = config.site.safety.recovery.healthy_for_s
            resumed = second.step(t0 + 100 + delay + 1).actions
            assert [(a.kind, a.target, a.status) for a in resumed if a.kind == "resume_node"] == [
                ("resume_node", "node/n02", "done")
            ]
            assert second.safety.quarantined() == []
            second.dispatcher.close()


def test_a_restarted_daemon_keeps_the_fleet_s_learned_failure_rate(topo: Topology, tmp_path: Path) -> None:
    """Run 1 learns that the fleet fails more than nominal and stops; run 2, on the same journal,
    starts from what run 1 learned (decayed over the time down), and says so in the journal."""
    config = daemon_config_from_mapping(POLICY)
    path = tmp_path / "journal.sqlite"
    t0 = 1.0e9
    with SqliteJournal(path) as journal:
        first = Daemon(config, topo, build_sources(config.site.sources, topo, CLOCK), journal=journal)
        first.step(t0)
        first.controller.learner.observed += 3.0  # three failures counted (control.failure_tally)
        first.step(t0 + 1)
        learnt = first.controller.learner.scale()
        assert learnt > 1.5
        first.dispatcher.close()
    with SqliteJournal(path) as journal:
        second = Daemon(config, topo, build_sources(config.site.sources, topo, CLOCK), journal=journal)
        second.step(t0 + 600)
        assert second.controller.learner.scale() == pytest.approx(learnt, rel=0.05)
        [taken] = [n for n in journal.notices() if "learned failure rate taken over" in n.message]
        assert f"x{second.controller.learner.scale():.2f}"[:3] in taken.message
        second.dispatcher.close()
