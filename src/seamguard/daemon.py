"""The daemon's loop: sources -> engine -> safety -> actuators -> journal, one tick at a time.

``Daemon.step(now)`` is one tick and takes its time from the caller; ``run_daemon`` is the
``seamguard run`` driver that reads the wall clock, serves the HTTP API (each job's risk, the
economics, the push endpoint) and stops cleanly on SIGINT/SIGTERM.

A source that fails says so in notices and the engine goes on with the rest. Notices are
journaled when they first appear and again when they clear, not every tick, so a target down
for a day is two journal rows, not 8,640.
"""

from __future__ import annotations

import hashlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import numpy as np
from rich.console import Console

from seamguard.actuators.dispatch import Dispatcher, actuate, build_routes
from seamguard.actuators.sections import Mode
from seamguard.config import Config, load_config
from seamguard.control.controller import Controller
from seamguard.control.safety import SafetyLayer
from seamguard.errors import InputError
from seamguard.journal.records import ActionResultRecord, NoticeRecord, TransitionRecord
from seamguard.journal.sqlite import SqliteJournal
from seamguard.model.inventory import JobRecord, read_inventory, read_jobs
from seamguard.model.states import State
from seamguard.model.topology import Topology, build_topology
from seamguard.service.app import create_app
from seamguard.service.guard import Security
from seamguard.service.metrics import DaemonMetrics, daemon_view, metrics_router
from seamguard.service.server import RunningServer, serve_in_thread
from seamguard.service.startup import build_security, check_exposure, check_tls
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.base import Source, SourceNotice
from seamguard.telemetry.sources.build import build_sources
from seamguard.telemetry.sources.push import PushSource
from seamguard.telemetry.sources.slurm import SlurmSource, job_placements, read_snapshot
from seamguard.telemetry.sources.unknown_names import unknown_names_notice

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepReport:
    now: float
    samples: int
    notices: tuple[SourceNotice, ...]
    transitions: tuple[TransitionRecord, ...]
    actions: tuple[ActionResultRecord, ...]
    safety_notices: tuple[NoticeRecord, ...]


@dataclass
class NoticeLatch:
    """Which source notices are active; a notice is journaled when it appears and when it clears."""

    active: dict[tuple[str, str, str], float] = field(default_factory=dict)

    def update(self, now: float, notices: Sequence[SourceNotice]) -> list[NoticeRecord]:
        seen = {(n.source, n.where, n.message) for n in notices}
        out = [
            NoticeRecord(now, key[0], "warning", f"{key[1]}: {key[2]}")
            for key in seen
            if key not in self.active
        ]
        for key in [k for k in self.active if k not in seen]:
            since = self.active.pop(key)
            out.append(
                NoticeRecord(now, key[0], "info", f"{key[1]}: cleared after {now - since:.0f} s ({key[2]})")
            )
        for key in seen:
            self.active.setdefault(key, now)
        return sorted(out, key=lambda r: (r.source, r.message))


@dataclass(frozen=True)
class DaemonStatus:
    """What an operator checks first: is seamguard reading, acting, or holding back, and why."""

    now: float  # the last tick's time (-inf before the first)
    sources: tuple[str, ...]
    active_notices: tuple[str, ...]  # source problems now, e.g. an exporter that stopped answering
    storm_brake: str  # "" when off; otherwise why seamguard acts on nothing
    breakers: dict[str, str]  # enforcing actuator -> closed | open | half_open
    quarantined: tuple[str, ...]  # nodes seamguard holds out of service
    queued: tuple[str, ...]  # quarantines a budget refused, waiting ("drain_node node/n0003")
    non_healthy: dict[str, int]  # state -> entities in it


