"""Time alignment: each source's clock offset, estimated from arrival and against its peers.

A node exporter (or push client) whose clock runs 90 s behind stamps every sample 90 s in the
past: its values look older than its peers', go stale early, and a job-wide change shows on it
at a different time than on the ranks it is compared with. What the engine can see is each
sample's lag, the tick's time minus the sample's stamp. For a healthy source that lag is the
scrape and delivery delay, a fraction of a tick, and much the same for every source; a skewed
clock adds its offset to every sample it stamps.

So per *clock domain* (a node's exporter for its GPUs and MIG instances; every other entity is
its own domain: the node itself, whose heartbeat and Slurm flags are stamped by whoever probes it,
an uplink, since a fabric manager often reports it) the lag of each tick's newest sample is smoothed over ticks and compared with the
median of all domains'. An offset beyond the threshold (``engine.clock_skew_s``, never less than
a tick, since within one tick the phase of a scrape is normal) is corrected: that domain's
stamps are shifted before anything reads them (``correct`` says how).

Recorded telemetry replayed tick by tick is binned by its own stamps, so there a skew cannot be
seen from arrival; docs/scoring.md says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology
from seamguard.model.world import WorldChange, carry

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

SMOOTHING = 0.2  # EWMA weight of one tick's mean lag: a one-tick delivery hiccup is not a clock


def clock_domains(topology: Topology) -> IntArray:
    """Per entity (global index): a global index naming the clock that stamps its samples.

    A node's GPUs and MIG instances are stamped by its exporter: their domain is the node's
    first GPU. The node entity is not in it: its heartbeat age and Slurm flags are stamped by
    the prober or the daemon, on another clock, and a domain holding two clocks would have its
    newest sample's lag jump between them from one tick to the next."""
    domain = np.arange(topology.n_entities, dtype=np.int64)
    gpus = topology.members[EntityKind.GPU]
    if gpus.size:
        node_ids, first = np.unique(topology.gpu_node, return_index=True)
        exporter = np.zeros(topology.count(EntityKind.NODE), dtype=np.int64)
        exporter[node_ids] = gpus[first]
        domain[gpus] = exporter[topology.gpu_node]
        domain[topology.members[EntityKind.MIG]] = domain[gpus[topology.mig_gpu]]
    return domain  # links, racks, CDUs, storage, jobs: their own (a fabric manager or a BMS stamps them)


def domain_name(topology: Topology, domain: int) -> str:
    """A node's exporter is named by its node (``node/n03``), any other domain by its entity."""
    if topology.kind_of(domain) is EntityKind.GPU:
        return topology.ids[int(topology.members[EntityKind.NODE][topology.gpu_node[topology.local[domain]]])]
    return topology.ids[domain]


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
        """``ts`` with each skewed domain's offset removed; updates the estimate from this tick.

        The lag of a domain in a tick is that of its *newest* sample: an exporter flushing ten
        minutes of buffered samples after an outage also sends a fresh one, so a backlog is never
        taken for a clock. A correction starts when both the smoothed and this tick's offset are
        past the threshold, applies this tick's offset (the stamps are re-timed exactly, not by a
        smoothed guess), and stops in the first tick the domain's newest sample is back in line."""
        dom = self.domain[entity]
        finite = np.isfinite(ts)
        n = self.lag.size
        newest = np.full(n, np.inf)
        np.minimum.at(newest, dom[finite], now - ts[finite])
        seen = np.isfinite(newest)
        fresh_start = seen & ~np.isfinite(self.lag)
        self.lag[fresh_start] = newest[fresh_start]
        upd = seen & ~fresh_start
        self.lag[upd] += SMOOTHING * (newest[upd] - self.lag[upd])
        known = np.isfinite(self.lag)
        changes: list[SkewChange] = []
        if known.sum() >= 3:
            reference = float(np.median(self.lag[known]))
            smooth = np.where(known, self.lag - reference, 0.0)
            now_dev = np.where(seen, newest - reference, 0.0)
            limit = self.threshold_s
            on = self.offset != 0
            start = ~on & seen & (np.abs(smooth) > limit) & (np.abs(now_dev) > limit)
            stop = on & seen & (np.abs(now_dev) < limit / 2)
            keep = on & ~stop
            self.offset = np.where(start | (keep & seen), now_dev, np.where(keep, self.offset, 0.0))
            changes = [SkewChange(int(d), float(now_dev[d]), reference) for d in np.flatnonzero(start)]
            changes += [SkewChange(int(d), 0.0, reference) for d in np.flatnonzero(stop)]
        self.changes = tuple(changes)
        if not np.any(self.offset):
            return ts
        return ts + self.offset[dom]

    def carry_over(self, change: WorldChange) -> None:
        """Domains are entities (global index): a node that stays keeps its measured skew."""
        self.domain = clock_domains(change.new)
        self.lag = carry(self.lag, change.entities, np.nan)
        self.offset = carry(self.offset, change.entities, 0.0)

    def forget(self, domains: IntArray) -> None:
        """A repaired (reimaged) node's clock is measured afresh."""
        self.lag[domains] = np.nan
        self.offset[domains] = 0.0


MAX_NAMED = 5  # a notice names this many sources, then counts the rest


def skew_notices(topology: Topology, changes: tuple[SkewChange, ...]) -> list[str]:
    """One notice for the clocks found skewed this tick and one for those back in line."""
    out: list[str] = []
    started = [c for c in changes if c.offset_s != 0]
    ended = [c for c in changes if c.offset_s == 0]
    if started:
        named = ", ".join(
            f"{domain_name(topology, c.domain)} {abs(c.offset_s):.0f} s {'behind' if c.offset_s > 0 else 'ahead'}"
            for c in started[:MAX_NAMED]
        )
        more = f" and {len(started) - MAX_NAMED} more" if len(started) > MAX_NAMED else ""
        out.append(
            f"clock skew: sample times of {named}{more} against their peers (typical lag "
            f"{started[0].reference_lag_s:.0f} s); their samples are re-timed until the clocks agree"
        )
    if ended:
        named = ", ".join(domain_name(topology, c.domain) for c in ended[:MAX_NAMED])
        more = f" and {len(ended) - MAX_NAMED} more" if len(ended) > MAX_NAMED else ""
        out.append(f"clock skew cleared: {named}{more} back in line with their peers")
    return out
