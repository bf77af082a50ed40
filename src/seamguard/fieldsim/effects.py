"""What the scheduled faults and confounders do, as vectorised queries over (entity, time) pairs.

Every query takes equal-length arrays of local entity indices and sample times, so one call
serves a whole scrape (each node at its own phase) or one entity over a grid of times (the
labels' impact search). Python loops run over the faults and confounders only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from seamguard.fieldsim.confounders import (
    AppXid,
    ClockSkew,
    Confounder,
    CounterReset,
    FeedStop,
    Glitch,
    InputStall,
    LatchedFlow,
)
from seamguard.fieldsim.faults import (
    ColdPlate,
    FailingOptic,
    FallenOffBus,
    Fault,
    HbmDecay,
    LeafCongestion,
    NodeDeath,
    PumpWear,
    StorageDecay,
    Straggler,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
XID_DBE, XID_OFF_BUS = 48, 79


class Effects:
    """The faults and confounders of one run, sorted by type."""

    def __init__(
        self,
        faults: Sequence[Fault],
        confounders: Sequence[Confounder],
        *,
        gpu_node: IntArray,
        node_leaf: IntArray,
        n_nodes: int,
    ) -> None:
        self.faults = tuple(faults)
        self.confounders = tuple(confounders)
        self.gpu_node = gpu_node
        self.node_leaf = node_leaf
        self.cold = [f for f in faults if isinstance(f, ColdPlate)]
        self.optic = [f for f in faults if isinstance(f, FailingOptic)]
        self.hbm = [f for f in faults if isinstance(f, HbmDecay)]
        self.offbus = [f for f in faults if isinstance(f, FallenOffBus)]
        self.pump = [f for f in faults if isinstance(f, PumpWear)]
        self.storage = [f for f in faults if isinstance(f, StorageDecay)]
        self.straggler = [f for f in faults if isinstance(f, Straggler)]
        self.death = [f for f in faults if isinstance(f, NodeDeath)]
        self.congestion = [f for f in faults if isinstance(f, LeafCongestion)]
        self.stalls = [c for c in confounders if isinstance(c, InputStall)]
        self.latched = [c for c in confounders if isinstance(c, LatchedFlow)]
        self.resets = [c for c in confounders if isinstance(c, CounterReset)]
        self.feed_stops = [c for c in confounders if isinstance(c, FeedStop)]
        self.glitches = [c for c in confounders if isinstance(c, Glitch)]
        self.app_xids = [c for c in confounders if isinstance(c, AppXid)]
        self.clock_offset = np.zeros(n_nodes)
        for c in confounders:
            if isinstance(c, ClockSkew):
                self.clock_offset[c.node] = c.offset_s
        # A node's first hard failure (dead node, GPU off the bus, uncorrectable ECC): its job hangs.
        self.node_hard_fail = np.full(n_nodes, np.inf)
        for f in self.death:
            self.node_hard_fail[f.node] = min(self.node_hard_fail[f.node], f.onset)
        for g, at in [(f.gpu, f.onset) for f in self.offbus] + [(f.gpu, f.impact) for f in self.hbm]:
            n = int(gpu_node[g])
            self.node_hard_fail[n] = min(self.node_hard_fail[n], at)

    # ---- GPUs ---------------------------------------------------------------------------
    def rth_mult(self, gpu: IntArray, t: FloatArray) -> FloatArray:
        out = np.ones(gpu.size)
        for f in self.cold:
            m = gpu == f.gpu
            out[m] *= f.rth_mult(t[m])
        return out

    def clock_factor(self, gpu: IntArray, t: FloatArray) -> FloatArray:
        out = np.ones(gpu.size)
        for f in self.straggler:
            m = (gpu == f.gpu) & (t >= f.onset)
            out[m] *= f.clock_factor
        return out

    def fault_bits(self, gpu: IntArray, t: FloatArray) -> IntArray:
        out = np.zeros(gpu.size, dtype=np.int64)
        for f in self.straggler:
            out[(gpu == f.gpu) & (t >= f.onset)] |= f.bit
        return out

    def gpu_gone(self, gpu: IntArray, t: FloatArray) -> BoolArray:
        """GPUs whose series have stopped: off the bus, or on a dead node."""
        out = self.node_dead(self.gpu_node[gpu], t)
        for f in self.offbus:
            out |= (gpu == f.gpu) & (t > f.onset)
        return out

    def dbe(self, gpu: IntArray, t: FloatArray) -> FloatArray:
        out = np.zeros(gpu.size)
        for f in self.hbm:
            out[(gpu == f.gpu) & (t >= f.impact)] += 1.0
        return out

    def sbe_between(self, gpu: IntArray, t0: FloatArray, t1: FloatArray) -> FloatArray:
        out = np.zeros(gpu.size)
        for f in self.hbm:
            m = gpu == f.gpu
            out[m] += f.sbe_between(t0[m], t1[m])
        return out

    def rank_slowdown(self, gpu: IntArray, t: FloatArray) -> FloatArray:
        """Step-time factor of each rank from faults (thermal throttling is the physics' part)."""
        node = self.gpu_node[gpu]
        out = 1.0 / self.clock_factor(gpu, t)
        for f in self.optic:
            m = node == f.link
            out[m] *= f.slowdown(t[m])
        for c in self.congestion:
            m = self.node_leaf[node] == c.switch
            out[m] *= 1.0 + c.step_gain * c.level(t[m])
        return out

    # ---- nodes --------------------------------------------------------------------------
    def node_dead(self, node: IntArray, t: FloatArray) -> BoolArray:
        out = np.zeros(node.size, dtype=bool)
        for f in self.death:
            out |= (node == f.node) & (t > f.onset)
        return out

    def driver_gap(self, node: IntArray, t: FloatArray) -> BoolArray:
        """Nodes reloading their GPU driver: the GPU exporter has nothing to say."""
        out = np.zeros(node.size, dtype=bool)
        for c in self.resets:
            out |= (node == c.node) & (t >= c.at) & (t < c.at + c.gap_s)
        return out

    def last_reset(self, node: IntArray, t0: FloatArray, t1: FloatArray) -> FloatArray:
        """Time of a counter reset in (t0, t1] per sample, NaN where none."""
        out = np.full(node.size, np.nan)
        for c in self.resets:
            m = (node == c.node) & (t0 < c.at) & (c.at <= t1)
            out[m] = c.at
        return out

    def heartbeat_dead_since(self, node: IntArray) -> FloatArray:
        out = np.full(node.size, np.inf)
        for f in self.death:
            out[node == f.node] = f.onset
        return out

    # ---- fabric -------------------------------------------------------------------------
    def retx_ratio(self, link: IntArray, t: FloatArray) -> FloatArray:
        out = np.ones(link.size)
        for f in self.optic:
            m = link == f.link
            out[m] *= f.ratio(t[m])
        return out

    def latency_mult(self, link: IntArray, t: FloatArray) -> FloatArray:
        out = np.ones(link.size)
        for f in self.optic:
            m = link == f.link
            out[m] *= f.latency_mult(t[m])
        for c in self.congestion:
            m = self.node_leaf[link] == c.switch
            out[m] *= 1.0 + c.latency_gain * c.level(t[m])
        return out

    def buffer_pull(self, switch: IntArray, t: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(level 0..1, target buffer %) of congestion per switch sample."""
        level, target = np.zeros(switch.size), np.zeros(switch.size)
        for c in self.congestion:
            m = switch == c.switch
            level[m], target[m] = c.level(t[m]), c.buffer_pct
        return level, target

    # ---- facilities and storage -----------------------------------------------------------
    def pump_health(self, cdu: IntArray, t: FloatArray) -> FloatArray:
        out = np.ones(cdu.size)
        for f in self.pump:
            m = cdu == f.cdu
            out[m] *= f.health(t[m])
        return out

    def latched_flow(self, cdu: IntArray, t: FloatArray) -> FloatArray:
        """The stuck reading as a share of nominal flow, NaN where the transmitter is fine."""
        out = np.full(cdu.size, np.nan)
        for c in self.latched:
            out[(cdu == c.cdu) & (t >= c.start)] = c.fraction
        return out

    def feed_stopped(self, rack: IntArray, t: FloatArray) -> BoolArray:
        out = np.zeros(rack.size, dtype=bool)
        for c in self.feed_stops:
            out |= (rack == c.rack) & (t >= c.at)
        return out

    def storage_health(self, storage: IntArray, t: FloatArray) -> FloatArray:
        out = np.ones(storage.size)
        for f in self.storage:
            m = storage == f.storage
            out[m] *= f.health(t[m])
        return out

    def stall_factor(self, job: IntArray, t: FloatArray) -> FloatArray:
        out = np.ones(job.size)
        for c in self.stalls:
            out[(job == c.job) & (t >= c.start) & (t < c.end)] *= c.factor
        return out

    def forced_miss(self, node: IntArray, t: FloatArray) -> BoolArray:
        """Scrapes lost right after a job's stall ends (the 30 s after it, on one of its nodes)."""
        out = np.zeros(node.size, dtype=bool)
        for c in self.stalls:
            out |= (node == c.missed_node) & (t >= c.end) & (t < c.end + 30.0)
        return out

    # ---- events -------------------------------------------------------------------------
    def xid_events(self) -> tuple[IntArray, FloatArray, IntArray]:
        """(GPU, true time, code) of every XID of the run."""
        rows = [(f.gpu, f.impact, XID_DBE) for f in self.hbm]
        rows += [(f.gpu, f.onset, XID_OFF_BUS) for f in self.offbus]
        rows += [(c.gpu, c.at, c.code) for c in self.app_xids]
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64)
        g, t, c = zip(*rows, strict=True)
        return np.array(g, dtype=np.int64), np.array(t, dtype=np.float64), np.array(c, dtype=np.int64)
