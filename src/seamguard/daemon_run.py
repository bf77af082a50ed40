"""``seamguard run``: the wall-clock driver around ``Daemon`` (``daemon``).

It reads the wall clock, serves the HTTP API (each job's risk, the economics, the push endpoint,
``/v1/status``, ``/metrics``), campaigns for the leadership with ``ha`` configured (renewals on a
thread of their own), re-reads the inventory and jobs files on SIGHUP and stops cleanly on
SIGINT/SIGTERM, resigning the leadership so that a follower takes over at once.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.markup import escape

from seamguard.daemon import Daemon, StepReport
from seamguard.daemon_world import daemon_world
from seamguard.diagnose.domains import record_domains
from seamguard.diagnose.grouping import group_actions, group_transitions, upstream_cause
from seamguard.errors import InputError
from seamguard.ha.leadership import Leadership, LeadershipLoop
from seamguard.journal.base import Journal
from seamguard.journal.buffered import BufferedJournal
from seamguard.journal.postgres import PostgresJournal, StaleEpochError, is_postgres, shown_location
from seamguard.journal.sqlite import SqliteJournal
from seamguard.service.app import create_app
from seamguard.service.console import console_router
from seamguard.service.guard import Security
from seamguard.service.metrics import metrics_router
from seamguard.service.ops_api import ops_router
from seamguard.service.routing_api import routing_router
from seamguard.service.server import RunningServer, serve_in_thread
from seamguard.service.startup import build_security, check_exposure, check_tls
from seamguard.site_config import load_daemon_config
from seamguard.telemetry.sources.base import Source
from seamguard.telemetry.sources.build import build_sources

log = logging.getLogger(__name__)


def run_daemon(
    *,
    config_path: Path | None,
    inventory: Path,
    jobs: Path | None,
    journal_path: Path | str,
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
    leadership = Leadership(site.ha) if site.ha is not None else None
    journal = open_journal(str(journal_path), leadership)
    sources: list[Source] = []
    try:
        journal.set_meta("source", "seamguard run")
        journal.set_meta("config_sha256", cfg.sha256())
        record_domains(journal, topology)  # explain names upstream causes
        sources = build_sources(site.sources, topology, clock)  # pushed stamps are checked against it
        daemon = Daemon(cfg, topology, sources, journal=journal, world=world, leadership=leadership)
        server = serve_api(daemon, *bind, security=security) if bind else None
    except BaseException:  # a busy port, a bad actuator section: release what was opened
        _close(sources, journal)
        raise
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        console.print(f"[yellow]signal {signal.Signals(signum).name}: stopping after this tick[/]")
        stop.set()
        daemon.desk.wake.set()

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, _reload_on_hup(daemon, console))
    console.print(
        f"seamguard run: {topology.n_entities:,} entities, {len(topology.jobs)} job(s) · sources {', '.join(s.name for s in daemon.sources)} · "
        f"tick {cfg.policy.engine.tick_s:g} s · journal {shown_location(str(journal_path))}"
        + (f" · serving {server.url}" if server else ""),
        soft_wrap=True,
    )
    loop = LeadershipLoop(daemon.leadership) if daemon.leadership is not None else None
    if loop is not None:
        loop.start()  # renewals on a thread of their own: a long tick never delays one
    if on_ready is not None:
        on_ready(daemon, server)
    done = 0
    notices_logged: set[tuple[str, str, str]] = set()  # source notices in the log, until they clear
    wake = daemon.desk.wake  # an operator's request wakes the loop between ticks
    try:
        next_tick = clock()
        while not stop.is_set() and (ticks is None or done < ticks):
            if clock() >= next_tick:
                started = clock()
                report = daemon.step(started)
                done += 1
                cause = upstream_cause(daemon.topology, daemon.controller.classifier.state)
                _print_step(console, report, clock() - started, notices_logged, cause)
                next_tick = started + cfg.policy.engine.tick_s
            else:
                daemon.operate(clock())
            wake.wait(max(0.0, next_tick - clock()))
            wake.clear()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if loop is not None:
            loop.stop()  # resigns: a follower leads at its next campaign, not a TTL later
        if server is not None:
            daemon.desk.closing.set()  # the consoles' live streams end, so the server stops at once
            server.stop()
        daemon.dispatcher.close()
        _close(daemon.sources, journal)
    console.print(f"stopped after {done} tick(s); journal {shown_location(str(journal_path))}")
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


def open_journal(location: str, leadership: Leadership | None) -> Journal:
    """A SQLite file, or a PostgreSQL DSN (``postgresql://``) for replicas sharing one journal,
    each write fenced by this replica's epoch (0 while it follows: refused once anyone led)."""
    if not is_postgres(location):
        return SqliteJournal(Path(location))

    def epoch() -> int:
        return leadership.own_epoch() if leadership is not None else 0

    def stale(exc: StaleEpochError) -> None:
        log.error("journal: %s", exc)

    return BufferedJournal(PostgresJournal(location, epoch=epoch, on_stale=stale))


def _close(sources: Sequence[Source], journal: Journal) -> None:
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
        """The daemon's own health: its mode, sources in trouble, the storm brake, breakers,
        quarantines, the operator's controls and the actions awaiting approval."""
        return daemon.status_json()

    app.include_router(metrics_router(daemon.metrics))  # GET /metrics (docs/metrics.md)
    app.include_router(ops_router(daemon))  # the operator's controls and the console's reads
    app.include_router(
        routing_router(lambda: daemon.controller, daemon.lock)
    )  # GET /v1/routing (docs/serving.md)
    app.include_router(console_router())  # GET /console (docs/operating.md)
    push = daemon.push
    if push is not None and push_cfg is not None:
        app.include_router(push.router(push_cfg.path))
    service = site.service
    return serve_in_thread(app, host, port, tls=service.tls, connections=service.connections)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def iso_utc(ts: float, timespec: str = "seconds") -> str:
    """``2026-01-01T00:00:30Z``: one zone for every replica's log, whatever the host's."""
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec=timespec).replace("+00:00", "Z")
    except (ValueError, OverflowError, OSError):
        return f"{ts:.3f}"  # no calendar holds it (a fake clock): the number, not a crash


