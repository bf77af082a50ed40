"""Stateful detectors: XID events (with fading memory) and node heartbeats."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

import numpy as np
import numpy.typing as npt

from seamguard.detector_config import HeartbeatConfig, XidConfig
from seamguard.model.catalog import Signal
from seamguard.model.entities import EntityKind
from seamguard.model.world import WorldChange, carry
from seamguard.model.xid import MAX_XID_CODE, UNKNOWN_XID, describe_xid, xid_catalog
from seamguard.scoring.evidence import Evidence, FloatArray, make_evidence, ramp
from seamguard.telemetry.store import TickEvents

IntArray = npt.NDArray[np.int64]
UNKNOWN_XID_EVIDENCE = UNKNOWN_XID.evidence  # a code NVIDIA's catalog does not list: weak, forces nothing


@cache
def _lookup_tables() -> tuple[FloatArray, IntArray]:
    evidence = np.full(MAX_XID_CODE, UNKNOWN_XID_EVIDENCE)
    floor = np.full(MAX_XID_CODE, -1, dtype=np.int64)
    for code, xid in xid_catalog().items():
        if code < MAX_XID_CODE:
            evidence[code] = xid.evidence
            floor[code] = int(xid.state) if xid.state is not None else -1
    return evidence, floor


@dataclass
class XidMemory:
    """Evidence of past XIDs fades with a half-life instead of vanishing after one tick.

    Without memory an NVLink XID would push a GPU to quarantine for exactly one tick; with it
    the GPU stays suspect for a while and hysteresis decides when it has been clean enough.
    """

    size: int
    config: XidConfig
    level: FloatArray
    code: FloatArray
    when: FloatArray
    last_now: float = -np.inf

    @classmethod
    def create(cls, size: int, config: XidConfig) -> XidMemory:
        return cls(size, config, np.zeros(size), np.full(size, np.nan), np.full(size, np.nan))

    def carry_over(self, change: WorldChange) -> XidMemory:
        """Per GPU: a GPU that stays keeps its event memory."""
        if change.same(EntityKind.GPU):
            return self
        fwd = change.kind(EntityKind.GPU)
        return replace(self, size=int(fwd.size), level=carry(self.level, fwd, 0.0),
                       code=carry(self.code, fwd, np.nan), when=carry(self.when, fwd, np.nan))  # fmt: skip

    def remembered_floor(self) -> IntArray:
        """Per GPU, the least state its strongest remembered XID forces (-1: none), kept until the
        GPU is repaired (``forget``): hard evidence is not only the tick it came on."""
        _, floor_table = _lookup_tables()
        seen = np.isfinite(self.code)
        out = np.full(self.size, -1, dtype=np.int64)
        out[seen] = floor_table[np.clip(self.code[seen].astype(np.int64), 0, MAX_XID_CODE - 1)]
        return out

    def forget(self, local: int) -> None:
        """A repaired GPU starts with a clean slate of events."""
        self.level[local] = 0.0
        self.code[local] = np.nan
        self.when[local] = np.nan

    def update(self, signal: Signal, now: float, events: TickEvents | None) -> tuple[Evidence, IntArray]:
        """Evidence for this tick and the least state forced by events that arrived in it (-1: none)."""
        if np.isfinite(self.last_now):
            self.level *= 0.5 ** (max(now - self.last_now, 0.0) / self.config.decay_halflife_s)
        self.last_now = now
        floor = np.full(self.size, -1, dtype=np.int64)
        if events is not None and events.local.size:
            ev_table, floor_table = _lookup_tables()
            codes = np.clip(events.code, 0, MAX_XID_CODE - 1)
            ev_new = ev_table[codes]
            # Strongest event per GPU this tick; ties keep the latest.
            order = np.lexsort((events.timestamp, ev_new, events.local))
            loc, ev_s, codes_s, ts_s = (
                events.local[order],
                ev_new[order],
                events.code[order],
                events.timestamp[order],
            )
            last = np.ones(loc.size, dtype=bool)
            last[:-1] = loc[1:] != loc[:-1]
            loc, ev_s, codes_s, ts_s = loc[last], ev_s[last], codes_s[last], ts_s[last]
            stronger = ev_s >= self.level[loc]
            upd = loc[stronger]
            self.level[upd] = ev_s[stronger]
            self.code[upd] = codes_s[stronger]
            self.when[upd] = ts_s[stronger]
            np.maximum.at(floor, events.local, floor_table[codes])
        age = now - self.when

        def fmt(code: float, age_s: float) -> str:
            ago = "" if not np.isfinite(age_s) or age_s < 60 else f", {age_s / 60:.0f} min ago"
            return describe_xid(int(code), ago)

        evidence = make_evidence(
            "xid", signal.name, signal.entity, 1.0, self.level.copy(), self.code.copy(), fmt, extra=age
        )
        return evidence, floor


@dataclass(frozen=True)
class HeartbeatVerdict:
    evidence: Evidence
    hard_fail: npt.NDArray[np.bool_]  # per node
    mass_stale: bool
    stale: npt.NDArray[np.bool_]  # per node: reported age beyond the limit


def heartbeat(signal: Signal, config: HeartbeatConfig, age: FloatArray) -> HeartbeatVerdict:
    """A heartbeat older than its limit is the one kind of silence that is a failure by itself.

    The age is what the scheduler or node agent *reports* (it keeps counting while the node is
    dead); a missing sample only means our telemetry path lost it, so it makes the node
    ``unknown`` through staleness and is never extrapolated into an age. If a large share of
    nodes report stale heartbeats together, the reporter (a restarting slurmctld, a partitioned
    agent collector) is the likelier culprit, so nothing is failed on that tick (a storm brake).
    """
    stale = np.nan_to_num(age, nan=0.0) > config.fail_after_s
    n_stale = int(stale.sum())
    mass = bool(stale.size and n_stale > 1 and n_stale >= config.mass_stale_fraction * stale.size)
    hard = np.zeros_like(stale) if mass else stale
    ev = ramp(age, config.fail_after_s / 4, config.fail_after_s)

    def fmt(m: float, _x: float) -> str:
        return f"node heartbeat {m:.0f} s old (limit {config.fail_after_s:g} s)"

    evidence = make_evidence("heartbeat", signal.name, signal.entity, 0.5, np.where(mass, 0.0, ev), age, fmt)
    return HeartbeatVerdict(evidence=evidence, hard_fail=hard, mass_stale=mass, stale=stale)
