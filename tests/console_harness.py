"""A daemon fed by the twin and served with its console, stepped by the test tick by tick.

The twin runs a small scenario once (fixed seed) and its telemetry is handed to a real ``Daemon``
one recorded tick per ``step``; the daemon's API and console are served on a loopback port behind
tokens (a viewer and an operator); its one actuator is a webhook in ``approve`` mode posting to a
loopback receiver. Between steps a thread applies operator requests as ``seamguard run``'s loop
does, so a click in the console takes effect without waiting for a tick.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from seamguard.actuators.dispatch import Route
from seamguard.actuators.sections import Mode, WebhookConfig
from seamguard.actuators.webhook import WebhookActuator
from seamguard.daemon import Daemon
from seamguard.daemon_run import serve_api
from seamguard.journal.sqlite import SqliteJournal
from seamguard.model.entities import EntityKind
from seamguard.model.states import State
from seamguard.ops.fleet import SEVERITY
from seamguard.service.auth import digest_of, new_token
from seamguard.service.sections import AuthConfig, Role, ServiceConfig, TokenEntry
from seamguard.service.server import RunningServer
from seamguard.service.startup import build_security
from seamguard.site_config import DaemonConfig, SiteConfig
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.base import Collected
from seamguard.twin.scenario import scenario_from_mapping
from seamguard.twin.sim import Twin
from seamguard.twin.world import build_world
from tests.http_stub import Recorder, serve
from tests.twin_capture import captured_run

# Two CDUs of two racks; a synchronous job on twelve of sixteen nodes. One GPU on n0001 heats from
# 12 min (its node drained at tick 23); CDU cdu1 loses flow from 18 min, so rack r002 turns
# degraded (tick 55, its own state) and then quarantine (tick 77); one GPU on n0013 runs warm (degraded only).
SCENARIO: dict[str, Any] = {
    "name": "console",
    "description": "the console's browser tests",
    "duration_h": 3,
    "cluster": {"cdus": 2, "racks_per_cdu": 2, "nodes_per_rack": 4, "gpus_per_node": 4, "storage": ["ckpt0", "ckpt1"]},
    "jobs": [{"name": "train", "class": "sync_training", "nodes": 12, "checkpoint_gb": 200, "fallback_storage": "ckpt1"}],
    "faults": [
        {"kind": "cdu_flow_loss", "target": "cdu/cdu1", "onset_h": 0.3, "ramp_h": 0.5, "severity": 0.6, "duration_h": 2},
        {"kind": "hw_thermal", "target": "gpu/n0001/2", "onset_h": 0.2, "ramp_h": 0.4, "severity": 1.0},
        {"kind": "hw_thermal", "target": "gpu/n0013/0", "onset_h": 0.4, "ramp_h": 0.3, "severity": 1.0},
    ],
}  # fmt: skip
DRAINED_AT = 23  # the tick n0001's drain is decided
RACK_DEGRADED_AT, RACK_QUARANTINED_AT = 55, 77
SECRET = "console-hook"


class Hook(Recorder):
    received: ClassVar[list[dict[str, Any]]] = []


@dataclass
class TwinTicks:
    """The twin's telemetry as the daemon's one source: batch ``k`` at the ``k``-th step."""

    batches: tuple[TelemetryBatch, ...]
    name: str = "twin"
    k: int = 0

    def collect(self, now: float) -> Collected:
        batch = self.batches[self.k]
        self.k += 1
        return Collected(batch)


@dataclass
class ConsoleDaemon:
    """The daemon lives on one worker thread of its own, as in ``seamguard run``: it ticks when
    the test asks (``step``) and applies operator requests as they arrive. (SQLite's connection
    belongs to the thread that opened it; the test reads the journal through its own.)"""

    daemon: Daemon
    server: RunningServer
    journal_path: Path
    tokens: dict[str, str]
    times: list[float]
    steps: queue.Queue[threading.Event] = field(default_factory=queue.Queue)
    done: int = 0
    now: float = 0.0

    @property
    def url(self) -> str:
        return self.server.url

    def step(self) -> None:
        """The next recorded tick, on the daemon's thread."""
        finished = threading.Event()
        self.steps.put(finished)
        assert finished.wait(60), "the daemon's thread did not tick"

    def step_to(self, k: int) -> None:
        while self.done <= k:
            self.step()

    def journal(self) -> SqliteJournal:
        return SqliteJournal(self.journal_path, read_only=True)

    def rack_state(self, rack: str) -> str:
        """What the console must show for a rack: the most severe of its own state and its nodes'
        (each node the most severe of its own, its GPUs' and its uplink's), from the engine."""
        d = self.daemon
        topo, states = d.topology, d.controller.classifier.state
        r = topo.index[rack]
        nodes = [
            f"node/{n}"
            for i, n in enumerate(topo.names[EntityKind.NODE])
            if topo.node_rack[i] == topo.local[r]
        ]
        below = [states[topo.index[n]] for n in nodes]
        below += [states[topo.index[n.replace("node/", "link/")]] for n in nodes]
        below += [
            states[g] for g in topo.members[EntityKind.GPU] if f"node/{topo.ids[g].split('/')[1]}" in nodes
        ]
        held = [State.QUARANTINE for n in nodes if n in d.safety.quarantined()]
        return max([State(int(s)) for s in [states[r], *below]] + held, key=lambda s: SEVERITY[s]).label

    def serve_forever(self, stop: threading.Event) -> None:
        wake = self.daemon.desk.wake
        while not stop.is_set():
            try:
                finished = self.steps.get(timeout=0.02)
            except queue.Empty:
                finished = None
            if finished is not None:
                self.now = self.times[self.done]
                self.daemon.step(self.now)
                self.done += 1
                finished.set()
            if wake.is_set():
                wake.clear()
                self.daemon.operate(self.now)


