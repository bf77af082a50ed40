"""Time alignment: each source's clock offset, estimated from arrival and against its peers.

A node exporter (or push client) whose clock runs 90 s behind stamps every sample 90 s in the
past: its values look older than its peers', go stale early, and a job-wide change shows on it
at a different time than on the ranks it is compared with. What the engine can see is each
sample's lag, the tick's time minus the sample's stamp. For a healthy source that lag is the
scrape and delivery delay, a fraction of a tick, and much the same for every source; a skewed
clock adds its offset to every sample it stamps.

So per *clock domain* (a node for its GPUs, MIG instances, heartbeat and uplink; every other
entity is its own domain) the mean lag of each tick's samples is smoothed over ticks, and the
domain's offset is its smoothed lag minus the median of all domains'. An offset beyond the
threshold (``engine.clock_skew_s``, never less than a tick, since within one tick the phase of a
scrape is normal) is corrected: that domain's stamps are shifted by it before anything reads
them. Correction ends with hysteresis once the offset falls under half the threshold.

Recorded telemetry replayed tick by tick is binned by its own stamps, so there a skew cannot be
seen from arrival; docs/scoring.md says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

SMOOTHING = 0.2  # EWMA weight of one tick's mean lag: a one-tick delivery hiccup is not a clock


def clock_domains(topology: Topology) -> IntArray:
    """Per entity (global index): the global index of the entity whose clock stamps its samples."""
    domain = np.arange(topology.n_entities, dtype=np.int64)
    nodes = topology.members[EntityKind.NODE]
    gpus = topology.members[EntityKind.GPU]
    domain[gpus] = nodes[topology.gpu_node]
    migs = topology.members[EntityKind.MIG]
    domain[migs] = nodes[topology.gpu_node[topology.mig_gpu]]
    links = topology.members[EntityKind.LINK]
    domain[links] = nodes[: links.size]  # link i is node i's uplink
    return domain


@dataclass(frozen=True)
class SkewChange:
    """A domain whose correction started (offset != 0) or ended (offset == 0) this tick."""

    domain: int
    offset_s: float
    reference_lag_s: float


class ClockAligner:
    def __init__(self, topology: Topology, threshold_s: float, tick_s: float) -> None:
        self.domain = clock_domains(topology)
        n = topology.n_entities
        self.threshold_s = max(threshold_s, tick_s)
        self.lag = np.full(n, np.nan)  # smoothed mean lag per domain (indexed by the domain's entity)
        self.offset = np.zeros(n)  # applied correction per domain: stamps are moved later by this
        self.changes: tuple[SkewChange, ...] = ()

    def correct(self, now: float, entity: IntArray, ts: FloatArray) -> FloatArray:
        """``ts`` with each skewed domain's offset removed; updates the estimate from this tick."""
        dom = self.domain[entity]
        finite = np.isfinite(ts)
        n = self.lag.size
        count = np.bincount(dom[finite], minlength=n)
        total = np.bincount(dom[finite], weights=now - ts[finite], minlength=n)
        seen = count > 0
        mean = np.zeros(n)
        mean[seen] = total[seen] / count[seen]
        fresh_start = seen & ~np.isfinite(self.lag)
        self.lag[fresh_start] = mean[fresh_start]
        upd = seen & ~fresh_start
        self.lag[upd] += SMOOTHING * (mean[upd] - self.lag[upd])
        known = np.isfinite(self.lag)
        changes: list[SkewChange] = []
        if known.sum() >= 3:
            reference = float(np.median(self.lag[known]))
            dev = np.where(known, self.lag - reference, 0.0)
            limit = self.threshold_s
            on = self.offset != 0
            start = ~on & (np.abs(dev) > limit)
            stop = on & (np.abs(dev) < limit / 2)
            # A corrected domain's lag is measured on its raw stamps, so its offset tracks dev.
            self.offset = np.where(start | (on & ~stop), dev, 0.0)
            changes = [SkewChange(int(d), float(dev[d]), reference) for d in np.flatnonzero(start)]
            changes += [SkewChange(int(d), 0.0, reference) for d in np.flatnonzero(stop)]
        self.changes = tuple(changes)
        if not np.any(self.offset):
            return ts
        return ts + self.offset[dom]


MAX_NAMED = 5  # a notice names this many sources, then counts the rest


def skew_notices(topology: Topology, changes: tuple[SkewChange, ...]) -> list[str]:
    """One notice for the clocks found skewed this tick and one for those back in line."""
    out: list[str] = []
    started = [c for c in changes if c.offset_s != 0]
    ended = [c for c in changes if c.offset_s == 0]
    if started:
        named = ", ".join(
            f"{topology.ids[c.domain]} {abs(c.offset_s):.0f} s {'behind' if c.offset_s > 0 else 'ahead'}"
            for c in started[:MAX_NAMED]
        )
        more = f" and {len(started) - MAX_NAMED} more" if len(started) > MAX_NAMED else ""
        out.append(
            f"clock skew: sample times of {named}{more} against their peers (typical lag "
            f"{started[0].reference_lag_s:.0f} s); their samples are re-timed until the clocks agree"
        )
    if ended:
        named = ", ".join(topology.ids[c.domain] for c in ended[:MAX_NAMED])
        more = f" and {len(ended) - MAX_NAMED} more" if len(ended) > MAX_NAMED else ""
        out.append(f"clock skew cleared: {named}{more} back in line with their peers")
    return out
