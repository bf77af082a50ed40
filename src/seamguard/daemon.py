"""The daemon's loop: sources -> engine -> safety -> actuators -> journal, one tick at a time.

``Daemon.step(now)`` is one tick and takes its time from the caller; ``run_daemon`` is the
``seamguard run`` driver that reads the wall clock, serves the HTTP API (each job's risk, the
economics, the push endpoint), re-reads the inventory and jobs files on SIGHUP (and whenever
they change) and stops cleanly on SIGINT/SIGTERM. The world (nodes, jobs) may change between
ticks; ``_follow_world`` applies it before a tick (``live_world``, ``model.world``).

A source that fails says so in notices and the engine goes on with the rest. Notices are
journaled when they first appear and again when they clear, not every tick, so a target down
for a day is two journal rows, not 8,640.
"""

from __future__ import annotations

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
import numpy.typing as npt
from rich.console import Console
from rich.markup import escape

from seamguard.actuators.dispatch import Dispatcher, Route, actuate, build_routes
from seamguard.actuators.sections import Mode
from seamguard.control.budgets import check_partitions
from seamguard.control.controller import Controller
from seamguard.control.engine_world import apply_world
from seamguard.control.safety import SafetyLayer
from seamguard.errors import InputError
from seamguard.journal.records import ActionResultRecord, NoticeRecord, TransitionRecord
from seamguard.journal.sqlite import SqliteJournal
from seamguard.live_world import LiveWorld
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import JobRecord, read_inventory, read_jobs
from seamguard.model.states import State
from seamguard.model.topology import Topology, build_topology
from seamguard.model.world import by_id, inventory_of
from seamguard.service.app import create_app
from seamguard.service.guard import Security
from seamguard.service.metrics import DaemonMetrics, MetricsView, daemon_view, metrics_router
from seamguard.service.server import RunningServer, serve_in_thread
from seamguard.service.startup import build_security, check_exposure, check_tls
from seamguard.site_config import DaemonConfig, load_daemon_config
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.base import PlacementSource, Source, SourceNotice, WorldFollower
from seamguard.telemetry.sources.build import build_sources
from seamguard.telemetry.sources.push import PushSource
from seamguard.telemetry.sources.slurm import job_placements, read_snapshot
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
    nodes: int = 0  # the world now: nodes in the inventory...
    jobs: int = 0  # ...and jobs in the job table


