"""The live daemon's world changing while it runs, over its real HTTP service: jobs from the
scheduler and the jobs file, nodes joining and leaving the inventory file, SIGHUP, bad files."""

from __future__ import annotations

import csv
import io
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from rich.console import Console

from seamguard.daemon import Daemon
from seamguard.daemon_run import run_daemon, serve_api
from seamguard.journal.sqlite import SqliteJournal
from seamguard.live_world import LiveWorld
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import (
    INVENTORY_OPTIONAL,
    INVENTORY_REQUIRED,
    JobRecord,
    NodeRecord,
    read_inventory,
    read_jobs,
)
from seamguard.model.states import JobClass, State
from seamguard.model.topology import build_topology
from seamguard.service.server import RunningServer
from seamguard.site_config import DaemonConfig, daemon_config_from_mapping
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.base import Collected, PlacementSource
from seamguard.telemetry.sources.build import build_sources
from seamguard.telemetry.sources.slurm import SlurmSnapshot, SlurmSource
from seamguard.telemetry.sources.slurm_text import parse_jobs
from tests.conftest import small_inventory, small_jobs
from tests.test_daemon import payload, post

POLICY: dict[str, Any] = {
    "engine": {"tick_s": 1, "stale_after_s": 10, "observe_every_s": 10},
    "sources": {"push": {}},
}
T0 = 1.0e9
COLS = (*INVENTORY_REQUIRED, *INVENTORY_OPTIONAL)