class Daemon:
    """One engine with its sources, safety layer and actuators. ``lock`` guards the controller
    against the HTTP service's readers (``service.app``)."""

    def __init__(
        self,
        config: Config,
        topology: Topology,
        sources: Sequence[Source],
        *,
        journal: SqliteJournal | None = None,
        seed: int = 0,
    ) -> None:
        routes = build_routes(config.actuators)
        enforcing = any(r.mode is Mode.ENFORCE for r in routes)
        self.config = config
        self.topology = topology
        self.sources = list(sources)
        self.journal = journal
        self.lock = threading.Lock()
        self.controller = Controller(topology, config, journal=journal, mode="act" if enforcing else "advise")
        self.safety = SafetyLayer(topology, config.safety)
        self.dispatcher = Dispatcher(routes, seed=seed)
        self.latch = NoticeLatch()
        self._known_jobs = {j.job for j in topology.jobs}
        self._unplaced: set[str] = set()
        self._restored = journal is None  # a previous run's quarantines are taken over at the first step
        self.security: Security | None = None  # the HTTP API's auth and audit tally, set by serve_api
        # Taken at the end of each step and replaced whole: the HTTP threads read it without
        # touching the safety layer, the dispatcher or the latch while a step changes them.
        self._status = self._snapshot()
        self._metrics_view = daemon_view(self)  # replaced whole each step, like ``_status``
        self.metrics = DaemonMetrics(lambda: self._metrics_view, self.push)

    @property
    def push(self) -> PushSource | None:
        return next((s for s in self.sources if isinstance(s, PushSource)), None)

    def step(self, now: float) -> StepReport:
        started = time.perf_counter()
        restored = self._restore(now)
        batches: list[TelemetryBatch] = []
        notices: list[SourceNotice] = []
        for source in self.sources:
            try:
                got = source.collect(now)
            except Exception as exc:
                log.exception("source %s failed", source.name)
                notices.append(SourceNotice(source.name, "collect", f"failed: {type(exc).__name__}: {exc}"))
                continue
            batches.append(got.batch)
            notices.extend(got.notices)
            if got.unknown:  # a stable text, journaled once while the same names keep coming
                notices.append(unknown_names_notice(source.name, got.unknown, self.latch.active))
            if isinstance(source, SlurmSource):
                notices.extend(self._place(source))
        batch = TelemetryBatch.concat(batches)
        with self.lock:
            result = self.controller.tick(now, batch)
        results, safety_notices = actuate(
            self.safety, self.dispatcher, now, result.decisions, result.transitions
        )
        # The engine's own notices (a stuck or uncorroborated sensor, a mass-stale heartbeat source)
        # are given once by the engine when they start: journaled as they come.
        engine_notices = [NoticeRecord(now, "engine", "warning", text) for text in result.notices]
        for text in result.notices:
            log.warning("engine: %s", text)
        audit, audit_notices = self.security.drain(now) if self.security is not None else ([], [])
        journal_notices = (
            restored + self.latch.update(now, notices) + safety_notices + engine_notices + audit_notices
        )
        if self.journal is not None and (results or journal_notices or audit):
            self.journal.append_actions(results, journal_notices, audit)
        self._status = self._snapshot()
        self._metrics_view = daemon_view(self)
        self.metrics.observe_step(time.perf_counter() - started, result.transitions, results)
        return StepReport(
            now, len(batch), tuple(notices), result.transitions, tuple(results), tuple(safety_notices)
        )

    def _restore(self, now: float) -> list[NoticeRecord]:
        """Nodes the journal shows quarantined by an earlier run are held again, so that they are
        resumed once healthy rather than left out of service for good."""
        if self._restored or self.journal is None:
            return []
        self._restored = True
        held = self.safety.restore(self.journal.action_results(), now)
        if not held:
            return []
        shown = ", ".join(held[:10]) + (f" and {len(held) - 10} more" if len(held) > 10 else "")
        log.warning("holding %d node(s) an earlier run quarantined: %s", len(held), shown)
        return [
            NoticeRecord(
                now,
                "safety",
                "warning",
                f"{len(held)} node(s) quarantined by an earlier run held again: {shown}",
            )
        ]

    def status(self) -> DaemonStatus:
        """As of the last step (before the first: no tick yet)."""
        return self._status

    def _snapshot(self) -> DaemonStatus:
        now = self.controller.now
        counts = np.bincount(self.controller.classifier.state, minlength=len(State))
        return DaemonStatus(
            now=float(now),
            sources=tuple(s.name for s in self.sources),
            active_notices=tuple(f"{src} {where}: {msg}" for src, where, msg in sorted(self.latch.active)),
            storm_brake=self.safety.brake.reason if self.safety.brake.engaged else "",
            breakers=dict(self.dispatcher.breakers(float(now))),
            quarantined=tuple(self.safety.quarantined()),
            queued=tuple(f"{a.kind} {a.target}" for a in self.safety.queued()),
            non_healthy={
                State(i).label: int(c) for i, c in enumerate(counts.tolist()) if c and i != State.HEALTHY
            },
        )

    def _place(self, slurm: SlurmSource) -> list[SourceNotice]:
        """The scheduler's placements replace the job table's time windows; a job Slurm runs that
        the engine's topology does not know is reported once (the topology is fixed at start)."""
        records = slurm.placements()
        if records is None:
            return []
        known = {r.job: r.nodes for r in records if r.job in self._known_jobs}
        new = {r.job for r in records} - self._known_jobs - self._unplaced
        self._unplaced |= new
        out: list[SourceNotice] = []
        if new:
            out.append(
                SourceNotice(
                    slurm.name,
                    "squeue",
                    f"jobs started after seamguard, not tracked until it restarts: {', '.join(sorted(new)[:10])}",
                )
            )
        try:
            with self.lock:
                self.controller.set_placement(known)
        except ValueError as exc:
            out.append(SourceNotice(slurm.name, "squeue", f"placement not applied: {exc}"))
        return out


