"""The storm brake: many entities degrading at once across unrelated domains is a telemetry fault.

A real physical event (a CDU losing flow, a leaf switch flapping, a PDU sagging) stays inside one
domain. When more than ``max_new`` entities turn non-healthy within ``window_s`` and they are
spread over more than ``max_domains`` distinct domains of *every* kind watched (CDU, leaf switch,
rack...), no single physical cause explains them: the likelier cause is the telemetry path (an
exporter upgrade, a clock jump, a broken scrape). The brake then stops all acting (advise only),
says so loudly (a journaled notice and an ERROR log line naming the spread) and releases only
after ``calm_s`` seconds during which the condition has not held.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from seamguard.journal.records import NoticeRecord
from seamguard.model.topology import Topology
from seamguard.model.world import WorldChange, carry
from seamguard.strict_model import StrictModel

log = logging.getLogger("seamguard.control.storm")

IntArray = npt.NDArray[np.int64]
SpreadKind = Literal["rack", "cdu", "switch", "pdu", "row"]


class StormConfig(StrictModel):
    enabled: bool = True
    window_s: float = Field(default=300.0, gt=0)
    max_new: int = Field(default=32, ge=1, description="new non-healthy entities tolerated in the window")
    max_domains: int = Field(default=2, ge=1, description="distinct domains of one kind a real event spans")
    spread_kinds: tuple[SpreadKind, ...] = Field(default=("cdu", "switch", "rack"), min_length=1)
    calm_s: float = Field(default=900.0, gt=0, description="quiet time before the brake is released")


def entity_domains(topology: Topology, kind: SpreadKind) -> IntArray:
    """For every entity (global index), the one domain of ``kind`` its GPUs sit in, or -1 when it has
    no GPU below it or spans several. Vectorised over the containment matrix (entity x GPU)."""
    node_of_gpu = topology.gpu_node
    rack = topology.node_rack[node_of_gpu]
    per_gpu = {
        "rack": rack,
        "cdu": topology.rack_cdu[rack],
        "row": topology.rack_row[rack] if topology.rack_row.size else rack * 0 - 1,
        "switch": topology.node_leaf[node_of_gpu],
        "pdu": topology.node_pdu[node_of_gpu],
    }[kind].astype(np.int64)
    below = topology.below
    out = np.full(topology.n_entities, -1, dtype=np.int64)
    nonempty = np.flatnonzero(np.diff(below.indptr) > 0)
    if nonempty.size == 0 or per_gpu.size == 0:
        return out
    values = per_gpu[below.indices]
    starts = below.indptr[nonempty]
    lo = np.minimum.reduceat(values, starts)
    hi = np.maximum.reduceat(values, starts)
    out[nonempty] = np.where(lo == hi, lo, -1)
    return out


class StormBrake:
    def __init__(self, topology: Topology, config: StormConfig) -> None:
        self.config = config
        self.domains = {k: entity_domains(topology, k) for k in config.spread_kinds}
        self._ts = np.zeros(0, dtype=np.float64)
        self._gidx = np.zeros(0, dtype=np.int64)
        self.engaged = False
        self.reason = ""
        self._calm_since: float | None = None

    def carry_over(self, change: WorldChange) -> None:
        """Entities in the window that stay are counted still; those that left are not."""
        if change.jobs_only:  # no GPU depends on a job (its domain is -1): the others keep theirs
            self.domains = {k: carry(v, change.entities, -1) for k, v in self.domains.items()}
        else:
            self.domains = {k: entity_domains(change.new, k) for k in self.config.spread_kinds}
        moved = change.back()[self._gidx]
        self._ts, self._gidx = self._ts[moved >= 0], moved[moved >= 0]

    def spread(self) -> tuple[int, dict[str, int]]:
        """Distinct entities in the window and the distinct domains they cover, per kind."""
        ent = np.unique(self._gidx)
        out: dict[str, int] = {}
        for kind, dom in self.domains.items():
            d = dom[ent]
            out[kind] = int(np.unique(d[d >= 0]).size)
        return int(ent.size), out

    def observe(self, now: float, entered: IntArray) -> list[NoticeRecord]:
        """``entered``: global indices of entities that turned non-healthy at ``now``."""
        cfg = self.config
        if not cfg.enabled:
            return []
        keep = self._ts > now - cfg.window_s
        self._ts = np.concatenate([self._ts[keep], np.full(entered.size, now)])
        self._gidx = np.concatenate([self._gidx[keep], entered.astype(np.int64)])
        count, spread = self.spread()
        storm = count > cfg.max_new and all(v > cfg.max_domains for v in spread.values())
        text = ", ".join(f"{v} {k}" for k, v in spread.items())
        if storm:
            self._calm_since = None
            if not self.engaged:
                self.engaged = True
                self.reason = (
                    f"storm brake ON: {count} entities turned non-healthy within {cfg.window_s:g} s across {text}"
                    f" (a physical event stays within {cfg.max_domains} of one kind); suspect the telemetry"
                    f" path; acting on nothing (advise only) until {cfg.calm_s:g} s calm"
                )
                log.error(self.reason)
                return [NoticeRecord(now, "safety", "error", self.reason)]
            return []
        if not self.engaged:
            return []
        if self._calm_since is None:
            self._calm_since = now
        if now - self._calm_since < cfg.calm_s:
            return []
        self.engaged = False
        self.reason = ""
        message = (
            f"storm brake released after {now - self._calm_since:g} s calm ({count} new in window: {text})"
        )
        self._calm_since = None
        log.warning(message)
        return [NoticeRecord(now, "safety", "warning", message)]
