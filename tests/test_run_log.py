"""``seamguard run``'s log: timestamped, levelled lines, a heartbeat per tick, and a source in
trouble logged when its notice appears (and when it clears), not only journaled."""

from __future__ import annotations

import io
import logging
import re
import sys

import pytest
from rich.console import Console

from seamguard.daemon import StepReport
from seamguard.daemon_run import _print_step, run_logging
from seamguard.journal.records import TransitionRecord
from seamguard.telemetry.sources.base import SourceNotice

T0 = 1_767_225_630.0  # 2026-01-01T00:00:30Z
DOWN = SourceNotice("dcgm", "http://n0001:9400/metrics", "ConnectError: connection refused")


def report(now: float, notices: tuple[SourceNotice, ...] = (), transitions: int = 0) -> StepReport:
    moved = tuple(
        TransitionRecord(now, f"gpu/n0000/{i}", "healthy", "degraded", 0.5, 0.1, 1.0, "hot")
        for i in range(transitions)
    )
    return StepReport(now, 1234, notices, moved, (), ())


def messages(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    out = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "seamguard.daemon_run"]
    caplog.clear()
    return out


def test_each_tick_logs_a_heartbeat_and_a_source_notice_when_it_appears_and_clears(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="seamguard.daemon_run")
    console = Console(file=io.StringIO())
    logged: set[tuple[str, str, str]] = set()

    _print_step(console, report(T0, transitions=2), 0.4123, logged)
    assert messages(caplog) == [
        (
            "INFO",
            "tick 2026-01-01T00:00:30Z: 1234 samples, 2 transitions, 0 actions, 0 source notices, 0.41 s",
        )
    ]

    _print_step(console, report(T0 + 30, (DOWN,)), 0.2, logged)
    heartbeat, warning = messages(caplog)
    assert heartbeat[0] == "INFO" and "1 source notices" in heartbeat[1]
    assert warning == ("WARNING", f"source dcgm: {DOWN.where}: {DOWN.message}")

    _print_step(console, report(T0 + 60, (DOWN,)), 0.2, logged)  # still down: the heartbeat only
    assert [level for level, _ in messages(caplog)] == ["INFO"]

    _print_step(console, report(T0 + 90), 0.2, logged)
    assert messages(caplog)[1] == ("INFO", f"source dcgm: cleared: {DOWN.where}: {DOWN.message}")


def test_without_the_callers_memory_every_notice_of_the_tick_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="seamguard.daemon_run")
    for _ in range(2):
        _print_step(Console(file=io.StringIO()), report(T0, (DOWN,)))
        (heartbeat, warning) = messages(caplog)
        assert heartbeat[1].endswith("1 source notices")  # no duration given: none shown
        assert warning[0] == "WARNING"


def test_run_logging_stamps_lines_in_utc_iso_8601_with_their_level(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python's default prints warnings bare and drops INFO; ``run`` logs both, timestamped."""
    ours, root = logging.getLogger("seamguard"), logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # a process whose logging nobody set up (not pytest)
    level_before = ours.level
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    with run_logging() as handler:
        assert handler is not None and root.handlers == [handler]
        _print_step(Console(file=io.StringIO()), report(T0, (DOWN,)), 0.05, set())
        logging.getLogger("httpx").info("HTTP Request: GET http://n0001:9400/metrics")  # not ours: quiet
    lines = stderr.getvalue().splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert len(lines) == 2, lines
    assert re.fullmatch(
        rf"{stamp} INFO seamguard\.daemon_run: tick 2026-01-01T00:00:30Z: .*, 0\.05 s", lines[0]
    )
    assert re.fullmatch(rf"{stamp} WARNING seamguard\.daemon_run: source dcgm: .*", lines[1])
    assert ours.level == level_before and root.handlers == []  # undone


def test_run_logging_leaves_a_configured_root_logger_its_own_handlers() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    assert before, "pytest handles the root logger during a test"
    with run_logging() as handler:
        assert handler is None and root.handlers == before
        assert logging.getLogger("seamguard.daemon_run").isEnabledFor(logging.INFO)
