"""`seamguard run` replicas as real processes, for the HA tests and bench/failover.py: a world of
256 nodes, a config with an enforcing webhook and the `ha` section, a webhook sink that counts
actions older than the newest epoch it has seen, and a pusher of hot telemetry."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import yaml

from seamguard.ha.etcd import Etcd
from tests.prometheus_server import free_port

NODES = 256
TICK_S = 1.0  # the replicas' engine tick
GPUS = 8


class Sink(BaseHTTPRequestHandler):
    """The webhook receiver: every action's epoch in arrival order, and those older than the
    newest epoch seen before them (stale)."""

    lock = threading.Lock()
    epochs: ClassVar[list[int]] = []
    bodies: ClassVar[list[dict[str, Any]]] = []
    stale = 0
    # (pid, epoch): stop that process with SIGSTOP when an action of that epoch arrives, before
    # answering it, so that the pause never finds a request of its on the wire (the paused-leader test)
    pause_on: ClassVar[tuple[int, int] | None] = None

    @classmethod
    def reset(cls) -> None:
        with cls.lock:
            cls.epochs, cls.bodies, cls.stale, cls.pause_on = [], [], 0, None

    @classmethod
    def actions(cls) -> int:
        with cls.lock:
            return len(cls.epochs)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with Sink.lock:
            epoch = int(body["epoch"])
            if Sink.epochs and epoch < max(Sink.epochs):
                Sink.stale += 1
            Sink.epochs.append(epoch)
            Sink.bodies.append(body)
            if Sink.pause_on is not None and Sink.pause_on[1] == epoch:
                os.kill(Sink.pause_on[0], signal.SIGSTOP)
                Sink.pause_on = None
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def sink_server() -> Iterator[str]:
    Sink.reset()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def wait_for(what: str, cond: Callable[[], bool], timeout_s: float) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"{what}: not within {timeout_s:g} s")
        time.sleep(0.02)
    return time.monotonic() - start


def write_world(root: Path) -> tuple[Path, Path]:
    inv = root / "inventory.csv"
    rows = ["node,rack,cdu,leaf,gpus"] + [
        f"n{i:03d},r{i // 8},c{i // 64},l{i // 16},{GPUS}" for i in range(NODES)
    ]
    inv.write_text("\n".join(rows) + "\n")
    jobs = root / "jobs.csv"
    nodes = ";".join(f"n{i:03d}" for i in range(NODES))
    jobs.write_text(f"job,job_class,nodes,start,end\ntrain,sync_training,{nodes},0,4000000000\n")
    return inv, jobs


def config(
    root: Path, sink: str, endpoints: list[str], ttl_s: int, actuators: dict[str, Any] | None = None
) -> Path:
    """``actuators``: more enforcing backends beside the webhook (Slurm, HAProxy sections)."""
    retry = round(ttl_s / 6, 3)
    data: dict[str, Any] = {
        "engine": {"tick_s": TICK_S, "stale_after_s": 10, "observe_every_s": 60},
        "sources": {"push": {}},
        "actuators": {"webhook": {"url": sink, "mode": "enforce"}, **(actuators or {})},
        "safety": {"budgets": {"max_nodes": NODES, "max_fleet_pct": 100.0, "domain_pct": 100.0,
                               "per_hour": 100_000, "per_hour_pct": 100.0,
                               "partitions": {"fleet": {"min_in_service_pct": 0.0}}}},
        "ha": {"endpoints": endpoints, "ttl_s": ttl_s, "retry_s": retry,
               "renew_deadline_s": round(ttl_s - 2.5 * retry, 3), "request_timeout_s": retry},
    }  # fmt: skip
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class Replica:
    def __init__(self, name: str, root: Path, cfg: Path, inv: Path, jobs: Path) -> None:
        self.name, self.root, self.cfg, self.inv, self.jobs = name, root, cfg, inv, jobs
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.journal = self.root / f"{self.name}.sqlite"

    def start(self) -> None:
        """A new process (a new journal, a new name: host:pid) on a new port."""
        self.port = free_port()
        self.journal = self.root / f"{self.name}-{time.time_ns()}.sqlite"
        log = (self.root / f"{self.name}.log").open("ab")
        env = {**os.environ, "SEAMGUARD_WEBHOOK_SECRET": "bench", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "seamguard", "run", "--inventory", str(self.inv), "--jobs", str(self.jobs),
             "--config", str(self.cfg), "--journal", str(self.journal),
             "--listen", f"127.0.0.1:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.root,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def pusher(replicas: list[Replica], stop: threading.Event) -> None:
    """Every second, to every replica: one GPU hot and throttled, a different node each time."""
    client = httpx.Client(timeout=2.0, trust_env=False)
    k = 0
    while not stop.is_set():
        now = time.time()
        hot = f"gpu/n{k % NODES:03d}/0"
        k += 1
        body = {"entity": [hot, hot], "signal": ["gpu.temp_c", "gpu.throttle_reasons"],
                "timestamp": [now, now], "value": [97.0, 64.0]}  # fmt: skip
        for r in replicas:
            with contextlib.suppress(httpx.HTTPError):  # a replica killed or starting misses this push
                client.post(f"http://127.0.0.1:{r.port}/v1/push", json=body)
        stop.wait(1.0)
    client.close()


def leader_of(etcd: Etcd, key: str) -> tuple[str, int] | None:
    try:
        held = etcd.read(key)
    except Exception:
        return None
    return (held.value, held.create_revision) if held is not None else None


def first_leader(etcd: Etcd, key: str, replicas: list[Replica]) -> tuple[Replica, int]:
    """The replica that won the first election, and its epoch."""
    wait_for("a leader", lambda: leader_of(etcd, key) is not None, 60)
    held = leader_of(etcd, key)
    assert held is not None
    name, epoch = held
    return next(r for r in replicas if name.endswith(f":{r.pid}")), epoch


@contextlib.contextmanager
def leaderships(etcd: Etcd, key: str, every_s: float = 0.2) -> Iterator[list[tuple[str, int]]]:
    """Every leadership seen on the election key while the block runs, in order of first sight.

    A test of a deposed leader needs it: on a loaded machine the new leader can itself miss its
    renewals and lose the key, and the woken one may then win it again legitimately, under a newer
    epoch, and act; that is the protocol working, not a deposed leader acting."""
    seen: list[tuple[str, int]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            held = leader_of(etcd, key)
            if held is not None and held not in seen:
                seen.append(held)
            stop.wait(every_s)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=5)


def hot_body(gpus: list[str]) -> dict[str, list[Any]]:
    """A push payload: these GPUs hot and throttled, stamped now."""
    now = time.time()
    return {"entity": gpus + gpus, "signal": ["gpu.temp_c"] * len(gpus) + ["gpu.throttle_reasons"] * len(gpus),
            "timestamp": [now] * (2 * len(gpus)), "value": [97.0] * len(gpus) + [64.0] * len(gpus)}  # fmt: skip