class UtcIsoFormatter(logging.Formatter):
    """Log times in ISO 8601 UTC to the millisecond, so that lines from several hosts sort and
    line up with the journal's and the exporters' times (logging's default is local time)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return iso_utc(record.created, "milliseconds")


@contextmanager
def run_logging(level: int = logging.INFO) -> Iterator[logging.Handler | None]:
    """The daemon's log for ``seamguard run``: timestamped, levelled lines on stderr.

    Without it Python prints only warnings, bare (no time, no level), and the INFO heartbeat
    of each tick never shows. seamguard's own loggers log from ``level`` on; other libraries
    (httpx logs every request at INFO) from WARNING. As ``logging.basicConfig`` does, a host
    that already handles the root logger (a test runner, an embedding program) keeps its own
    handlers and gets no second one (yields None then). Undone on exit, so that a caller in
    the same process finds logging as it was."""
    root, ours = logging.getLogger(), logging.getLogger("seamguard")
    handler: logging.Handler | None = None
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(UtcIsoFormatter(LOG_FORMAT))
        root.addHandler(handler)
    before = ours.level
    ours.setLevel(level)
    try:
        yield handler
    finally:
        if handler is not None:
            root.removeHandler(handler)
        ours.setLevel(before)


def _print_step(
    console: Console,
    report: StepReport,
    duration_s: float | None = None,
    logged: set[tuple[str, str, str]] | None = None,
    cause_of: Callable[[str], str | None] | None = None,
) -> None:
    """A tick for the operator: its transitions, actions and safety notices on the console, and
    in the log (``run_logging``) one INFO heartbeat, so that a quiet daemon is seen to be ticking
    (and how long a tick takes, against ``engine.tick_s``), and a WARNING when a source notice
    appears: a source in trouble is otherwise seen only in the journal and ``/v1/status``.

    Transitions and actions are grouped by cause (``cause_of``: an unwell domain upstream).
    ``logged`` holds the notices already logged, kept by the caller from tick to tick: a notice
    is logged when it appears and again (INFO) when it clears, not at every tick it lasts.
    Without it, every notice of the tick is logged.

    Every text from outside (a peer's answer in an action's detail, a name) is escaped: a
    ``[/]`` in it would raise rich's MarkupError in the main loop and stop the daemon."""
    took = "" if duration_s is None else f", {duration_s:.2f} s"
    log.info(
        "tick %s: %d samples, %d transitions, %d actions, %d source notices%s",
        iso_utc(report.now), report.samples, len(report.transitions), len(report.actions),
        len(report.notices), took,
    )  # fmt: skip
    now = {(n.source, n.where, n.message) for n in report.notices}
    for source, where, message in sorted(now if logged is None else now - logged):
        log.warning("source %s: %s: %s", source, where, message)
    if logged is not None:
        for source, where, message in sorted(logged - now):
            log.info("source %s: cleared: %s: %s", source, where, message)
        logged.clear()
        logged.update(now)
    # Grouped by cause: one CDU event is a line, not one per GPU (``diagnose.grouping``).
    for g in group_transitions(report.transitions, cause_of):
        console.print(escape(g.line()), soft_wrap=True, highlight=False)
    for ag in group_actions(report.actions):
        console.print("  " + escape(ag.line()), soft_wrap=True, highlight=False)
    for n in report.safety_notices:
        console.print(f"[red]{n.source} {n.level}[/] {escape(n.message)}", soft_wrap=True)
