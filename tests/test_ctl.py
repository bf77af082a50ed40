"""``seamguard ctl`` against a running ``seamguard run`` (the attack tests' live daemon): what a
person types, what they read back, and what the daemon journaled under their token's name."""

from __future__ import annotations

import time

import pytest
import typer
from typer.testing import CliRunner

from seamguard.cli import app
from seamguard.ctl_cli import parse_duration
from seamguard.journal.sqlite import SqliteJournal
from tests import test_security_attacks as attacks
from tests.test_security_attacks import VICTIM_NODE, LiveDaemon, forged_xid

live, push_config, service_config = attacks.live, attacks.push_config, attacks.service_config
runner = CliRunner(env={"COLUMNS": "200"})


def ctl(live: LiveDaemon, who: str, *args: str) -> tuple[int, str]:
    got = runner.invoke(app, ["ctl", *args, "--url", live.url, "--token", live.tokens[who]])
    return got.exit_code, got.output


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90s", "30m", "4h", "2d", "1.5h")] == [90, 1800, 14400, 172800, 5400]
    with pytest.raises(typer.BadParameter, match="such as 90s"):
        parse_duration("tomorrow")


def test_an_operator_pauses_a_rack_reads_it_back_and_resumes(live: LiveDaemon) -> None:
    code, out = ctl(live, "operator", "pause", "rack/r1", "--for", "2h", "--reason", "PDU swap")
    assert code == 0 and "done: pause rack/r1" in out, out
    code, out = ctl(live, "viewer", "status")
    assert code == 0 and "pause" in out and "rack/r1" in out and "PDU swap" in out and "operator" in out, out
    code, out = ctl(live, "operator", "resume", "rack/r1", "--reason", "PDU back")
    assert code == 0 and "ended" in out
    with SqliteJournal(live.journal_path, read_only=True) as j:
        rows = [(r.principal, r.verb, r.target, r.reason) for r in j.operator_actions()]
    assert rows == [
        ("operator", "pause", "rack/r1", "PDU swap"),
        ("operator", "resume", "rack/r1", "PDU back"),
    ]


def test_a_viewer_is_refused_a_control_with_the_reason(live: LiveDaemon) -> None:
    code, out = ctl(live, "viewer", "pause", "--reason", "just looking")
    assert code == 1 and "403" in out and "needs operator" in out


def test_a_control_without_a_reason_is_refused_before_it_is_sent(live: LiveDaemon) -> None:
    code, out = ctl(live, "operator", "pin", "node/n02", "--state", "healthy")
    assert code == 2 and "--reason" in out


def test_nodes_and_explain_show_one_state(live: LiveDaemon) -> None:
    assert live.push(forged_xid(time.time()), "pusher").status_code == 202
    live.wait_ticks(2)
    code, out = ctl(live, "viewer", "nodes")
    assert code == 0 and VICTIM_NODE in out and "1 node(s)" in out and "yes" in out, out
    code, out = ctl(live, "viewer", "explain", "gpu/n02/1")
    assert code == 0 and "failed" in out and "drain_node" in out, out


def test_an_unreachable_daemon_is_named() -> None:
    got = runner.invoke(app, ["ctl", "status", "--url", "http://127.0.0.1:9", "--token", "x"])
    assert got.exit_code == 2 and "cannot reach the daemon at http://127.0.0.1:9" in got.output


def test_an_operator_vouches_a_node_repaired_and_a_viewer_may_not(live: LiveDaemon) -> None:
    code, out = ctl(live, "viewer", "repaired", "node/n02", "--reason", "swapped the GPU")
    assert code == 1 and "403" in out and "needs operator" in out
    code, out = ctl(live, "operator", "repaired", "rack/r1", "--reason", "swapped the GPU")
    assert code == 1 and "422" in out and "one node" in out, out
    code, out = ctl(live, "operator", "repaired", "node/n02", "--reason", "swapped the GPU")
    assert code == 0 and "done: repaired node/n02" in out, out
    with SqliteJournal(live.journal_path, read_only=True) as j:
        last = j.operator_actions()[-1]
    assert (last.principal, last.verb, last.target, last.reason) == (
        "operator",
        "repaired",
        "node/n02",
        "swapped the GPU",
    )
