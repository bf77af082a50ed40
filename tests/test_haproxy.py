"""The HAProxy actuator against the real Debian haproxy, started on loopback with a tmp config."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from seamguard.actuators.dispatch import Dispatcher, Route
from seamguard.actuators.haproxy import HaproxyActuator, HaproxyConfig, runtime_command
from seamguard.actuators.sections import Mode
from seamguard.model.actions import Action

HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[str]:
    if HAPROXY is None:
        if os.environ.get("CI") == "true":
            pytest.fail("haproxy binary missing under CI (scripts/system_packages.sh installs it)")
        pytest.skip("haproxy not installed (apt-get install haproxy)")
    sock = tmp_path / "haproxy.sock"
    servers = "\n".join(f"    server s{i} 127.0.0.1:{_free_port()} weight 100" for i in range(1, 4))
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        f"""global
    stats socket {sock} level admin
defaults
    mode tcp
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:{_free_port()}
    default_backend be_app
backend be_app
{servers}
"""
    )
    proc = subprocess.Popen(
        [HAPROXY, "-f", str(cfg), "-db"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        for _ in range(200):
            if sock.exists():
                try:
                    runtime_command(str(sock), "show info", 1.0)
                    break
                except OSError:
                    pass
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"haproxy exited {proc.returncode}: {out}")
            time.sleep(0.05)
        else:
            pytest.fail("haproxy stats socket never answered")
        yield str(sock)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def act(kind: str, target: str, at: float, **params: str) -> Action:
    return Action(kind, target, "test", "quarantine", decided_at=at, params=tuple(params.items()))


def test_drain_weight_and_ready_read_back_from_real_haproxy(haproxy: str) -> None:
    cfg = HaproxyConfig(socket=haproxy, servers={"node/n01": "be_app/s1", "node/n02": "be_app/s2"})
    h = HaproxyActuator(cfg)
    assert h.server_state("be_app", "s1").state == "ready"  # type: ignore[union-attr]

    r = h.apply(act("drain_node", "gpu/n01/3", 1.0), 1.0)  # a GPU's drain takes its node's server
    assert r.status == "done" and "state ready->drain" in r.detail
    s1 = h.server_state("be_app", "s1")
    assert s1 is not None and s1.state == "drain"
    assert h.apply(act("drain_node", "node/n01", 2.0), 2.0).status == "already"  # read back: idempotent

    r = h.apply(act("restrict_admission", "node/n02", 3.0), 3.0)
    assert r.status == "done" and h.server_state("be_app", "s2").weight == 10  # type: ignore[union-attr]
    r = h.apply(act("set_weight", "node/n02", 4.0, weight="42"), 4.0)
    assert r.status == "done" and h.server_state("be_app", "s2").weight == 42  # type: ignore[union-attr]

    r = h.apply(act("resume_node", "node/n01", 5.0), 5.0)
    s1 = h.server_state("be_app", "s1")
    assert r.status == "done" and s1 is not None and (s1.state, s1.weight) == ("ready", 100)
    assert h.server_state("be_app", "s3").state == "ready"  # type: ignore[union-attr]  # untouched


def test_a_maint_set_by_someone_else_is_never_lifted(haproxy: str) -> None:
    runtime_command(haproxy, "set server be_app/s3 state maint")
    h = HaproxyActuator(HaproxyConfig(socket=haproxy, servers={"node/n03": "be_app/s3"}))
    r = h.apply(act("resume_node", "node/n03", 1.0), 1.0)
    assert r.status == "refused" and "which seamguard did not set" in r.detail
    assert h.server_state("be_app", "s3").state == "maint"  # type: ignore[union-attr]
    assert h.apply(act("drain_node", "node/n03", 2.0), 2.0).status == "already"


def test_unmapped_targets_are_skipped_and_a_dead_socket_is_retried(haproxy: str, tmp_path: Path) -> None:
    h = HaproxyActuator(HaproxyConfig(socket=haproxy, servers={}))
    assert (
        h.apply(act("drain_node", "node/n09", 1.0), 1.0).status == "skipped"
    )  # not this actuator's: a drain elsewhere still stands
    dead = HaproxyActuator(
        HaproxyConfig(socket=str(tmp_path / "nope.sock"), servers={"node/n01": "be_app/s1"})
    )
    d = Dispatcher([Route(dead, Mode.ENFORCE)])
    (r,) = d.dispatch([act("drain_node", "node/n01", 1.0)], 1.0)
    assert r.status == "failed" and "retry 2/4" in r.detail