class Daemon:
    """One engine with its sources, safety layer and actuators. ``lock`` guards the controller
    against the HTTP service's readers (``service.app``)."""

    def __init__(
        self,
        config: DaemonConfig,
        topology: Topology,
        sources: Sequence[Source],
        *,
        journal: SqliteJournal | None = None,
        seed: int = 0,
        world: LiveWorld | None = None,
        routes: Sequence[Route] | None = None,
    ) -> None:
        """``routes``: the actuators, by default those the config's ``actuators`` section builds."""
        routes = build_routes(config.site.actuators) if routes is None else list(routes)
        enforcing = any(r.mode is Mode.ENFORCE for r in routes)
        self.config = config
        self.topology = topology
        self.sources = list(sources)
        self.journal = journal
        self.lock = threading.Lock()
        self.controller = Controller(topology, config.policy, journal=journal, mode="act" if enforcing else "advise",
                                     live_jobs=True)  # fmt: skip
        self.safety = SafetyLayer(topology, config.site.safety)
        self.dispatcher = Dispatcher(routes, seed=seed)
        self.latch = NoticeLatch()
        # Where the world comes from (the inventory and jobs files, watched); the placement
        # sources are asked each tick. Without files: the topology's own inventory and jobs.
        if world is None:  # the topology's jobs are the scheduler's when one reports placements
            scheduled = any(isinstance(s, PlacementSource) for s in self.sources)
            file_jobs, placed = ((), topology.jobs) if scheduled else (topology.jobs, ())
            world = LiveWorld(None, None, inventory_of(topology), file_jobs, placed)
        world.check_inventory = lambda inv: check_partitions(
            config.site.safety.budgets.partitions, [r.node for r in inv.nodes]
        )  # a partition left with no node would stop the safety layer mid-change
        self.world = world
        self._stale_sources: dict[int, Topology] = {}  # id(source) -> the world it still indexes by
        self._back: dict[int, npt.NDArray[np.int64]] = {}  # id(that world) -> its index -> today's
        self._restored = journal is None  # a previous run's quarantines are taken over at the first step
        self.security: Security | None = None  # the HTTP API's auth and audit tally, set by serve_api
        # Taken at the end of each step and replaced whole: the HTTP threads read it without
        # touching the safety layer, the dispatcher or the latch while a step changes them.
        self._status = self._snapshot()
        self._metrics_view = self._view()  # replaced whole each step, like ``_status``
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
            batches.append(self._in_current_world(source, got.batch))
            notices.extend(got.notices)
            if got.unknown:  # a stable text, journaled once while the same names keep coming
                notices.append(unknown_names_notice(source.name, got.unknown, self.latch.active))
        batch, world_notices = self._follow_world(now, TelemetryBatch.concat(batches), notices)
        with self.lock:
            self.controller.held_nodes = self.safety.held_nodes()
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
            restored
            + world_notices
            + self.latch.update(now, notices)
            + safety_notices
            + engine_notices
            + audit_notices
        )
        if self.journal is not None and (results or journal_notices or audit):
            self.journal.append_actions(results, journal_notices, audit)
        self._status = self._snapshot()
        self._metrics_view = self._view()
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

    def _view(self) -> MetricsView:
        now = float(self.controller.now)
        return daemon_view(self.topology, self.controller.classifier.state, now, self.latch.active,
                           [s.name for s in self.sources], self.safety, self.dispatcher.breakers(now))  # fmt: skip

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
            nodes=self.topology.count(EntityKind.NODE),
            jobs=len(self.topology.jobs),
        )

    # ---- a world that changes while the daemon runs (``live_world``, ``model.world``) --------
    def _follow_world(
        self, now: float, batch: TelemetryBatch, notices: list[SourceNotice]
    ) -> tuple[TelemetryBatch, list[NoticeRecord]]:
        """Before the tick: the world the files and the placement sources describe now. A change
        is applied to the engine and the safety layer (every memory carried over), followed by the
        sources that can, journaled as a notice; this tick's samples are re-indexed into it."""
        placements = {s.name: s.placements() for s in self.sources if isinstance(s, PlacementSource)}
        update = self.world.update(self.topology, placements)
        notices.extend(update.notices)
        out: list[NoticeRecord] = []
        change = update.change
        if change is not None:
            with self.lock:
                apply_world(self.controller, change)
                out.extend(self.safety.carry_over(change, now))
            self.topology = change.new
            for source in self.sources:
                if isinstance(source, WorldFollower):
                    source.follow(change)
                else:
                    self._stale_sources.setdefault(id(source), change.old)
            # samples go by entity id (a board replaced under its name is still read as that name)
            self._back = {
                id(change.old): change.back() if change.jobs_only else by_id(change.old, change.new)
            }
            batch = batch.reindexed(self._back[id(change.old)])
            summary = change.summary() or "job placements changed"
            log.info("world: %s", summary)
            out.insert(0, NoticeRecord(now, "world", "info", summary))
        stale = [s.name for s in self.sources if id(s) in self._stale_sources]
        if stale:
            notices.append(SourceNotice("world", ", ".join(stale), "does not follow world changes: "
                                        "entities added since start are not read from it until a restart"))  # fmt: skip
        if update.placement is not None:
            try:
                with self.lock:
                    self.controller.set_placement(update.placement)
            except ValueError as exc:
                notices.append(SourceNotice("world", "placement", f"not applied: {exc}"))
        return batch, out

    def _in_current_world(self, source: Source, batch: TelemetryBatch) -> TelemetryBatch:
        """A source that does not follow world changes indexes by the world it was built in: its
        samples are re-indexed by entity id (entities that left are dropped)."""
        built = self._stale_sources.get(id(source))
        if built is None or built is self.topology:
            return batch
        back = self._back.get(id(built))
        if back is None:
            back = self._back[id(built)] = by_id(built, self.topology)
        return batch.reindexed(back)


def daemon_topology(config: DaemonConfig, inventory: Path, jobs: Path | None) -> Topology:
    """The inventory, with the jobs of ``jobs`` or, when Slurm is a source and no jobs file is
    given, the jobs Slurm is running now."""
    return daemon_world(config, inventory, jobs)[0]


