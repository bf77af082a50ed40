"""Replays of the issue's attacks on restarts, journals and config files: a restart that invents
quarantines from advice, two writers on one journal, a YAML alias bomb as ``--config``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from seamguard.control.safety import SAFETY, SafetyLayer
from seamguard.daemon import Daemon
from seamguard.errors import InputError
from seamguard.journal.lock import lock_path
from seamguard.journal.records import ActionResultRecord, NoticeRecord, TransitionRecord
from seamguard.journal.sqlite import SqliteJournal
from seamguard.model.actions import ActionStatus
from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology, build_topology
from seamguard.site_config import daemon_config_from_mapping
from seamguard.telemetry.sources.build import build_sources
from tests.conftest import small_inventory
from tests.http_stub import Recorder, serve
from tests.test_daemon import CLOCK
from tests.test_safety import drain, fleet, kinds, layer

CARRIED_OUT = {ActionStatus.DONE, ActionStatus.ALREADY}


def result(
    ts: float, kind: str, node: str, status: ActionStatus, actuator: str = "slurm"
) -> ActionResultRecord:
    return ActionResultRecord(ts, kind, f"node/{node}", actuator, status.value, "", 0, ts, 0)


# ---- honest restarts: SafetyLayer.restore -------------------------------------------------------


@pytest.mark.parametrize("status", list(ActionStatus))
def test_a_restart_holds_a_drain_only_when_it_was_carried_out(status: ActionStatus) -> None:
    """Advised, refused, failed, skipped, given up, held, cancelled: the node never left service."""
    s = layer(fleet(), delay=600.0, max_nodes=1)
    held = s.restore([result(1_000.0, "drain_node", "n00", status)], 5_000.0)
    expect = ["node/n00"] if status in CARRIED_OUT else []
    assert held == expect and s.quarantined() == expect
    # The budget (one node) is spent only by a node really held: another drain passes or waits.
    out = s.tick(5_010.0, [drain("n09", 5_010.0)])
    assert kinds(out.actions) == ([] if expect else [("drain_node", "node/n09")])


@pytest.mark.parametrize("status", list(ActionStatus))
def test_a_release_counts_only_when_it_was_carried_out(status: ActionStatus) -> None:
    """A node drained for real whose resume was only advised (or failed...) is still out of service."""
    s = layer(fleet(), delay=600.0)
    journal = [
        result(1_000.0, "drain_node", "n00", ActionStatus.DONE),
        result(2_000.0, "resume_node", "n00", status),
    ]
    expect = [] if status in CARRIED_OUT else ["node/n00"]
    assert s.restore(journal, 5_000.0) == expect and s.quarantined() == expect


@pytest.mark.parametrize("status", list(ActionStatus))
def test_repeat_offender_history_counts_only_carried_out_quarantines(status: ActionStatus) -> None:
    """Two earlier drains answered ``status`` and one done now: the delay doubles per real one only."""
    s = layer(fleet(), delay=600.0)
    journal = [
        result(1_000.0, "drain_node", "n00", status),
        result(1_500.0, "resume_node", "n00", status),
        result(2_000.0, "drain_node", "n00", status),
        result(2_500.0, "resume_node", "n00", status),
        result(3_000.0, "drain_node", "n00", ActionStatus.DONE),
    ]
    assert s.restore(journal, 5_000.0) == ["node/n00"]
    assert s.recovery_delay(0, 5_000.0) == (2_400.0 if status in CARRIED_OUT else 600.0)


def test_the_safety_layers_own_records_never_count_as_carried_out() -> None:
    """``already quarantined`` is the safety layer talking, not the cluster."""
    s = layer(fleet(), delay=600.0)
    journal = [result(1_000.0, "drain_node", "n00", ActionStatus.ALREADY, actuator=SAFETY)]
    assert s.restore(journal, 5_000.0) == [] and s.quarantined() == []


def test_a_restart_under_a_storm_brake_holds_nothing_it_did_not_do() -> None:
    """The brake turned 40 drains into advice (the log actuator answered for slurm): nothing held."""
    s = layer(fleet(nodes=48), delay=600.0, max_nodes=16)
    journal = [result(1_000.0, "drain_node", f"n{i:02d}", ActionStatus.ADVISED, "log") for i in range(40)]
    assert s.restore(journal, 5_000.0) == [] and isinstance(s, SafetyLayer)
    assert int(s.budgets.quarantined.sum()) == 0


# ---- the scenario, end to end -----------------------------------------------------------

HOT_NODES = 40  # as many hot GPUs, one per node, across every rack and CDU: the storm brake engages
SECRET = "restart-secret"


class Cluster(Recorder):
    """The webhook receiver standing in for the cluster: records every action it is asked to do."""

    received: ClassVar[list[dict[str, Any]]] = []


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("SEAMGUARD_WEBHOOK_SECRET", SECRET)
    Cluster.received = []
    with serve(Cluster) as url:
        yield url


def big_fleet() -> Topology:
    return build_topology(small_inventory(nodes=48, gpus=2, racks_per_cdu=2, nodes_per_rack=4))


def push_body(topo: Topology, ts: float, hot: list[str], xid: str | None = None) -> bytes:
    gpus = [f"gpu/{n}" for n in topo.names[EntityKind.GPU]]
    temps = [97.0 if g in hot else 60.0 + i % 3 for i, g in enumerate(gpus)]
    bits = [64.0 if g in hot else 0.0 for g in gpus]
    body: dict[str, list[Any]] = {
        "entity": gpus + gpus,
        "signal": ["gpu.temp_c"] * len(gpus) + ["gpu.throttle_reasons"] * len(gpus),
        "timestamp": [ts] * (2 * len(gpus)),
        "value": temps + bits,
    }
    if xid is not None:
        for key, value in (("entity", xid), ("signal", "gpu.xid"), ("timestamp", ts), ("value", 79.0)):
            body[key].append(value)
    return json.dumps(body).encode()


def step(daemon: Daemon, topo: Topology, now: float, hot: list[str], xid: str | None = None) -> Any:
    assert daemon.push is not None
    daemon.push.ingest(push_body(topo, now - 0.5, hot, xid))
    return daemon.step(now)


def test_a_restart_after_40_advised_drains_holds_none_and_acts_within_the_budget(
    cluster: str, tmp_path: Path
) -> None:
    """The issue's replay: enforce mode, a storm brake turns 40 drains into advice, restart. The
    restarted daemon holds nothing, a real XID 79 drain goes through (``max_nodes: 16`` has room)
    and no ``resume_node`` ever reaches the cluster for a node it never drained."""
    topo = big_fleet()
    config = daemon_config_from_mapping(
        {
            "engine": {"tick_s": 1, "stale_after_s": 10, "observe_every_s": 10},
            "sources": {"push": {}},
            "actuators": {"webhook": {"url": cluster, "mode": "enforce"}},
            "safety": {
                "budgets": {"max_nodes": 16, "max_fleet_pct": 100, "domain_pct": 100, "per_hour": 100},
                "recovery": {"healthy_for_s": 60},
            },
        }
    )
    hot = [f"gpu/n{i:02d}/0" for i in range(HOT_NODES)]
    path = tmp_path / "journal.sqlite"
    t0 = 1.0e9
    with SqliteJournal(path) as journal:
        first = Daemon(config, topo, build_sources(config.site.sources, topo, CLOCK), journal=journal)
        report = step(first, topo, t0, hot)
        assert first.safety.brake.engaged
        drains = [a for a in report.actions if a.kind == "drain_node"]
        assert len(drains) == HOT_NODES and {a.status for a in drains} == {"advised"}
        first.dispatcher.close()
    assert Cluster.received == []  # under the brake nothing reached the cluster
    with SqliteJournal(path) as journal:
        second = Daemon(config, topo, build_sources(config.site.sources, topo, CLOCK), journal=journal)
        step(second, topo, t0 + 100, [])
        assert second.status().quarantined == ()
        assert not [n for n in journal.notices() if "earlier run" in n.message]
        report = step(second, topo, t0 + 101, [], xid="gpu/n45/1")
        drained = [(a.target, a.status) for a in report.actions if a.kind == "drain_node"]
        assert drained == [("node/n45", "done")], report.actions
        assert second.status().quarantined == ("node/n45",)
        for k in range(2, 200, 20):  # well past the recovery delay
            step(second, topo, t0 + 100 + k, [])
        second.dispatcher.close()
        resumed = {r.target for r in journal.action_results() if r.kind == "resume_node"}
    sent = [(a["kind"], a["target"]) for a in Cluster.received]
    assert ("drain_node", "node/n45") in sent
    assert {t for k, t in sent if k == "resume_node"} <= {"node/n45"}
    assert resumed <= {"node/n45"}


# ---- one writer per journal ---------------------------------------------------------------------

WRITER = """
import sys, time
from pathlib import Path
from seamguard.journal.records import NoticeRecord
from seamguard.journal.sqlite import SqliteJournal
j = SqliteJournal(Path(sys.argv[1]))
print("ready", flush=True)
i = 0
while True:
    j.append_actions([], [NoticeRecord(float(i), "child", "info", f"n{i}")])
    i += 1
    time.sleep(0.002)
