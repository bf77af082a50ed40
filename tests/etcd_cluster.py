"""Start the Debian ``etcd`` binary (3.4) as a cluster of one or more members on loopback ports
of their own, in a temporary directory; each member can be stopped and started again (quorum
tests). A missing binary skips outside CI and fails under CI=true."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.components import unavailable
from tests.prometheus_server import free_port


def etcd_binary() -> str:
    path = shutil.which("etcd")
    if path is None:
        unavailable(
            "the etcd binary is not installed (Debian package etcd-server; scripts/system_packages.sh)"
        )
    return path


@dataclass
class Member:
    name: str
    client_url: str
    peer_url: str
    data: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None


@dataclass
class EtcdCluster:
    members: list[Member]
    initial: str
    binary: str
    token: str
    started: set[str] = field(default_factory=set)

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def start(self, m: Member) -> None:
        state = "existing" if m.name in self.started else "new"
        m.proc = subprocess.Popen(
            [self.binary, "--name", m.name, "--data-dir", str(m.data),
             "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
             "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
             "--initial-cluster", self.initial, "--initial-cluster-state", state,
             "--initial-cluster-token", self.token, "--log-level", "error",
             "--heartbeat-interval", "50", "--election-timeout", "500"],
            stdout=m.log.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.started.add(m.name)

    def stop(self, m: Member) -> None:
        if m.proc is not None and m.proc.poll() is None:
            m.proc.kill()
            m.proc.wait(timeout=10)
        m.proc = None

    def wait_healthy(self, members: list[Member] | None = None, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        for m in members or self.members:
            while True:
                if m.proc is not None and m.proc.poll() is not None:
                    raise RuntimeError(f"etcd {m.name} exited: {m.log.read_text()[-2000:]}")
                try:
                    r = httpx.get(f"{m.client_url}/health", timeout=1, trust_env=False)
                    if r.status_code == 200 and r.json().get("health") == "true":
                        break
                except (httpx.HTTPError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"etcd {m.name} not healthy in {timeout_s:g} s: {m.log.read_text()[-2000:]}"
                    )
                time.sleep(0.1)


@contextmanager
def etcd_cluster(tmp: Path, size: int = 1) -> Iterator[EtcdCluster]:
    binary = etcd_binary()
    members = [
        Member(f"m{i}", f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}",
               tmp / f"etcd-m{i}", tmp / f"etcd-m{i}.log")
        for i in range(size)
    ]  # fmt: skip
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    cluster = EtcdCluster(members, initial, binary, f"seamguard-test-{os.getpid()}-{free_port()}")
    try:
        for m in members:
            cluster.start(m)
        cluster.wait_healthy()
        yield cluster
    finally:
        for m in members:
            cluster.stop(m)