def write_inventory(path: Path, nodes: tuple[NodeRecord, ...]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(COLS)
        for n in nodes:
            w.writerow([getattr(n, c) for c in COLS])
    return path


def write_jobs(path: Path, jobs: tuple[JobRecord, ...]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["job", "job_class", "nodes", "start", "end"])
        for j in jobs:
            w.writerow([j.job, j.job_class.value, ";".join(j.nodes), 0, 4.0e9])
    return path


def new_node(name: str) -> NodeRecord:
    return NodeRecord(node=name, rack="r3", cdu="c1", leaf="l1", gpus=4, storage="ckpt0")


@dataclass
class Running:
    daemon: Daemon
    server: RunningServer
    journal: SqliteJournal
    inventory: Path
    jobs: Path
    clock: list[float]
    now: float = T0

    def status(self) -> dict[str, Any]:
        got: dict[str, Any] = httpx.get(f"{self.server.url}/v1/status", trust_env=False, timeout=10).json()
        return got

    def tick(self, hot: str | None = None) -> Any:
        """Push every GPU's temperature for the world the daemon runs on (``hot`` at 97 °C), then step."""
        self.now += 1.0
        self.clock[0] = self.now
        resp = post(self.server, payload(self.daemon.topology, self.now - 0.5, hot))
        assert resp.status_code == 202, resp.text
        return self.daemon.step(self.now)

    def notices(self) -> list[str]:
        return [n.message for n in self.journal.notices()]


@pytest.fixture
def config() -> DaemonConfig:
    return daemon_config_from_mapping(POLICY)


@pytest.fixture
def running(tmp_path: Path, config: DaemonConfig) -> Iterator[Running]:
    """A push-fed daemon on files it watches, serving its HTTP API on a free loopback port."""
    inv_path = write_inventory(tmp_path / "inventory.csv", small_inventory().nodes)
    jobs_path = write_jobs(tmp_path / "jobs.csv", small_jobs())
    inv = read_inventory(inv_path)
    jobs = read_jobs(jobs_path, inv)
    topo = build_topology(inv, jobs)
    journal = SqliteJournal(tmp_path / "journal.sqlite")
    clock = [T0]  # the daemon's clock, moved with each tick: pushed stamps are checked against it
    daemon = Daemon(config, topo, build_sources(config.site.sources, topo, lambda: clock[0]), journal=journal,
                    world=LiveWorld(inv_path, jobs_path, inv, jobs))  # fmt: skip
    server = serve_api(daemon, "127.0.0.1", 0)
    try:
        yield Running(daemon, server, journal, inv_path, jobs_path, clock)
    finally:
        server.stop()
        journal.close()


def quarantined(run: Running, node: str) -> None:
    """``gpu/<node>/1`` hot until its node is quarantined."""
    report = run.tick(hot=f"gpu/{node}/1")
    assert {t.entity: t.to_state for t in report.transitions}.get(f"gpu/{node}/1") == "quarantine"
    assert f"node/{node}" in run.status()["quarantined"]


def test_a_jobs_file_changed_on_disk_is_picked_up(running: Running) -> None:
    running.tick()
    assert running.status()["jobs"] == 2
    write_jobs(running.jobs, (*small_jobs(), JobRecord("later", JobClass.SYNC_TRAINING, ("n07",), 0, 4e9)))
    running.tick()  # seen moving: a changed file is taken once it held still a tick
    assert running.status()["jobs"] == 2
    running.tick()
    assert running.status()["jobs"] == 3
    assert running.daemon.controller.topology.lookup("job/later") is not None
    risk = httpx.get(f"{running.server.url}/v1/jobs/later/risk", trust_env=False, timeout=10)
    assert risk.status_code == 200, risk.text
    assert any("1 job(s) joined: later" in m for m in running.notices())
    write_jobs(running.jobs, small_jobs()[:1])
    running.tick()
    running.tick()
    assert running.status()["jobs"] == 1
    assert any("2 job(s) left: batch, later" in m for m in running.notices())


def test_a_node_added_to_the_inventory_is_scored_and_can_be_quarantined(running: Running) -> None:
    running.tick()
    write_inventory(running.inventory, (*small_inventory().nodes, new_node("n08")))
    running.tick()  # seen moving: a changed file is taken once it held still a tick
    assert running.status()["nodes"] == 8
    running.tick()  # this tick's samples were pushed for the world before it
    assert running.status()["nodes"] == 9 and "node/n08" not in running.status()["quarantined"]
    assert any("1 node(s) joined: n08" in m for m in running.notices())
    assert running.tick().samples == 2 * 36  # its four GPUs are read
    quarantined(running, "n08")
    drains = [a for a in running.journal.action_results() if a.kind == "drain_node"]
    assert [a.target for a in drains] == ["node/n08"]


def test_a_node_removed_is_dropped_and_its_quarantine_released_without_a_resume(running: Running) -> None:
    running.tick()
    quarantined(running, "n02")
    write_inventory(running.inventory, tuple(n for n in small_inventory().nodes if n.node != "n02"))
    write_jobs(running.jobs, (JobRecord("train", JobClass.SYNC_TRAINING, ("n00", "n01"), 0, 4e9),))
    running.tick()  # seen moving: a changed file is taken once it held still a tick
    running.tick()
    assert running.status()["quarantined"] == [] and running.status()["nodes"] == 7
    assert running.daemon.topology.lookup("node/n02") is None
    assert any("node/n02" in m and "no resume sent" in m for m in running.notices())
    for _ in range(3):
        running.now += 2000.0  # past every recovery delay
        running.tick()
    assert not [a for a in running.journal.action_results() if a.kind == "resume_node"]


def test_a_quarantine_keeps_its_state_and_history_across_a_job_and_an_inventory_change(
    running: Running,
) -> None:
    running.tick()
    quarantined(running, "n02")
    ctl = running.daemon.controller
    gpu = "gpu/n02/1"
    before = ctl.store.history("gpu.temp_c")[1][:, int(ctl.topology.local[ctl.topology.index[gpu]])].copy()
    write_jobs(running.jobs, small_jobs()[1:])  # job "train" (on n02) ended
    running.tick(hot=gpu)  # seen moving
    running.tick(hot=gpu)
    write_inventory(running.inventory, (new_node("n0a"), *small_inventory().nodes))  # every index moves
    running.tick(hot=gpu)  # seen moving
    running.tick(hot=gpu)
    topo = ctl.topology
    assert topo.names[EntityKind.NODE][0] == "n0a" and len(topo.jobs) == 1
    assert running.status()["quarantined"] == ["node/n02"]
    assert State(int(ctl.classifier.state[topo.index[gpu]])) is State.QUARANTINE
    after = ctl.store.history("gpu.temp_c")[1][:, int(topo.local[topo.index[gpu]])]
    assert np.count_nonzero(after == 97.0) == np.count_nonzero(before == 97.0) + 4  # kept, and added to
    running.tick(hot=gpu)  # the first tick whose samples were pushed for the new world
    assert ctl.store.current("gpu.temp_c")[int(topo.local[topo.index["gpu/n0a/0"]])] < 70


def test_a_bad_new_file_keeps_the_old_world_with_a_notice(running: Running) -> None:
    running.tick()
    running.inventory.write_text("node,rack\nn00,r0\n", encoding="utf-8")
    assert not [n for n in running.tick().notices if n.source == "world"]  # seen moving: not read yet
    first = running.tick()
    second = running.tick()
    for report in (first, second):
        (notice,) = [n for n in report.notices if n.source == "world"]
        assert notice.where == str(running.inventory) and "kept the current world" in notice.message
        assert "header lacks column(s)" in notice.message
    assert running.status()["nodes"] == 8
    assert sum("kept the current world" in m for m in running.notices()) == 1  # journaled once
    running.jobs.write_text("not a jobs file", encoding="utf-8")
    running.tick()
    assert any(str(running.jobs) in n.where for n in running.tick().notices)
    write_inventory(running.inventory, small_inventory().nodes)
    write_jobs(running.jobs, small_jobs())
    running.tick()
    assert not [n for n in running.tick().notices if n.source == "world"]
    assert any("cleared" in m and str(running.inventory) in m for m in running.notices())


# ---- placement sources ------------------------------------------------------------------------


class SnapshotSlurm(SlurmSource):
    """The Slurm source fed squeue's text from a list instead of a cluster: one text per poll."""

    polls: list[str | None]  # None: squeue failed

    def collect(self, now: float) -> Collected:
        text = self.polls.pop(0)
        if text is None:
            self.last = SlurmSnapshot(now)
            return Collected(TelemetryBatch.empty())
        jobs, _ = parse_jobs(text)
        self.last = SlurmSnapshot(now, jobs=jobs, read=frozenset({"jobs"}))
        return Collected(TelemetryBatch.empty())


SQUEUE = "{id}|RUNNING|train|u|{n}|2026-01-02T03:04:05|NONE|{nodes}|sg-{id}\n"


def test_a_job_slurm_starts_after_the_daemon_is_tracked_the_next_poll(config: DaemonConfig) -> None:
    topo = build_topology(small_inventory())
    slurm = SnapshotSlurm(topo)
    slurm.polls = [
        "",
        SQUEUE.format(id=41, n=2, nodes="n[00-01]"),
        SQUEUE.format(id=41, n=3, nodes="n[00-02]") + SQUEUE.format(id=42, n=1, nodes="n09"),
        None,
        SQUEUE.format(id=42, n=1, nodes="n07"),
    ]
    daemon = Daemon(config, topo, [slurm])
    daemon.step(T0)
    assert daemon.topology.jobs == ()
    daemon.step(T0 + 1)
    ((job, nodes),) = [(j.job, j.nodes) for j in daemon.topology.jobs]
    assert (job, nodes) == ("41", ("n00", "n01"))
    work = daemon.controller.workload_at(T0 + 1)
    assert work.node_job[:3].tolist() == [0, 0, -1]  # the live placement, not a time window
    report = daemon.step(T0 + 2)  # 41 grows; 42 names a node the inventory lacks: reported
    assert [(j.job, j.nodes) for j in daemon.topology.jobs] == [("41", ("n00", "n01", "n02"))]
    assert any("not in the inventory: 42 (n09)" in n.message for n in report.notices)
    daemon.step(T0 + 3)  # squeue failed: that ends no job
    assert [j.job for j in daemon.topology.jobs] == ["41"]
    daemon.step(T0 + 4)  # 41 ended, 42 moved onto a known node
    assert [(j.job, j.nodes) for j in daemon.topology.jobs] == [("42", ("n07",))]
    assert daemon.controller.workload_at(T0 + 4).node_job.tolist() == [-1] * 7 + [0]


@dataclass
class Placer:
    """Any source with ``placements()`` (a Kubernetes source, say): the daemon treats it as Slurm."""

    name: str
    records: tuple[JobRecord, ...] | None = None

    def collect(self, now: float) -> Collected:
        return Collected(TelemetryBatch.empty())

    def placements(self) -> tuple[JobRecord, ...] | None:
        return self.records


def test_the_scheduler_jobs_of_the_start_are_kept_until_it_reports(config: DaemonConfig) -> None:
    started = JobRecord("7", JobClass.SYNC_TRAINING, ("n01",), 0, np.inf)
    topo = build_topology(small_inventory(), (started,))
    slurm = Placer("slurm")
    daemon = Daemon(config, topo, [slurm])
    daemon.step(T0)
    assert daemon.topology.jobs == (started,)  # no poll yet: not a cluster with no jobs
    slurm.records = ()
    daemon.step(T0 + 1)
    assert daemon.topology.jobs == ()  # it said: no job runs


def test_the_placements_of_every_source_are_combined(config: DaemonConfig) -> None:
    topo = build_topology(small_inventory())
    a = Placer("k8s", (JobRecord("svc", JobClass.ONLINE_DECODE, ("n03",), 0, np.inf),))
    b = Placer("slurm2", (JobRecord("svc", JobClass.ONLINE_DECODE, ("n04",), 0, np.inf),
                          JobRecord("t", JobClass.SYNC_TRAINING, ("n05",), 0, np.inf)))  # fmt: skip
    quiet = Placer("down")  # reports nothing: not a placement of no jobs
    assert isinstance(a, PlacementSource)
    daemon = Daemon(config, topo, [a, b, quiet])
    daemon.step(T0)
    assert {j.job: j.nodes for j in daemon.topology.jobs} == {"svc": ("n03", "n04"), "t": ("n05",)}


# ---- SIGHUP -----------------------------------------------------------------------------------


def test_sighup_re_reads_the_files_at_the_next_tick(tmp_path: Path) -> None:
    """A change that keeps the file's size and time is seen only on SIGHUP."""
    inv = write_inventory(tmp_path / "inventory.csv", small_inventory().nodes)
    stamp = inv.stat()
    (tmp_path / "sg.yaml").write_text("engine: {tick_s: 1}\nsources: {push: {}}\n", encoding="utf-8")
    seen: list[Daemon] = []

    def ready(daemon: Daemon, _server: RunningServer | None) -> None:
        seen.append(daemon)
        renamed = tuple(n if n.node != "n07" else NodeRecord(**{**n.__dict__, "node": "n77"})
                        for n in small_inventory().nodes)  # fmt: skip
        write_inventory(inv, renamed)
        os.utime(inv, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
        os.kill(os.getpid(), signal.SIGHUP)

    clock = iter(T0 + 10.0 * i for i in range(100))
    run_daemon(config_path=tmp_path / "sg.yaml", inventory=inv, jobs=None, journal_path=tmp_path / "j.sqlite",
               listen=None, ticks=2, console=Console(file=io.StringIO()), clock=lambda: next(clock),
               on_ready=ready)  # fmt: skip
    (daemon,) = seen
    assert daemon.topology.lookup("node/n77") is not None and daemon.topology.lookup("node/n07") is None
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL  # the previous handler is back


def test_an_inventory_that_empties_a_budget_partition_keeps_the_old_world(tmp_path: Path) -> None:
    """A partition whose patterns would match no node is a config error at start; the same
    inventory arriving while the daemon runs keeps the current world with a notice naming the
    partition, and the daemon goes on ticking (it does not stop half-changed)."""
    policy = {**POLICY, "safety": {"budgets": {"partitions": {"late": {"nodes": ["n07"]}}}}}
    config = daemon_config_from_mapping(policy)
    inv_path = write_inventory(tmp_path / "inventory.csv", small_inventory().nodes)
    inv = read_inventory(inv_path)
    topo = build_topology(inv, small_jobs())
    clock = [T0]
    daemon = Daemon(config, topo, build_sources(config.site.sources, topo, lambda: clock[0]),
                    world=LiveWorld(inv_path, None, inv, small_jobs()))  # fmt: skip
    daemon.step(T0)
    write_inventory(inv_path, small_inventory().nodes[:-1])
    daemon.step(T0 + 1)  # seen moving: a changed file is taken once it held still a tick
    for now in (T0 + 2, T0 + 3):
        report = daemon.step(now)
        (notice,) = [n for n in report.notices if n.source == "world"]
        assert "kept the current world" in notice.message and "partitions.late" in notice.message
    assert daemon.status().nodes == 8 and daemon.controller.topology is daemon.safety.topology


def test_checkpoint_settings_may_name_a_job_that_is_not_running_yet() -> None:
    """The scheduler's jobs come and go: a job named under ``checkpoint.jobs`` that is not running
    when the daemon starts (not started yet, or ended before a restart) does not stop it, and its
    settings apply once it runs. (A fixed job table, as ``seamguard score`` reads, still refuses a
    name it lacks: tests/test_checkpoint_loop.py.)"""
    config = daemon_config_from_mapping({**POLICY, "checkpoint": {"jobs": {"41": {"state_gb_per_gpu": 9.0}}}})
    topo = build_topology(small_inventory())
    slurm = SnapshotSlurm(topo)
    slurm.polls = [
        "",
        SQUEUE.format(id=41, n=2, nodes="n[00-01]"),
        SQUEUE.format(id=41, n=2, nodes="n[00-01]"),
    ]
    daemon = Daemon(config, topo, [slurm])
    for now in (T0, T0 + 1, T0 + 2):
        daemon.step(now)
    loop = daemon.controller.checkpoint_loop
    assert loop is not None and loop.last is not None
    assert [j.job for j in daemon.topology.jobs] == ["41"] and loop.last.plans.choice.size == 1


def test_a_held_node_whose_board_was_replaced_is_judged_afresh_and_resumed(running: Running) -> None:
    """The inventory says n02 now carries B200s: the engine forgets what it learnt of the old
    board, but the node is still drained in the scheduler, so its hold stays (not dropped as if
    it had left) and it is resumed after the recovery delay once the new board reads healthy."""
    running.tick()
    quarantined(running, "n02")
    nodes = tuple(replace(n, model="B200") if n.node == "n02" else n for n in small_inventory().nodes)
    write_inventory(running.inventory, nodes)
    running.tick()  # seen moving: a changed file is taken once it held still a tick
    running.tick()
    ctl = running.daemon.controller
    assert running.status()["quarantined"] == ["node/n02"]
    assert not any("left the inventory" in m for m in running.notices())
    assert any("1 node(s) joined: n02" in m and "1 node(s) left: n02" in m for m in running.notices())
    assert State(int(ctl.classifier.state[ctl.topology.index["gpu/n02/1"]])) is not State.QUARANTINE
    release = running.daemon.safety.release_at("node/n02")
    assert release is not None and release > running.now
    running.now = release + 1.0
    running.tick()
    running.tick()
    resumed = [a.target for a in running.journal.action_results() if a.kind == "resume_node"]
    assert resumed and set(resumed) == {"node/n02"}


def test_a_world_change_waits_for_a_reader_holding_the_engine(running: Running) -> None:
    """An HTTP reader holding the controller's lock sees one world throughout: the change is
    applied once it lets go, never under it."""
    running.tick()
    ctl = running.daemon.controller
    before = ctl.topology
    write_jobs(running.jobs, small_jobs()[:1])
    running.tick()  # seen moving: a changed file is taken once it held still a tick
    running.now += 1.0
    running.clock[0] = running.now
    holding, seen = threading.Event(), []

    def reader() -> None:  # what a request handler does while it reads the engine
        with running.daemon.lock:
            holding.set()
            seen.append(ctl.topology)
            time.sleep(0.3)
            seen.append(ctl.topology)

    thread = threading.Thread(target=reader)
    thread.start()
    assert holding.wait(5)
    running.daemon.step(running.now)  # its world change waits for the reader
    thread.join(5)
    assert seen == [before, before] and len(ctl.topology.jobs) == 1


def test_an_inventory_caught_half_written_drops_no_node_and_no_quarantine(running: Running) -> None:
    """An editor or ``cat >`` leaves the file half-written for a moment: the first lines only, a
    valid inventory of fewer nodes. Taken at once, it would drop the nodes not yet written and
    release their quarantines; a changed file is taken only once it held still for a tick."""
    running.tick()
    quarantined(running, "n07")
    nodes = small_inventory().nodes
    write_inventory(running.inventory, nodes[:3])  # the writer has got this far
    running.tick()
    write_inventory(running.inventory, (*nodes, new_node("n08")))  # and finished, with one more
    running.tick()
    assert running.status()["nodes"] == 8 and running.status()["quarantined"] == ["node/n07"]
    assert not any("left" in m for m in running.notices())
    running.tick()  # the whole file, held still: taken
    assert running.status()["nodes"] == 9 and running.status()["quarantined"] == ["node/n07"]
    assert any("1 node(s) joined: n08" in m for m in running.notices())
    assert not any("left" in m for m in running.notices())
