"""``binary`` and ``young-daly``: what most fleets run today.

Health is binary: a node-problem-detector / NHC / Slurm health check drains a node on hard
signals only (a critical or fatal XID, a heartbeat past its limit, a GPU over a fixed
temperature limit, a link whose error counter bursts as the port goes down), checked every
``health_check_s``. A drain is Slurm's: the running job keeps the node until it next restarts.
Checkpoints follow a timer: 30 minutes for ``binary``, Daly's interval from the fleet's
nominal failure rate for ``young-daly``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from seamguard.economics.checkpoint_modes import Mode
from seamguard.model.catalog import signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.model.states import JobClass
from seamguard.model.xid import XidSeverity, xid_catalog
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.store import SENTINEL_THRESHOLD
from seamguard.twin.actions import Action, Detection, Verb
from seamguard.twin.jobs import TrainingJob
from seamguard.twin.policies.base import (
    FleetView,
    IntArray,
    all_healthy,
    full_save,
    no_nodes,
    static_interval,
)
from seamguard.twin.world import World

LINK_DOWN_ERRORS_PER_S = 10.0
HARD_XIDS = np.array(
    sorted(c for c, x in xid_catalog().items() if x.severity in (XidSeverity.FATAL, XidSeverity.CRITICAL)),
    dtype=np.int64,
)


class BinaryPolicy:
    def __init__(self, world: World, *, name: str, interval_s: float | None, health_check_s: float,
                 temp_limit_c: float, heartbeat_limit_s: float, mtbf_h: float | None = None,
                 mode: Mode = Mode.FULL) -> None:  # fmt: skip
        self.name = name
        self.mode = mode
        self.world = world
        self.topology = world.topology
        self._interval = interval_s
        self._mtbf_h = mtbf_h
        self.health_check_s = health_check_s
        self.temp_limit_c = temp_limit_c
        self.heartbeat_limit_s = heartbeat_limit_s
        cat = signal_catalog()
        self._sig = {
            n: cat[n].index for n in ("gpu.xid", "gpu.temp_c", "node.heartbeat_age_s", "link.errors_total")
        }
        n_nodes = self.topology.count(EntityKind.NODE)
        self._flagged: dict[int, str] = {}
        self._drained = np.zeros(n_nodes, bool)
        self._last_errors = np.full(n_nodes, np.nan)
        self._last_errors_t = np.full(n_nodes, np.nan)
        self._next_check = world.start + health_check_s
        self.detections: list[Detection] = []

    def checkpoint_choice(self, job: TrainingJob) -> tuple[Mode, int]:
        return (self.mode, job.storage) if self.mode is not Mode.FULL else full_save(job)

    def interval_s(self, job: TrainingJob) -> float:
        if self._interval is not None:
            return self._interval
        return static_interval(self.world, job, self._mtbf_h, self.mode)

    def observe(
        self, now: float, batches: Sequence[tuple[int, TelemetryBatch]], view: FleetView
    ) -> list[Action]:
        for _cell, batch in batches:
            self._scan(batch)
        if now < self._next_check:
            return []
        self._next_check = now + self.health_check_s
        out = []
        for node, why in sorted(self._flagged.items()):
            if not self._drained[node]:
                self._drained[node] = True
                name = self.topology.names[EntityKind.NODE][node]
                out.append(Action(Verb.DRAIN, f"node/{name}", why))
                self.detections.append(Detection(now, f"node/{name}", "drained"))
        self._flagged.clear()
        return out

    def _flag(self, nodes: np.ndarray, why: str) -> None:
        for n in np.unique(nodes).tolist():
            self._flagged.setdefault(int(n), why)

    def _scan(self, b: TelemetryBatch) -> None:
        topo, s = self.topology, self._sig
        real = np.abs(b.value) < SENTINEL_THRESHOLD
        codes = np.where(real & np.isfinite(b.value), b.value, 0.0).astype(np.int64)
        xid = (b.signal == s["gpu.xid"]) & np.isin(codes, HARD_XIDS)
        if xid.any():
            self._flag(topo.gpu_node[topo.local[b.entity[xid]]], "critical XID")
        hot = (b.signal == s["gpu.temp_c"]) & real & (b.value >= self.temp_limit_c)
        if hot.any():
            self._flag(topo.gpu_node[topo.local[b.entity[hot]]], f"GPU over {self.temp_limit_c:g} °C")
        stale = (b.signal == s["node.heartbeat_age_s"]) & real & (b.value >= self.heartbeat_limit_s)
        if stale.any():
            self._flag(topo.local[b.entity[stale]], "heartbeat lost")
        err = (b.signal == s["link.errors_total"]) & real
        if err.any():
            node = topo.local[b.entity[err]]
            val, ts = b.value[err], b.timestamp[err]
            prev, prev_t = self._last_errors[node], self._last_errors_t[node]
            with np.errstate(invalid="ignore", divide="ignore"):
                rate = (val - prev) / (ts - prev_t)
            down = np.isfinite(rate) & (rate >= LINK_DOWN_ERRORS_PER_S)
            if down.any():
                self._flag(node[down], "link down")
            self._last_errors[node], self._last_errors_t[node] = val, ts

    def admission(self, job_class: JobClass) -> IntArray:
        return np.zeros(self.topology.count(EntityKind.NODE), dtype=np.int64)

    def returned(self, now: float, nodes: IntArray, view: FleetView) -> list[Action]:
        self._drained[nodes] = False
        return []

    def node_states(self) -> IntArray:
        return all_healthy(self.topology.count(EntityKind.NODE))

    def unsettled_nodes(self, cell_id: int) -> IntArray:
        return no_nodes()