"""


@pytest.fixture
def child_writer(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """Another process writing the journal as fast as it can until killed."""
    path = tmp_path / "j.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path("src").resolve()), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield path, proc
    finally:
        proc.kill()
        proc.wait()


def test_a_second_writer_is_refused_naming_the_journal_and_the_holder(
    child_writer: tuple[Path, subprocess.Popen[str]],
) -> None:
    path, proc = child_writer
    with pytest.raises(InputError) as err:
        SqliteJournal(path)
    text = str(err.value)
    assert str(path) in text and f"pid {proc.pid} on {socket.gethostname()} since " in text
    assert "not a seamguard journal" not in text
    before = len(SqliteJournal(path, read_only=True).notices())
    time.sleep(0.2)
    assert len(SqliteJournal(path, read_only=True).notices()) > before  # the refused one wrote nothing
    # Nor can a run in this process open it (the daemon, score and replay all write through here).
    with pytest.raises(InputError, match=f"pid {proc.pid}"):
        SqliteJournal(path, create=False)


def test_seamguard_run_on_a_journal_another_process_writes_is_refused_before_it_starts(
    child_writer: tuple[Path, subprocess.Popen[str]], tmp_path: Path
) -> None:
    """A second daemon on the journal: refused naming the holder, nothing journaled, no port held."""
    import io

    from rich.console import Console

    from seamguard.daemon_run import run_daemon
    from tests.test_daemon import write_config, write_inventory

    path, proc = child_writer
    with pytest.raises(InputError) as err:
        run_daemon(
            config_path=write_config(tmp_path / "sg.yaml"), inventory=write_inventory(tmp_path / "inv.csv"),
            jobs=None, journal_path=path, listen="127.0.0.1:0", ticks=1, console=Console(file=io.StringIO()),
        )  # fmt: skip
    assert str(path) in str(err.value) and f"pid {proc.pid}" in str(err.value)
    with SqliteJournal(path, read_only=True) as reader:
        assert reader.get_meta("source") is None  # the refused daemon wrote nothing


def test_readers_read_while_another_process_writes_and_the_lock_dies_with_its_holder(
    child_writer: tuple[Path, subprocess.Popen[str]],
) -> None:
    path, proc = child_writer
    seen = []
    for _ in range(5):
        with SqliteJournal(path, read_only=True) as reader:
            seen.append(len(reader.notices()))
        time.sleep(0.05)
    assert seen == sorted(seen) and seen[-1] > seen[0], seen
    proc.send_signal(signal.SIGKILL)  # a crash: no clean-up runs
    proc.wait()
    with SqliteJournal(path) as journal:  # the kernel dropped the lock: no stale lock to clear
        assert json.loads(lock_path(path).read_text())["pid"] == os.getpid()
        journal.append_actions([], [NoticeRecord(1e9, "parent", "info", "took over")])
    assert lock_path(path).read_text() == ""  # released on close: no holder named any more
    with SqliteJournal(path) as again:  # and taken again by the next writer
        assert again.notices()[-1].message == "took over"


def test_seamguard_explain_reads_a_journal_a_writer_holds(tmp_path: Path) -> None:
    """``python -m seamguard explain`` in another process while this one holds the writer lock."""
    path = tmp_path / "j.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path("src").resolve()), *sys.path])}
    with SqliteJournal(path) as writer:
        writer.append([TransitionRecord(100.0, "gpu/n00/1", "healthy", "degraded", 0.7, 0.1, 0.0, "hot")], [])
        done = subprocess.run(
            [sys.executable, "-m", "seamguard", "explain", "gpu/n00/1", "--journal", str(path)],
            capture_output=True, text=True, env={**env, "COLUMNS": "200"}, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "degraded" in done.stdout
        writer.append([TransitionRecord(200.0, "gpu/n00/1", "degraded", "healthy", 0.1, 0.1, 0.0, "ok")], [])


def test_busy_and_foreign_files_are_told_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that is no journal says so; a journal SQLite keeps locked says busy, not "not a journal"."""
    import sqlite3

    import seamguard.journal.sqlite as sqlite_journal

    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)")
    with pytest.raises(InputError, match="not a seamguard journal"):
        SqliteJournal(other, read_only=True)
    path = tmp_path / "j.sqlite"
    # Another program holds the new file's exclusive lock (before WAL mode, it blocks even reads),
    # as a second process creating the same journal at the same instant used to.
    hog = sqlite3.connect(path, isolation_level=None)
    hog.execute("BEGIN EXCLUSIVE")
    hog.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    monkeypatch.setattr(sqlite_journal, "BUSY_TIMEOUT_S", 0.1)
    try:
        with pytest.raises(InputError, match="journal busy") as err:
            SqliteJournal(path)
        assert str(path) in str(err.value) and "not a seamguard journal" not in str(err.value)
    finally:
        hog.execute("ROLLBACK")
        hog.close()
    SqliteJournal(path).close()  # the failed open released its writer lock