def daemon_world(config: DaemonConfig, inventory: Path, jobs: Path | None) -> tuple[Topology, LiveWorld]:
    """The topology to start on, and the files it came from, watched for changes (``live_world``)."""
    if not inventory.exists():
        raise InputError(str(inventory), "inventory not found")
    inv = read_inventory(inventory)
    records: tuple[JobRecord, ...] = ()
    file_jobs: tuple[JobRecord, ...] = ()
    if jobs is not None:
        if not jobs.exists():
            raise InputError(str(jobs), "jobs file not found")
        records = file_jobs = read_jobs(jobs, inv)
    elif config.site.sources.slurm is not None:
        snap, notices = read_snapshot(config.site.sources.slurm, time.time())
        for n in notices:
            log.warning("%s", n)
        nodes = {r.node for r in inv.nodes}
        records = tuple(r for r in job_placements(snap, config.site.sources.slurm) if set(r.nodes) <= nodes)
    scheduled = () if jobs is not None else records  # the scheduler's jobs until it first reports
    return build_topology(inv, records), LiveWorld(inventory, jobs, inv, file_jobs, scheduled)


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
    cfg = load_daemon_config(config_path)
    site = cfg.site
    if not site.sources.any():
        raise InputError(
            str(config_path or "config"),
            "sources: nothing to read; configure at least one source (docs/sources.md)",
        )
    security: Security | None = None
    if bind is not None:  # never exposed without credentials; a bad tokens file or certificate stops here
        check_exposure(bind[0], site.service)
        if site.service.tls is not None:
            check_tls(site.service.tls)
        security = build_security(site.service, site.sources.push.path if site.sources.push else None)
    topology, world = daemon_world(cfg, inventory, jobs)
    journal = SqliteJournal(journal_path)
    sources: list[Source] = []
    try:
        journal.set_meta("source", "seamguard run")
        journal.set_meta("config_sha256", cfg.sha256())
        sources = build_sources(site.sources, topology, clock)  # pushed stamps are checked against it
        daemon = Daemon(cfg, topology, sources, journal=journal, world=world)
        server = serve_api(daemon, *bind, security=security) if bind else None
    except BaseException:  # a busy port, a bad actuator section: release what was opened
        _close(sources, journal)
        raise
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        console.print(f"[yellow]signal {signal.Signals(signum).name}: stopping after this tick[/]")
        stop.set()

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, _reload_on_hup(daemon, console))
    console.print(
        f"seamguard run: {topology.n_entities:,} entities, {len(topology.jobs)} job(s) · sources {', '.join(s.name for s in daemon.sources)} · "
        f"tick {cfg.policy.engine.tick_s:g} s · journal {journal_path}"
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
            stop.wait(max(0.0, cfg.policy.engine.tick_s - (clock() - started)))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if server is not None:
            server.stop()
        daemon.dispatcher.close()
        _close(daemon.sources, journal)
    console.print(f"stopped after {done} tick(s); journal {journal_path}")
    return 0


def _reload_on_hup(daemon: Daemon, console: Console) -> Callable[[int, FrameType | None], None]:
    """SIGHUP: re-read the inventory and jobs files at the next tick (a flag: never mid-tick)."""

    def _hup(_signum: int, _frame: FrameType | None) -> None:
        console.print("[yellow]SIGHUP: re-reading the inventory and jobs files at the next tick[/]")
        daemon.world.request_reload()

    return _hup


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
    site = daemon.config.site
    push_cfg = site.sources.push
    if security is None:
        security = build_security(site.service, push_cfg.path if push_cfg else None)
    daemon.security = security
    app = create_app(daemon.controller, daemon.lock, security, ticked=lambda: daemon.status().now)

    @app.get("/v1/status")
    def status() -> dict[str, object]:
        """The daemon's own health: sources in trouble, the storm brake, breakers, quarantines."""
        st = daemon.status()
        return {**st.__dict__, "now": st.now if math.isfinite(st.now) else None}

    app.include_router(metrics_router(daemon.metrics))  # GET /metrics (docs/metrics.md)
    push = daemon.push
    if push is not None and push_cfg is not None:
        app.include_router(push.router(push_cfg.path))
    service = site.service
    return serve_in_thread(app, host, port, tls=service.tls, connections=service.connections)


def _print_step(console: Console, report: StepReport) -> None:
    """Every text from outside (a peer's answer in an action's detail, a name) is escaped: a
    ``[/]`` in it would raise rich's MarkupError in the main loop and stop the daemon."""
    for t in report.transitions:
        console.print(
            f"{escape(t.entity)} {t.from_state} -> [bold]{t.to_state}[/]: {escape(t.reason)}", soft_wrap=True
        )
    for a in report.actions:
        console.print(
            f"  {a.kind} {escape(a.target)} via {a.actuator}: [bold]{a.status}[/] {escape(a.detail)}",
            soft_wrap=True,
        )
    for n in report.safety_notices:
        console.print(f"[red]{n.source} {n.level}[/] {escape(n.message)}", soft_wrap=True)