def daemon_topology(config: Config, inventory: Path, jobs: Path | None) -> Topology:
    """The inventory, with the jobs of ``jobs`` or, when Slurm is a source and no jobs file is
    given, the jobs Slurm is running now."""
    if not inventory.exists():
        raise InputError(str(inventory), "inventory not found")
    inv = read_inventory(inventory)
    records: tuple[JobRecord, ...] = ()
    if jobs is not None:
        if not jobs.exists():
            raise InputError(str(jobs), "jobs file not found")
        records = read_jobs(jobs, inv)
    elif config.sources.slurm is not None:
        snap, notices = read_snapshot(config.sources.slurm, time.time())
        for n in notices:
            log.warning("%s", n)
        nodes = {r.node for r in inv.nodes}
        records = tuple(r for r in job_placements(snap, config.sources.slurm) if set(r.nodes) <= nodes)
    return build_topology(inv, records)


def run_daemon(
    *,
    config_path: Path | None,
    inventory: Path,
    jobs: Path | None,
    journal_path: Path,
    listen: str | None,
    ticks: int | None,
    console: Console,
    clock: Callable[[], float] | None = None,
    on_ready: Callable[[Daemon, RunningServer | None], None] | None = None,
) -> int:
    """``seamguard run``: tick every ``engine.tick_s`` of wall time until stopped (or ``ticks``)."""
    clock = clock or steady_wall_clock()
    bind = parse_listen(listen) if listen else None  # before anything is opened or written
    cfg = load_config(config_path)
    if not cfg.sources.any():
        raise InputError(
            str(config_path or "config"),
            "sources: nothing to read; configure at least one source (docs/sources.md)",
        )
    security: Security | None = None
    if bind is not None:  # never exposed without credentials; a bad tokens file or certificate stops here
        check_exposure(bind[0], cfg.service)
        if cfg.service.tls is not None:
            check_tls(cfg.service.tls)
        security = build_security(cfg.service, cfg.sources.push.path if cfg.sources.push else None)
    topology = daemon_topology(cfg, inventory, jobs)
    journal = SqliteJournal(journal_path)
    sources: list[Source] = []
    try:
        journal.set_meta("source", "seamguard run")
        journal.set_meta("config_sha256", hashlib.sha256(cfg.model_dump_json().encode()).hexdigest())
        sources = build_sources(cfg.sources, topology, clock)  # pushed stamps are checked against it
        daemon = Daemon(cfg, topology, sources, journal=journal)
        server = serve_api(daemon, *bind, security=security) if bind else None
    except BaseException:  # a busy port, a bad actuator section: release what was opened
        _close(sources, journal)
        raise
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        console.print(f"[yellow]signal {signal.Signals(signum).name}: stopping after this tick[/]")
        stop.set()

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    console.print(
        f"seamguard run: {topology.n_entities:,} entities, {len(topology.jobs)} job(s) · sources {', '.join(s.name for s in daemon.sources)} · "
        f"tick {cfg.engine.tick_s:g} s · journal {journal_path}"
        + (f" · serving {server.url}" if server else ""),
        soft_wrap=True,
    )
    if on_ready is not None:
        on_ready(daemon, server)
    done = 0
    try:
        while not stop.is_set() and (ticks is None or done < ticks):
            started = clock()
            report = daemon.step(started)
            done += 1
            _print_step(console, report)
            stop.wait(max(0.0, cfg.engine.tick_s - (clock() - started)))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if server is not None:
            server.stop()
        daemon.dispatcher.close()
        _close(daemon.sources, journal)
    console.print(f"stopped after {done} tick(s); journal {journal_path}")
    return 0