# ---- safe config loading ------------------------------------------------------------------------

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def _refused_fast(call: Any) -> InputError:
    """``call`` raises InputError allocating under 5 MB on the way, and within seconds: expanding
    the bomb would take minutes and gigabytes. (The bound is loose on purpose: a loaded CI machine
    under tracemalloc took 0.6 s for what a quiet one does in 0.2 s.)"""
    import tracemalloc

    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(InputError) as err:
            call()
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 5.0 and peak < 5 * 2**20, (elapsed, peak)
    return err.value


def test_the_billion_laughs_config_is_refused_at_once_naming_the_file(tmp_path: Path) -> None:
    from seamguard.site_config import load_daemon_config

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 700  # 81 aliases standing for 9^9 = 387 million strings
    err = _refused_fast(lambda: load_daemon_config(bomb))
    assert str(err).startswith(f"{bomb}:") and "alias bomb" in str(err)


def test_more_aliases_than_any_config_needs_are_refused_even_if_small(tmp_path: Path) -> None:
    from seamguard.site_config import load_daemon_config
    from seamguard.yaml_input import MAX_ALIASES

    many = tmp_path / "many.yaml"
    many.write_text("x: &x 1\nl: [" + ",".join(["*x"] * (MAX_ALIASES + 1)) + "]\n")
    err = _refused_fast(lambda: load_daemon_config(many))
    assert f"more than {MAX_ALIASES} aliases" in str(err) and str(many) in str(err)