@contextmanager
def console_daemon(tmp: Path, mode: Mode = Mode.APPROVE) -> Iterator[ConsoleDaemon]:
    world, batches = captured_run(SCENARIO, 0)
    policy = Twin(build_world(scenario_from_mapping(SCENARIO), 0), "seamguard").policy
    tokens = {"viewer": new_token(), "operator": new_token()}
    auth = AuthConfig(
        tokens=tuple(TokenEntry(name=n, roles=(Role(n),), digest=digest_of(s)) for n, s in tokens.items())
    )
    service = ServiceConfig(auth=auth)
    config = DaemonConfig(policy.config, SiteConfig(safety=policy.safety_config, service=service))  # type: ignore[attr-defined]
    times = [float(b.timestamp.max()) + 1.0 for b in batches]
    Hook.received = []
    path = tmp / "journal.sqlite"
    with serve(Hook) as hook:
        actuator = WebhookActuator(WebhookConfig(url=hook), SECRET.encode())
        got: list[ConsoleDaemon] = []
        ready, stop = threading.Event(), threading.Event()

        def run() -> None:
            with SqliteJournal(path) as journal:
                daemon = Daemon(config, world.topology, [TwinTicks(batches)], journal=journal,
                                routes=[Route(actuator, mode)])  # fmt: skip
                server = serve_api(daemon, "127.0.0.1", 0, build_security(service, None))
                cd = ConsoleDaemon(daemon, server, path, tokens, times)
                got.append(cd)
                ready.set()
                try:
                    cd.serve_forever(stop)
                finally:
                    daemon.desk.closing.set()
                    server.stop()
                    daemon.dispatcher.close()

        worker = threading.Thread(target=run, name="seamguard-daemon", daemon=True)
        worker.start()
        assert ready.wait(60), "the daemon did not start"
        try:
            got[0].step()
            yield got[0]
        finally:
            stop.set()
            worker.join(30)