def steady_wall_clock() -> Callable[[], float]:
    """Unix time that never steps back: the wall clock read once, advanced by the monotonic one.
    The engine refuses a tick earlier than the last, and NTP may step the wall clock backwards."""
    origin = time.time() - time.monotonic()
    return lambda: origin + time.monotonic()


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port); port 0 asks for a free one."""
    host, _, port = listen.rpartition(":")
    if not host.strip("[]") or not port.isdigit() or int(port) > 65535:
        raise InputError("--listen", f"expected HOST:PORT with a port from 0 to 65535, got {listen!r}")
    return host.strip("[]"), int(port)


def _close(sources: Sequence[Source], journal: SqliteJournal) -> None:
    for source in sources:
        close = getattr(source, "close", None)
        if callable(close):
            close()
    journal.close()


def serve_api(daemon: Daemon, host: str, port: int, security: Security | None = None) -> RunningServer:
    """The API behind the authentication layer (``service.guard``): ``security`` from the config
    when not given (no token configured: every request passes, which ``run_daemon`` allows on
    loopback only)."""
    push_cfg = daemon.config.sources.push
    if security is None:
        security = build_security(daemon.config.service, push_cfg.path if push_cfg else None)
    daemon.security = security
    app = create_app(daemon.controller, daemon.lock, security, ticked=lambda: daemon.status().now)

    @app.get("/v1/status")
    def status() -> dict[str, object]:
        """The daemon's own health: sources in trouble, the storm brake, breakers, quarantines."""
        st = daemon.status()
        return {**st.__dict__, "now": st.now if math.isfinite(st.now) else None}

    app.include_router(metrics_router(daemon.metrics))  # GET /metrics (docs/metrics.md)
    push = daemon.push
    if push is not None and daemon.config.sources.push is not None:
        app.include_router(push.router(daemon.config.sources.push.path))
    return serve_in_thread(app, host, port, tls=daemon.config.service.tls)


def _print_step(console: Console, report: StepReport) -> None:
    for t in report.transitions:
        console.print(f"{t.entity} {t.from_state} -> [bold]{t.to_state}[/]: {t.reason}", soft_wrap=True)
    for a in report.actions:
        console.print(
            f"  {a.kind} {a.target} via {a.actuator}: [bold]{a.status}[/] {a.detail}", soft_wrap=True
        )
    for n in report.safety_notices:
        console.print(f"[red]{n.source} {n.level}[/] {n.message}", soft_wrap=True)