def test_a_recursive_alias_and_an_oversized_file_are_refused(tmp_path: Path) -> None:
    from seamguard.site_config import load_daemon_config
    from seamguard.twin.scenario import load_scenario
    from seamguard.yaml_input import MAX_YAML_BYTES

    loop = tmp_path / "loop.yaml"
    loop.write_text("engine: &e {again: *e}\n")
    assert "recursive" in str(_refused_fast(lambda: load_daemon_config(loop)))
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * (MAX_YAML_BYTES // 10 + 1))
    err = _refused_fast(lambda: load_daemon_config(big))
    assert str(big) in str(err) and "bytes" in str(err)
    # a scenario is a user YAML file too
    bomb = tmp_path / "scenario.yaml"
    bomb.write_text(BILLION_LAUGHS)
    assert "alias bomb" in str(_refused_fast(lambda: load_scenario(str(bomb))))


def test_a_legit_config_loads_with_no_aliases_and_with_a_few(tmp_path: Path) -> None:
    from seamguard.site_config import load_daemon_config

    plain = tmp_path / "plain.yaml"
    plain.write_text("engine:\n  tick_s: 5\nsafety:\n  budgets:\n    max_nodes: 12\n")
    cfg = load_daemon_config(plain)
    assert cfg.policy.engine.tick_s == 5 and cfg.site.safety.budgets.max_nodes == 12
    shared = tmp_path / "shared.yaml"
    shared.write_text(
        "x-guard: &guard {max_attempts: 2}\n"
        "actuators:\n  webhook: {url: 'http://127.0.0.1:9/', guard: *guard}\n"
    )
    with pytest.raises(InputError, match="x-guard"):  # the anchor's own key is not a config key...
        load_daemon_config(shared)
    shared.write_text(
        "actuators:\n  webhook: {url: 'http://127.0.0.1:9/', guard: &guard {max_attempts: 2}}\n"
        "  haproxy: {socket: 'tcp://127.0.0.1:9', servers: {}, guard: *guard}\n"
    )
    cfg = load_daemon_config(shared)  # ...but a shared block is fine
    assert cfg.site.actuators.webhook is not None and cfg.site.actuators.webhook.guard.max_attempts == 2
    assert cfg.site.actuators.haproxy is not None and cfg.site.actuators.haproxy.guard.max_attempts == 2


def test_a_writer_refuses_another_programs_sqlite_database_and_leaves_it_untouched(tmp_path: Path) -> None:
    """``seamguard run --journal`` pointed at another program's database used to switch it to WAL
    and add the journal's tables beside its own."""
    import sqlite3

    other = tmp_path / "grafana.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE dashboard (id INTEGER)")
    db.commit()
    db.close()
    before = other.read_bytes()
    with pytest.raises(
        InputError, match=r"not a seamguard journal: another program's SQLite database \(tables dashboard\)"
    ):
        SqliteJournal(other)
    assert other.read_bytes() == before
    with SqliteJournal(tmp_path / "new.sqlite") as fresh:  # a new file is still a journal to make
        fresh.set_meta("source", "test")
    with SqliteJournal(tmp_path / "new.sqlite") as again:  # and one of ours opens again
        assert again.path.name == "new.sqlite"
