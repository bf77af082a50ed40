"""The field fleet as a live telemetry source: ``batch(now, tick_s)`` returns what arrived.

Determinism: every scrape slot of every stream draws its noise from
``np.random.default_rng([seed, stream, slot])``, and the AR(1) states and counters are carried
from slot to slot. Slots are generated in order as time advances, independently of the tick
length, so the same seed gives the same samples whether the engine ticks every 10 s or 30 s;
``batch`` must be called with increasing ``now`` (the driver does).
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import numpy.typing as npt

from seamguard.fieldsim.delivery import DROP_RATE, MISS_RATE, Inbox, Rows, Stream
from seamguard.fieldsim.effects import Effects
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
from seamguard.fieldsim.hardware import H100, L40S
from seamguard.fieldsim.labels import ConfounderLabel, FaultLabel
from seamguard.fieldsim.noise import ArNoise, quantise, spikes, unit_t
from seamguard.fieldsim.physics import Physics, Plant
from seamguard.fieldsim.plan import FieldPlan
from seamguard.fieldsim.workload import Workload
from seamguard.model.catalog import signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.telemetry.batch import TelemetryBatch

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

IDLE_BIT, POWER_CAP_BIT, SYNC_BOOST_BIT = 0x1, 0x4, 0x10
LATENCY_SPIKE_RATE = 0.004  # link latency: 1.5-3x on this share of samples
STORAGE_SPIKE_RATE = 0.01  # storage p99: 2-4x on this share
HEARTBEAT_EVERY_S = 10.0  # the node agent answers this often
STEP_REPORT_AFTER_S = 60.0  # a job reports step times once it has started stepping

NOISE: dict[str, ArNoise] = {
    "gpu.temp_c": ArNoise(0.6, 90.0),
    "gpu.mem_temp_c": ArNoise(0.7, 90.0),
    "gpu.power_w": ArNoise(0.03, 30.0),  # relative
    "gpu.util_pct": ArNoise(1.5, 30.0),
    "gpu.sm_clock_mhz": ArNoise(10.0, 30.0),
    "gpu.step_time_s": ArNoise(0.02, 20.0),  # log: a slow step rarely outlasts a scrape or two
    "link.latency_us": ArNoise(0.03, 60.0),  # log
    "switch.buffer_util_pct": ArNoise(4.0, 60.0),
    "rack.inlet_temp_c": ArNoise(0.15, 900.0),
    "rack.power_kw": ArNoise(0.015, 60.0),  # relative
    "cdu.flow_lpm": ArNoise(0.006, 300.0),  # relative
    "cdu.pressure_kpa": ArNoise(0.8, 300.0),
    "cdu.supply_temp_c": ArNoise(0.08, 600.0),
    "cdu.return_temp_c": ArNoise(0.1, 600.0),
    "storage.write_latency_ms": ArNoise(0.1, 120.0),  # log
    "storage.read_latency_ms": ArNoise(0.1, 120.0),  # log
    "storage.throughput_gbps": ArNoise(0.03, 60.0),  # relative
    "job.step_time_s": ArNoise(0.012, 60.0),  # log
}
BIAS: dict[str, float] = {  # per-sensor constant offset (std)
    "gpu.temp_c": 0.8,
    "gpu.mem_temp_c": 1.0,
    "gpu.step_time_s": 0.008,  # log: the same-SKU speed spread
    "link.latency_us": 0.05,  # log
    "rack.inlet_temp_c": 0.3,
    "cdu.flow_lpm": 0.01,  # relative
}
INLET_WHITE_C = 0.3  # the rack inlet sensor's own noise
STREAMS = ("gpu", "gpu_counters", "link", "switch", "rack", "cdu", "storage", "job", "heartbeat")


class FieldFleet:
    """One seed's fleet as a telemetry source, with its fault and confounder labels."""

    def __init__(self, plan: FieldPlan) -> None:
        self.plan = plan
        fleet = self.fleet = plan.fleet
        topo = self.topology = fleet.topology
        self.catalog = signal_catalog()
        self.effects = Effects(
            [p.fault for p in plan.faults], plan.confounders,
            gpu_node=topo.gpu_node, node_leaf=topo.node_leaf, n_nodes=fleet.n_nodes,
        )  # fmt: skip
        self.workload = Workload(fleet, self.effects, plan.capacity_gbps, self._rng(11))
        self.plant = Plant.draw(fleet, self._rng(13), plan.capacity_gbps)
        self.physics = Physics(fleet, self.effects, self.workload, self.plant)
        self.streams = self._streams(self._rng(17))
        self._next = dict.fromkeys(STREAMS, 0)
        self._inbox = Inbox()
        self._now = plan.start
        self._ar: dict[str, FloatArray] = {}
        self._bias: dict[str, FloatArray] = {}
        self._glitched: set[int] = set()
        self._counters, self._counter_t = self._initial_counters(self._rng(19))
        rng = self._rng(23)
        n_gpu = fleet.n_gpus
        # Baseline error rates of healthy parts: most never err, a few err now and then.
        self._sbe_rate = np.where(rng.random(n_gpu) < 0.04, rng.uniform(0.5, 4.0, n_gpu), 0.0) / 3600.0
        nvlink = np.where(rng.random(n_gpu) < 0.10, rng.uniform(0.2, 2.0, n_gpu), 0.0) / 3600.0
        self._nvlink_rate = np.where(fleet.gpu_is_h100, nvlink, 0.0)
        self._pcie_rate = np.where(rng.random(n_gpu) < 0.05, rng.uniform(1.0, 10.0, n_gpu), 0.0) / 3600.0
        self._hb_phase = rng.uniform(0.0, HEARTBEAT_EVERY_S, fleet.n_nodes)
        self._step_s = np.array([r.step_s for r in self.workload.jobs])
        self._training = np.array([r.training for r in self.workload.jobs])
        self._hang = np.array([r.hang_at for r in self.workload.jobs])
        self._job_start = np.array([r.start for r in self.workload.jobs])
        gpus_stream = self.streams["gpu"]
        xg, xt, xc = self.effects.xid_events()
        src = gpus_stream.source[xg]
        self._xid = Rows(
            topo.members[EntityKind.GPU][xg], np.full(xg.size, self.catalog["gpu.xid"].index),
            xt + gpus_stream.clock[src], xc.astype(np.float64), xt + gpus_stream.delay[src],
        )  # fmt: skip

    # ---- set-up -------------------------------------------------------------------------
    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([self.plan.seed, *key])

    def _streams(self, rng: np.random.Generator) -> dict[str, Stream]:
        topo, start = self.topology, self.plan.start
        n_nodes = self.fleet.n_nodes
        node_phase = rng.uniform(0.0, 15.0, n_nodes)
        node_delay = rng.uniform(0.3, 2.5, n_nodes)
        counter_phase = node_phase + 15.0 * rng.integers(0, 2, n_nodes)
        clock = self.effects.clock_offset
        n_leaf = topo.count(EntityKind.SWITCH)
        fabric = (rng.uniform(0.0, 30.0, n_leaf), np.zeros(n_leaf), rng.uniform(0.5, 3.0, n_leaf))

        def own(kind: EntityKind, period: float, delay: tuple[float, float]) -> Stream:
            n = topo.count(kind)
            return Stream(kind.value, period, kind, np.arange(n), rng.uniform(0.0, period, n), np.zeros(n),
                          rng.uniform(*delay, n), start)  # fmt: skip

        return {
            "gpu": Stream("gpu", 15.0, EntityKind.GPU, topo.gpu_node, node_phase, clock, node_delay, start),
            "gpu_counters": Stream("gpu_counters", 30.0, EntityKind.GPU, topo.gpu_node, counter_phase, clock,
                                   node_delay, start),
            # Uplink latency and counters come from the fabric manager, per leaf, on its own clock.
            "link": Stream("link", 30.0, EntityKind.LINK, topo.node_leaf, *fabric, start),
            "switch": own(EntityKind.SWITCH, 30.0, (0.5, 3.0)),
            "rack": own(EntityKind.RACK, 60.0, (1.0, 5.0)),
            "cdu": own(EntityKind.CDU, 60.0, (1.0, 5.0)),
            "storage": own(EntityKind.STORAGE, 30.0, (0.5, 2.0)),
            "job": own(EntityKind.JOB, 15.0, (0.2, 1.0)),
            "heartbeat": Stream("heartbeat", 15.0, EntityKind.NODE, np.zeros(n_nodes, dtype=np.int64),
                                rng.uniform(0.0, 15.0, 1), np.zeros(1), np.full(1, 0.5), start),
        }  # fmt: skip

    def _initial_counters(
        self, rng: np.random.Generator
    ) -> tuple[dict[str, FloatArray], dict[str, FloatArray]]:
        n_gpu, n_link = self.fleet.n_gpus, self.fleet.n_nodes
        start = self.plan.start
        values = {
            "gpu.ecc_sbe_total": np.where(rng.random(n_gpu) < 0.1, rng.integers(1, 60, n_gpu), 0).astype(
                np.float64
            ),
            "gpu.ecc_dbe_total": np.zeros(n_gpu),
            "gpu.nvlink_errors_total": rng.integers(0, 200, n_gpu).astype(np.float64),
            "gpu.pcie_replay_total": rng.integers(0, 40, n_gpu).astype(np.float64),
            "link.retransmits_total": rng.uniform(1e5, 1e7, n_link).round(),
            "link.errors_total": rng.integers(0, 500, n_link).astype(np.float64),
        }
        return values, {"gpu": np.full(n_gpu, start), "link": np.full(n_link, start)}

    # ---- the source ---------------------------------------------------------------------
    def batch(self, now: float, tick_s: float) -> TelemetryBatch:
        """The samples that arrived in (now - tick_s, now]."""
        if not now > self._now:
            raise ValueError(f"batch times must increase: got {now} after {self._now}")
        for sid, name in enumerate(STREAMS):
            stream = self.streams[name]
            while stream.slot_start(self._next[name]) <= now:
                k = self._next[name]
                self._inbox.put(self._slot(name, sid, k))
                self._next[name] = k + 1
        due = (self._xid.arrival > self._now) & (self._xid.arrival <= now)
        self._inbox.put(self._xid.select(due))
        self._now = now
        return self._inbox.take(now, since=now - tick_s)

    def _slot(self, name: str, sid: int, k: int) -> Rows:
        stream = self.streams[name]
        rng = self._rng(1000 + sid, k)
        t = stream.times(k)
        missed = rng.random(stream.phase.size) < MISS_RATE
        parts = getattr(self, f"_{name}")(stream, t, rng)
        rows = Rows.concat(parts)
        if not rows.entity.size:
            return rows
        local = self.topology.local[rows.entity]
        keep = ~missed[stream.source[local]] & (rng.random(rows.entity.size) >= DROP_RATE)
        return rows.select(keep)

    def _emit(self, stream: Stream, signal: str, local: IntArray, t: FloatArray, value: FloatArray) -> Rows:
        """Rows of one signal for entities ``local`` sampled at ``t`` (both per entity of the stream)."""
        value = self._glitch(signal, local, t, value)
        src = stream.source[local]
        return Rows(
            self.topology.members[stream.kind][local],
            np.full(local.size, self.catalog[signal].index),
            t + stream.clock[src],
            value,
            t + stream.delay[src],
        )

    def _glitch(self, signal: str, local: IntArray, t: FloatArray, value: FloatArray) -> FloatArray:
        for i, g in enumerate(self.effects.glitches):
            if i in self._glitched or g.signal != signal:
                continue
            hit = np.flatnonzero((local == g.local) & (t >= g.at))
            if hit.size:
                value = value.copy()
                value[hit[0]] = g.value
                self._glitched.add(i)
        return value

    def _noise(self, key: str, size: int, dt: float, rng: np.random.Generator) -> FloatArray:
        spec = NOISE[key]
        state = self._ar.get(key)
        state = spec.initial(size, rng) if state is None else spec.step(state, dt, rng)
        self._ar[key] = state
        bias = self._bias.get(key)
        if bias is None:
            brng = self._rng(29, zlib.crc32(key.encode()))
            bias = self._bias[key] = brng.normal(0.0, BIAS.get(key, 0.0), size)
        return np.asarray(state + bias)

    # ---- streams ------------------------------------------------------------------------
    def _gpu(self, s: Stream, t: FloatArray, rng: np.random.Generator) -> list[Rows]:
        gpu = np.arange(t.size)
        node = self.topology.gpu_node
        truth = self.physics.gpu(gpu, t)
        dt = s.period_s
        temp = quantise(truth.temp_c + self._noise("gpu.temp_c", gpu.size, dt, rng), 1.0)
        mem = quantise(truth.mem_temp_c + self._noise("gpu.mem_temp_c", gpu.size, dt, rng), 1.0)
        cap = np.where(self.fleet.gpu_is_h100, H100.cap_w, L40S.cap_w)
        power = truth.power_w * (1.0 + self._noise("gpu.power_w", gpu.size, dt, rng))
        capped = power > cap
        power = quantise(np.where(capped, cap - np.abs(rng.normal(0.0, 2.0, gpu.size)), power), 0.01)
        busy = truth.util > 0.05
        util = np.clip(100.0 * truth.util + busy * self._noise("gpu.util_pct", gpu.size, dt, rng), 0.0, 100.0)
        owned = truth.job >= 0
        clock_noise = owned * self._noise("gpu.sm_clock_mhz", gpu.size, dt, rng)
        clock = truth.clock_mhz * np.where(capped, 0.97, 1.0) + clock_noise
        clock = quantise(np.maximum(clock, 0.0), 15.0)
        job = truth.job
        training = (job >= 0) & self._training[np.maximum(job, 0)]
        bits = truth.bits | np.where(~busy, IDLE_BIT, 0) | np.where(capped, POWER_CAP_BIT, 0)
        bits |= np.where(training & (rng.random(gpu.size) < 0.03), SYNC_BOOST_BIT, 0)
        step_noise = np.exp(self._noise("gpu.step_time_s", gpu.size, dt, rng))
        jc = np.maximum(job, 0)
        stepping = training & (t < self._hang[jc]) & (t >= self._job_start[jc] + STEP_REPORT_AFTER_S)
        step = quantise(self._step_s[jc] * truth.slowdown * step_noise, 0.001)

        eff = self.effects
        alive = ~eff.gpu_gone(gpu, t) & ~eff.driver_gap(node, t) & ~eff.forced_miss(node, t)
        on = np.flatnonzero(alive)
        out = [
            self._emit(s, "gpu.temp_c", on, t[on], temp[on]),
            self._emit(s, "gpu.mem_temp_c", on, t[on], mem[on]),
            self._emit(s, "gpu.power_w", on, t[on], power[on]),
            self._emit(s, "gpu.util_pct", on, t[on], np.round(util[on])),
            self._emit(s, "gpu.sm_clock_mhz", on, t[on], clock[on]),
            self._emit(s, "gpu.throttle_reasons", on, t[on], bits[on].astype(np.float64)),
        ]
        st = np.flatnonzero(alive & stepping)
        out.append(self._emit(s, "gpu.step_time_s", st, t[st], step[st]))
        return out

    def _gpu_counters(self, s: Stream, t: FloatArray, rng: np.random.Generator) -> list[Rows]:
        gpu = np.arange(t.size)
        node = self.topology.gpu_node
        eff, c = self.effects, self._counters
        last = self._counter_t["gpu"]
        reset = eff.last_reset(node, last, t)
        was_reset = np.isfinite(reset)
        since = np.where(was_reset, reset, last)
        dt = np.maximum(t - since, 0.0)
        for key in (
            "gpu.ecc_sbe_total",
            "gpu.ecc_dbe_total",
            "gpu.nvlink_errors_total",
            "gpu.pcie_replay_total",
        ):
            c[key][was_reset] = 0.0
        c["gpu.ecc_sbe_total"] += rng.poisson(self._sbe_rate * dt) + eff.sbe_between(gpu, since, t)
        c["gpu.ecc_dbe_total"] += eff.dbe(gpu, t) - eff.dbe(gpu, since)
        c["gpu.nvlink_errors_total"] += rng.poisson(self._nvlink_rate * dt)
        c["gpu.pcie_replay_total"] += rng.poisson(self._pcie_rate * dt)
        self._counter_t["gpu"] = t.copy()
        alive = ~eff.gpu_gone(gpu, t) & ~eff.driver_gap(node, t) & ~eff.forced_miss(node, t)
        on = np.flatnonzero(alive)
        out = [
            self._emit(s, key, on, t[on], c[key][on].copy())
            for key in ("gpu.ecc_sbe_total", "gpu.ecc_dbe_total", "gpu.pcie_replay_total")
        ]
        nv = np.flatnonzero(alive & self.fleet.gpu_is_h100)  # L40S boards have no NVLink
        out.append(
            self._emit(s, "gpu.nvlink_errors_total", nv, t[nv], c["gpu.nvlink_errors_total"][nv].copy())
        )
        return out

    def _node_util(self, node: IntArray, t: FloatArray) -> FloatArray:
        job = self.workload.job_at(node, t)
        return self.workload.util(node, t, job, self.effects.stall_factor(job, t))

    def _link(self, s: Stream, t: FloatArray, rng: np.random.Generator) -> list[Rows]:
        link = np.arange(t.size)
        eff, c = self.effects, self._counters
        util = self._node_util(link, t)
        lat = self.plant.link_base_us * (1.0 + 0.12 * util) * eff.latency_mult(link, t)
        lat = lat * np.exp(self._noise("link.latency_us", link.size, s.period_s, rng))
        lat = quantise(lat * spikes(rng, link.size, LATENCY_SPIKE_RATE, 1.5, 3.0), 0.01)
        ratio = eff.retx_ratio(link, t)
        dt = t - self._counter_t["link"]
        c["link.retransmits_total"] += rng.poisson(
            self.plant.link_retx_base * (0.1 + 0.9 * util) * ratio * dt
        )
        c["link.errors_total"] += rng.poisson(2e-4 * ratio**1.2 * dt)
        self._counter_t["link"] = t.copy()
        on = np.flatnonzero(~eff.node_dead(link, t))
        return [
            self._emit(s, "link.latency_us", on, t[on], lat[on]),
            self._emit(s, "link.retransmits_total", on, t[on], c["link.retransmits_total"][on].copy()),
            self._emit(s, "link.errors_total", on, t[on], c["link.errors_total"][on].copy()),
        ]

    def _switch(self, s: Stream, t: FloatArray, rng: np.random.Generator) -> list[Rows]:
        sw = np.arange(t.size)
        leaf = self.topology.node_leaf
        nodes = np.arange(leaf.size)
        util = self._node_util(nodes, t[leaf])
        mean = np.bincount(leaf, util, minlength=sw.size) / np.maximum(
            np.bincount(leaf, minlength=sw.size), 1
        )
        base = 12.0 + 30.0 * mean + self._noise("switch.buffer_util_pct", sw.size, s.period_s, rng)
        level, target = self.effects.buffer_pull(sw, t)
        buf = quantise(np.clip(base + (target - base) * level, 0.0, 100.0), 1.0)
        return [self._emit(s, "switch.buffer_util_pct", sw, t, buf)]

    def _rack(self, s: Stream, t: FloatArray, rng: np.random.Generator) -> list[Rows]:
        rack = np.arange(t.size)
        inlet = self.physics.rack_inlet_c(rack, t) + self._noise(
            "rack.inlet_temp_c", rack.size, s.period_s, rng
        )
        inlet = quantise(inlet + rng.normal(0.0, INLET_WHITE_C, rack.size), 0.1)
        power = self.physics.rack_power_kw(t) * (
            1.0 + self._noise("rack.power_kw", rack.size, s.period_s, rng)
        )
        on = np.flatnonzero(~self.effects.feed_stopped(rack, t))
        return [
            self._emit(s, "rack.inlet_temp_c", on, t[on], inlet[on]),
            self._emit(s, "rack.power_kw", on, t[on], quantise(power[on], 0.01)),
        ]

    def _cdu(self, s: Stream, t: FloatArray, rng: np.random.Generator) -> list[Rows]:
        cdu = np.arange(t.size)
        ph, dt = self.physics, s.period_s
        flow = ph.flow_lpm(cdu, t) * (1.0 + self._noise("cdu.flow_lpm", cdu.size, dt, rng))
        latched = self.effects.latched_flow(cdu, t)
        flow = quantise(np.where(np.isnan(latched), flow, latched * self.plant.cdu_flow0), 0.1)
        head = quantise(ph.head_kpa(cdu, t) + self._noise("cdu.pressure_kpa", cdu.size, dt, rng), 0.1)
        supply_true = ph.supply_c(cdu, t)
        supply = quantise(supply_true + self._noise("cdu.supply_temp_c", cdu.size, dt, rng), 0.01)
        ret = supply_true + ph.loop_rise_c(cdu, t) + self._noise("cdu.return_temp_c", cdu.size, dt, rng)
        return [
            self._emit(s, "cdu.flow_lpm", cdu, t, flow),
            self._emit(s, "cdu.pressure_kpa", cdu, t, head),
            self._emit(s, "cdu.supply_temp_c", cdu, t, supply),
            self._emit(s, "cdu.return_temp_c", cdu, t, quantise(ret, 0.01)),
        ]

    def _storage(self, s: Stream, t: FloatArray, rng: np.random.Generator) -> list[Rows]:
        sto = np.arange(t.size)
        dt = s.period_s
        write, read, thr = self.physics.storage(sto, t)
        write = write * np.exp(self._noise("storage.write_latency_ms", sto.size, dt, rng))
        write = write * spikes(rng, sto.size, STORAGE_SPIKE_RATE, 2.0, 4.0)
        read = read * np.exp(self._noise("storage.read_latency_ms", sto.size, dt, rng))
        read = read * spikes(rng, sto.size, STORAGE_SPIKE_RATE, 2.0, 4.0)
        thr = thr * (1.0 + self._noise("storage.throughput_gbps", sto.size, dt, rng))
        return [
            self._emit(s, "storage.write_latency_ms", sto, t, quantise(write, 0.1)),
            self._emit(s, "storage.read_latency_ms", sto, t, quantise(read, 0.1)),
            self._emit(s, "storage.throughput_gbps", sto, t, quantise(np.maximum(thr, 0.0), 0.01)),
        ]

    def _job(self, s: Stream, t: FloatArray, rng: np.random.Generator) -> list[Rows]:
        job = np.arange(t.size)
        noise = np.exp(self._noise("job.step_time_s", job.size, s.period_s, rng))
        wl = self.workload
        live = [
            r.index
            for r in wl.jobs
            if r.training and r.start + STEP_REPORT_AFTER_S <= t[r.index] < min(r.end, r.hang_at)
        ]
        if not live:
            return []
        sel = np.array(live, dtype=np.int64)
        gpus = [wl.jobs[j].gpus for j in live]
        sizes = np.array([g.size for g in gpus])
        flat = np.concatenate(gpus)
        slow = self.physics.gpu(flat, np.repeat(t[sel], sizes)).slowdown
        worst = np.maximum.reduceat(slow, np.concatenate(([0], np.cumsum(sizes)[:-1])))
        step = quantise(self._step_s[sel] * worst * 1.04 * noise[sel], 0.001)
        out = [self._emit(s, "job.step_time_s", sel, t[sel], step)]
        saves = [(j, wl.last_save(wl.jobs[j], float(t[j]))) for j in live]
        done = [(j, v) for j, v in saves if v is not None]
        ran = np.array([j for j, _ in done], dtype=np.int64)
        dur = np.array([v[1] for _, v in done])
        since = np.array([float(t[j]) - v[0] for j, v in done])
        fresh = np.array([j for j, v in saves if v is None], dtype=np.int64)
        out.append(self._emit(s, "job.checkpoint_duration_s", ran, t[ran], quantise(dur, 0.1)))
        ages = np.concatenate((since, t[fresh] - self._job_start[fresh]))
        both = np.concatenate((ran, fresh))
        out.append(self._emit(s, "job.since_checkpoint_s", both, t[both], quantise(ages, 1.0)))
        return out

    def _heartbeat(self, s: Stream, t: FloatArray, rng: np.random.Generator) -> list[Rows]:
        node = np.arange(t.size)
        dead = self.effects.heartbeat_dead_since(node)
        phase = self._hb_phase
        answered = np.where(t < dead, t, dead)
        last = answered - np.mod(answered - phase, HEARTBEAT_EVERY_S)
        age = t - last + 0.05 + 0.3 * np.abs(unit_t(rng, 3.0, node.size))
        return [self._emit(s, "node.heartbeat_age_s", node, t, quantise(age, 0.1))]

    # ---- labels -------------------------------------------------------------------------
    def fault_labels(self) -> tuple[FaultLabel, ...]:
        return tuple(
            FaultLabel(
                type(p.fault).kind,
                p.entity,
                p.reach,
                p.fault.onset,
                self._impact(p.fault),
                type(p.fault).sudden,
            )
            for p in self.plan.faults
        )

    def confounder_labels(self) -> tuple[ConfounderLabel, ...]:
        return self.plan.confounder_labels

    def _impact(self, f: Fault) -> float:
        """When the fault starts costing a job: an optic at ``cost_ratio`` x its baseline
        retransmits, a leaf when latency is 1.5x, HBM at the XID 48, sudden faults at onset; a cold
        plate when its GPU first throttles in a job, a pump when any GPU under it does; storage at
        the first save that takes 1.5x its nominal time. The run's end if that never happens."""
        end = self.plan.end
        if isinstance(f, FailingOptic | LeafCongestion):
            return f.impact
        if isinstance(f, HbmDecay):
            return f.impact
        if isinstance(f, FallenOffBus | Straggler | NodeDeath):
            return f.onset
        grid = np.arange(f.onset, end, 15.0)
        if isinstance(f, ColdPlate):
            hot = self.physics.throttling(np.full(grid.size, f.gpu), grid)
            return float(grid[hot][0]) if hot.any() else end
        if isinstance(f, PumpWear):
            gpus = np.flatnonzero(self.physics.gpu_cdu == f.cdu)
            for chunk in np.array_split(grid, max(1, math.ceil(grid.size / 60))):
                g = np.tile(gpus, chunk.size)
                hot = self.physics.throttling(g, np.repeat(chunk, gpus.size)).reshape(chunk.size, gpus.size)
                hot = np.asarray(hot.any(axis=1))
                if hot.any():
                    return float(chunk[hot][0])
            return end
        assert isinstance(f, StorageDecay)
        first = end
        for r in self.workload.jobs:
            if r.storage != f.storage or not r.ckpt_start.size:
                continue
            slow = (r.ckpt_start >= f.onset) & (r.ckpt_end - r.ckpt_start >= 1.5 * r.nominal_save_s)
            if slow.any():
                first = min(first, float(r.ckpt_start[slow][0]))
        return first
