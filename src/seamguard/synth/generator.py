"""Synthetic, labelled fleet telemetry: a physically plausible baseline plus injected faults.

Every value is a closed-form function of (seed, time): ``batch(t)`` draws its noise from
``default_rng([seed, tick_number])`` and evaluates fault curves at the samples' timestamps,
so a tick's batch does not depend on which ticks were generated before it. Monotone counters
are the one place that needs care: they are ``floor(expected count + per-series phase +
jitter smaller than one tick's baseline increment)``, which is deterministic, monotone and
averages to the intended rate without replaying history. Everything is vectorised over the
entities of a kind; Python only loops over the (few) faults.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.model.catalog import SignalCatalog, SignalKind, signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import JobRecord
from seamguard.model.states import SYNCHRONOUS_CLASSES
from seamguard.model.topology import Topology
from seamguard.model.workload import active_jobs, build_workload
from seamguard.synth.faults import FaultSpec, Label, affected_entities, check_targets
from seamguard.telemetry.batch import TelemetryBatch

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

DAY_S = 86400.0
# Baseline plant and workload (the "normal" every detector is calibrated against).
SUPPLY_C = 30.0
RETURN_DELTA_C = 10.0
FLOW_LPM = 450.0
PRESSURE_KPA = 160.0
FACILITY_NOISE = 0.003  # relative
INLET_OVER_SUPPLY_C = 3.0
DIURNAL_AMP_C = 0.75
INLET_NOISE_C = 0.1
GPU_OVER_INLET_BUSY_C = 35.0
GPU_OVER_INLET_IDLE_C = 15.0
GPU_OFFSET_SD_C = 1.5
GPU_TEMP_NOISE_C = 0.4
MEM_OVER_GPU_C = 5.0
SM_CLOCK_MHZ = 1980.0
CLOCK_NOISE_MHZ = 5.0
POWER_BUSY_W = 650.0
POWER_IDLE_W = 90.0
UTIL_BUSY_PCT = 97.0
NODE_OVERHEAD_KW = 1.5
P_POWER_CAP = 0.02  # per busy GPU and tick: benign sw_power_cap bit (0x4)
P_SYNC_BOOST = 0.05  # benign sync_boost bit (0x10)
SBE_PER_H = 0.2
NVLINK_PER_H = 0.02
PCIE_PER_H = 0.05
APP_XID_PER_H = 0.002  # application XIDs (13/31/43): evidence 0, a confounder the engine must ignore
APP_XIDS = np.array([13, 31, 43], dtype=np.int64)
LINK_LATENCY_US = 2.0
LINK_LATENCY_NOISE = 0.02
RETRANSMITS_PER_S = 0.5
LINK_ERRORS_PER_S = 0.001
SWITCH_BUFFER_PCT = 30.0
WRITE_MS, READ_MS, THROUGHPUT_GBPS = 25.0, 12.0, 40.0
STORAGE_NOISE = 0.05  # p99 latencies
THROUGHPUT_NOISE = 0.02  # aggregate throughput is smoother than a tail latency
HEARTBEAT_MAX_S = 15.0
STEP_S = 2.0
SPEED_SD, SPEED_CLIP = 0.015, 0.04
RANK_NOISE, JOB_NOISE = 0.004, 0.003
CHECKPOINT_S = 30.0
CHECKPOINT_LATENCY_EXP = 0.6  # checkpoint duration ~ write latency ** this
CHECKPOINT_NOISE = 0.02
CHECKPOINT_EVERY_S = 1800.0  # each job saves on its own 30-minute timer (a per-job phase)
# Fault physics.
FLOW_LOSS = 0.45  # cdu_flow_loss: flow and pressure fall to 55% at severity 1
SUPPLY_RISE_C = 3.0
INLET_RISE_C = 10.0
PLATE_RISE_C = 10.0  # cold plates lose flow too: GPUs heat by inlet rise + this
THERMAL_LAG_S = 90.0
SW_THERMAL_C, HW_THERMAL_C = 87.0, 89.0
THERMAL_CLOCK_DROP_PER_C = 0.04
HBM_SBE_START_PER_H, HBM_SBE_END_PER_H = 1.0, 3000.0
LINK_RETRANSMITS_END_PER_S = 500.0
LINK_ERRORS_START_PER_S = 0.005  # grows x1000 like the retransmits
LINK_ERRORS_RAMP_SHARE = 0.5  # retransmits/errors reach their peak at this share of the ramp
LINK_LATENCY_RISE = 2.0  # latency x(1 + this * p^2): x3 at the end
LINK_SLOWDOWN_FROM = 1.5  # the job starts to slow once latency passes this factor
LINK_JOB_GAIN = 0.5
PCIE_REPLAY_PER_MIN = 50.0
PCIE_SLOWDOWN = 0.3
WRITE_TAIL_MS, READ_TAIL_MS, THROUGHPUT_LOSS = 3000.0, 500.0, 0.5
WRITE_IMPACT_MS = 250.0
HW_THERMAL_JUMP_C = 15.0
HW_THERMAL_CLOCK, HW_THERMAL_SLOWDOWN = 0.7, 0.25
SLOW_GPU = 0.08
# DCGM "blank" values (int64 fields surfaced as float): all >= 2**62, never a measurement.
SENTINELS = np.array(
    [2**63 - 1, 0x7FF0000000000000, 0x7FF0000000000001, 0x7FF0000000000002], dtype=np.float64
)
# Sample timestamps: entity phase in [PHASE_MIN, PHASE_MAX) x tick, plus jitter below JITTER x tick.
PHASE_MIN, PHASE_MAX, JITTER = 0.02, 0.8, 0.1
_STATIC_STREAM = 2**32 - 1

GPU_SIGNALS = (
    "gpu.temp_c", "gpu.mem_temp_c", "gpu.sm_clock_mhz", "gpu.power_w", "gpu.util_pct", "gpu.throttle_reasons",
    "gpu.ecc_sbe_total", "gpu.ecc_dbe_total", "gpu.nvlink_errors_total", "gpu.pcie_replay_total",
    "gpu.row_remap_pending",
)  # fmt: skip
# Catalog signals the synthetic fleet does not emit: DCGM fields that real exporters give (read by
# sources/dcgm.py) but no synthetic fault moves. The hbm_ecc fault shows through the ECC counters,
# row_remap_pending and XID 48; the remap counters and profiling ratios would only add noise to the
# labelled suite. It has no MIG instances either.
NOT_SIMULATED = frozenset({
    "gpu.row_remap_failure", "gpu.remapped_rows_uncorrectable_total", "gpu.remapped_rows_correctable_total",
    "gpu.mem_clock_mhz", "gpu.fb_used_mib", "gpu.fb_free_mib", "gpu.gr_engine_active", "gpu.tensor_active",
    "gpu.dram_active", "gpu.pcie_tx_bytes_per_s", "gpu.pcie_rx_bytes_per_s",
    "mig.fb_used_mib", "mig.fb_free_mib", "mig.gr_engine_active", "mig.tensor_active", "mig.dram_active",
})  # fmt: skip
GPU_COUNTERS = ("gpu.ecc_sbe_total", "gpu.ecc_dbe_total", "gpu.nvlink_errors_total", "gpu.pcie_replay_total")
RESET_COUNTERS = ("gpu.ecc_sbe_total", "gpu.nvlink_errors_total", "gpu.pcie_replay_total")
COUNTER_FAULTS: dict[str, tuple[str, ...]] = {  # which fault kinds add events to which counter
    "gpu.ecc_sbe_total": ("hbm_ecc",),
    "gpu.ecc_dbe_total": ("hbm_ecc",),
    "gpu.nvlink_errors_total": (),
    "gpu.pcie_replay_total": ("pcie_downtrain",),
    "link.retransmits_total": ("link_retransmits",),
    "link.errors_total": ("link_retransmits",),
}


@dataclass(frozen=True)
class _Fault:
    spec: FaultSpec
    onset: float
    local: int  # target's index within its kind

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def ramp(self) -> float:
        return self.spec.ramp_s

    @property
    def sev(self) -> float:
        return self.spec.severity

    def progress(self, times: FloatArray) -> FloatArray:
        """0 before onset, rising linearly to 1 over the ramp (a step when there is none)."""
        if self.ramp <= 0:
            return (times >= self.onset).astype(np.float64)
        return np.clip((times - self.onset) / self.ramp, 0.0, 1.0)


@dataclass(frozen=True)
class _Work:
    """Placement at one instant (model.workload), with the active jobs as an index array."""

    active: IntArray
    node_job: IntArray
    gpu_job: IntArray
    busy: BoolArray


@dataclass(frozen=True)
class _Counter:
    rate_per_s: float
    phase: FloatArray  # per-series fractional offset in [0, 1)
    origin: FloatArray  # per-series time the counter started (its uptime)


class SyntheticFleet:
    """Telemetry of ``topology`` with ``faults`` injected; see the module docstring."""

    def __init__(
        self,
        topology: Topology,
        faults: Sequence[FaultSpec],
        *,
        seed: int,
        start: float,
        tick_s: float = 30.0,
        dropout: float = 0.01,
        sentinel_rate: float = 0.0005,
    ) -> None:
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if not tick_s > 0:
            raise ValueError(f"tick_s must be positive, got {tick_s}")
        if not (0.0 <= dropout < 1.0 and 0.0 <= sentinel_rate < 1.0):
            raise ValueError("dropout and sentinel_rate must be probabilities below 1")
        check_targets(faults, topology)
        self.topology = topology
        self.seed = seed
        self.start = float(start)
        self.tick_s = float(tick_s)
        self.dropout = dropout
        self.sentinel_rate = sentinel_rate
        self.catalog: SignalCatalog = signal_catalog()
        self._sig = {s.name: s.index for s in self.catalog.signals}
        topo = topology
        self.n_gpu, self.n_node = topo.count(EntityKind.GPU), topo.count(EntityKind.NODE)
        self.n_rack, self.n_cdu = topo.count(EntityKind.RACK), topo.count(EntityKind.CDU)
        self.n_leaf, self.n_sto = topo.count(EntityKind.SWITCH), topo.count(EntityKind.STORAGE)

        # Jobs are the topology's, in its order: a job's position is its local index.
        self._jobs = topo.jobs
        self._job_gidx = topo.members[EntityKind.JOB]
        node_ix = {n: i for i, n in enumerate(topo.names[EntityKind.NODE])}
        self._job_nodes = [
            np.array([node_ix[n] for n in j.nodes if n in node_ix], np.int64) for j in self._jobs
        ]
        self._job_sync = np.array([j.job_class in SYNCHRONOUS_CLASSES for j in self._jobs], dtype=bool)
        self._job_start = np.array([j.start for j in self._jobs], dtype=np.float64)
        self._job_end = np.array([j.end for j in self._jobs], dtype=np.float64)
        sto_ix = {s: i for i, s in enumerate(topo.names[EntityKind.STORAGE])}
        self._job_storage = np.array(
            [
                self._storage_of(j, nodes, sto_ix)
                for j, nodes in zip(self._jobs, self._job_nodes, strict=True)
            ],
            dtype=np.int64,
        )
        self._work_cache: dict[tuple[int, ...], _Work] = {}

        # Static per-entity properties: a stream of its own, never shared with the ticks.
        rng = np.random.default_rng([seed, _STATIC_STREAM, 0])
        ng, nn = self.n_gpu, self.n_node
        self._gpu_offset = rng.normal(0.0, GPU_OFFSET_SD_C, ng)
        self._speed = np.clip(rng.normal(1.0, SPEED_SD, ng), 1 - SPEED_CLIP, 1 + SPEED_CLIP)
        n_rows = topo.count(EntityKind.ROW)
        row_phase = rng.uniform(0.0, 2 * np.pi, max(n_rows, 1))
        self._rack_phase = np.where(topo.rack_row >= 0, row_phase[np.maximum(topo.rack_row, 0)], 0.0)
        self._phase = {
            kind: rng.uniform(PHASE_MIN, PHASE_MAX, topo.count(kind)) * self.tick_s
            for kind in (
                EntityKind.NODE,
                EntityKind.RACK,
                EntityKind.CDU,
                EntityKind.SWITCH,
                EntityKind.STORAGE,
            )
        }
        self._job_phase = rng.uniform(PHASE_MIN, PHASE_MAX, len(self._jobs)) * self.tick_s
        gpu_origin = self.start - rng.uniform(1.0, 30.0, ng) * DAY_S
        link_origin = self.start - rng.uniform(1.0, 30.0, nn) * DAY_S
        self._counters: dict[str, _Counter] = {
            "gpu.ecc_sbe_total": _Counter(SBE_PER_H / 3600, rng.random(ng), gpu_origin),
            "gpu.ecc_dbe_total": _Counter(0.0, rng.random(ng), gpu_origin),
            "gpu.nvlink_errors_total": _Counter(NVLINK_PER_H / 3600, rng.random(ng), gpu_origin),
            "gpu.pcie_replay_total": _Counter(PCIE_PER_H / 3600, rng.random(ng), gpu_origin),
            "link.retransmits_total": _Counter(RETRANSMITS_PER_S, rng.random(nn), link_origin),
            "link.errors_total": _Counter(LINK_ERRORS_PER_S, rng.random(nn), link_origin),
        }

        self._faults = [
            _Fault(f, self.start + f.onset_s, int(topo.local[topo.index[f.target]])) for f in faults
        ]
        self._by_kind: dict[str, list[_Fault]] = {}
        for f in self._faults:
            self._by_kind.setdefault(f.kind, []).append(f)

        # Output layout of the per-GPU block (11 signals x ng), built once.
        self._gpu_g = topo.members[EntityKind.GPU]
        self._gpu_block_ent = np.tile(self._gpu_g, len(GPU_SIGNALS))
        self._gpu_block_sig = np.repeat(np.array([self._sig[s] for s in GPU_SIGNALS], np.int64), ng)
        gauge = np.array([self.catalog[s].kind is SignalKind.GAUGE for s in GPU_SIGNALS])
        self._gpu_block_gauge = np.repeat(gauge, ng)
        self._labels = [self._label(f) for f in self._faults]

    # ---- public ---------------------------------------------------------------------------
    def labels(self) -> list[Label]:
        return list(self._labels)

    def tick_number(self, t: float) -> int:
        return math.floor((t - self.start) / self.tick_s + 1e-6)

    def batch(self, t: float) -> TelemetryBatch:
        """All samples of the tick ending at ``t`` (timestamps in (t - tick_s, t])."""
        k = self.tick_number(t)
        rng = np.random.default_rng([self.seed, k] if k >= 0 else [self.seed, _STATIC_STREAM, 1, -k])
        topo, tick = self.topology, self.tick_s
        ng, nn, nr, nc = self.n_gpu, self.n_node, self.n_rack, self.n_cdu
        nl, ns, nj = self.n_leaf, self.n_sto, len(self._jobs)
        work = self._work(t)
        busy = work.busy

        # Timestamps: a fixed scrape phase per entity plus jitter.
        jit = rng.random(nn + nr + nc + nl + ns + nj) * (JITTER * tick)
        cut = np.cumsum([nn, nr, nc, nl, ns])
        j_node, j_rack, j_cdu, j_leaf, j_sto, j_job = np.split(jit, cut)
        ts_node = t - self._phase[EntityKind.NODE] - j_node
        ts_rack = t - self._phase[EntityKind.RACK] - j_rack
        ts_cdu = t - self._phase[EntityKind.CDU] - j_cdu
        ts_leaf = t - self._phase[EntityKind.SWITCH] - j_leaf
        ts_sto = t - self._phase[EntityKind.STORAGE] - j_sto
        ts_job = t - self._job_phase - j_job
        ts_gpu = ts_node[topo.gpu_node]

        # ---- facilities
        z = rng.standard_normal((4, nc))
        flow_frac = np.ones(nc)
        supply = np.full(nc, SUPPLY_C)
        for f in self._by_kind.get("cdu_flow_loss", []):
            p = float(f.progress(ts_cdu[f.local : f.local + 1])[0])
            flow_frac[f.local] *= max(1.0 - FLOW_LOSS * f.sev * p, 0.05)
            supply[f.local] += SUPPLY_RISE_C * f.sev * p
        cdu_flow = FLOW_LPM * flow_frac * (1 + FACILITY_NOISE * z[0])
        cdu_pressure = PRESSURE_KPA * flow_frac * (1 + FACILITY_NOISE * z[1])
        cdu_supply = supply * (1 + FACILITY_NOISE * z[2])
        cdu_return = cdu_supply + RETURN_DELTA_C / flow_frac + FACILITY_NOISE * 40.0 * z[3]
        zr = rng.standard_normal((2, nr))
        inlet = self._inlet(np.arange(nr), ts_rack) + INLET_NOISE_C * zr[0]

        # ---- GPUs
        zg = rng.standard_normal((6, ng))
        node_heat = self._inlet(topo.node_rack, ts_node - THERMAL_LAG_S) + self._plate(
            topo.node_rack, ts_node - THERMAL_LAG_S
        )
        raw = (
            node_heat[topo.gpu_node]
            + np.where(busy, GPU_OVER_INLET_BUSY_C, GPU_OVER_INLET_IDLE_C)
            + self._gpu_offset
        )
        clock_factor = np.ones(ng)
        step_mult = np.ones(ng)
        speed = self._speed.copy()
        bits = np.where(busy, 0, 0x1).astype(np.int64)
        for f in self._by_kind.get("hw_thermal", []):
            if ts_gpu[f.local] >= f.onset:
                raw[f.local] += HW_THERMAL_JUMP_C * f.sev
                clock_factor[f.local] *= 1 - (1 - HW_THERMAL_CLOCK) * min(f.sev, 1.0)
                step_mult[f.local] *= 1 + HW_THERMAL_SLOWDOWN * f.sev
                bits[f.local] |= 0x40
        for f in self._by_kind.get("pcie_downtrain", []):
            if ts_gpu[f.local] >= f.onset:
                step_mult[f.local] *= 1 + PCIE_SLOWDOWN * f.sev
        for f in self._by_kind.get("slow_gpu", []):
            if ts_gpu[f.local] >= f.onset:
                speed[f.local] = 1 + SLOW_GPU * f.sev
        sw_thermal = raw >= SW_THERMAL_C
        thermal = np.where(
            sw_thermal, np.clip(1 - THERMAL_CLOCK_DROP_PER_C * (raw - SW_THERMAL_C + 1), 0.6, 1), 1
        )
        clock_factor *= thermal
        step_mult /= thermal
        u = rng.random(ng)
        power_cap = busy & (u < P_POWER_CAP)
        bits |= np.where(power_cap, 0x4, 0) | np.where(
            busy & (u >= P_POWER_CAP) & (u < P_POWER_CAP + P_SYNC_BOOST), 0x10, 0
        )
        bits |= np.where(sw_thermal, 0x20, 0) | np.where(raw >= HW_THERMAL_C, 0x40, 0)
        clock_factor *= np.where(power_cap, 0.985, 1.0)
        gpu_temp = raw + GPU_TEMP_NOISE_C * zg[0]
        mem_temp = raw + MEM_OVER_GPU_C + GPU_TEMP_NOISE_C * zg[1]
        clock = SM_CLOCK_MHZ * clock_factor + CLOCK_NOISE_MHZ * zg[2]
        power = np.where(busy, POWER_BUSY_W * clock_factor + 10.0 * zg[3], POWER_IDLE_W + 3.0 * zg[3])
        util = np.where(busy, np.minimum(UTIL_BUSY_PCT + zg[4], 100.0), 0.0)
        rank_time = STEP_S * speed * step_mult * (1 + RANK_NOISE * zg[5])
        eps = rng.random((3, ng))
        sbe = self._count("gpu.ecc_sbe_total", ts_gpu, eps[0])
        dbe = self._count("gpu.ecc_dbe_total", ts_gpu, None)
        nvlink = self._count("gpu.nvlink_errors_total", ts_gpu, eps[1])
        pcie = self._count("gpu.pcie_replay_total", ts_gpu, eps[2])
        remap = np.zeros(ng)
        for f in self._by_kind.get("hbm_ecc", []):
            if ts_gpu[f.local] >= f.onset + f.ramp / 2:
                remap[f.local] = 1.0
        dead = np.zeros(ng, dtype=bool)
        for f in self._by_kind.get("xid79", []):
            dead[f.local] |= bool(ts_gpu[f.local] >= f.onset)
        silent = np.zeros(nn, dtype=bool)
        for f in self._by_kind.get("exporter_silent", []):
            silent[f.local] |= bool(f.onset <= ts_node[f.local] < f.onset + f.ramp)
        gpu_present = ~dead & ~silent[topo.gpu_node]

        # ---- nodes and links
        heartbeat = rng.random(nn) * HEARTBEAT_MAX_S
        zl = rng.standard_normal(nn)
        eps_l = rng.random((2, nn))
        lat_factor = np.ones(nn)
        for f in self._by_kind.get("link_retransmits", []):
            p = float(f.progress(ts_node[f.local : f.local + 1])[0])
            lat_factor[f.local] *= 1 + LINK_LATENCY_RISE * f.sev * p * p
        latency = LINK_LATENCY_US * lat_factor * (1 + LINK_LATENCY_NOISE * zl)
        retrans = self._count("link.retransmits_total", ts_node, eps_l[0])
        errors = self._count("link.errors_total", ts_node, eps_l[1])
        comm = 1 + LINK_JOB_GAIN * np.maximum(lat_factor - LINK_SLOWDOWN_FROM, 0.0)

        # ---- switches, storage
        buffer = np.clip(SWITCH_BUFFER_PCT + 2.0 * rng.standard_normal(nl), 0.0, 100.0)
        zs = rng.standard_normal((3, ns))
        wfac, rfac, tfac = np.ones(ns), np.ones(ns), np.ones(ns)
        for f in self._by_kind.get("storage_tail", []):
            p = float(f.progress(ts_sto[f.local : f.local + 1])[0])
            wfac[f.local] *= self._write_growth(f) ** p
            rfac[f.local] *= (1 + (READ_TAIL_MS / READ_MS - 1) * f.sev) ** p
            tfac[f.local] *= max(1 - THROUGHPUT_LOSS * f.sev * p, 0.05)
        write = WRITE_MS * wfac * (1 + STORAGE_NOISE * zs[0])
        read = READ_MS * rfac * (1 + STORAGE_NOISE * zs[1])
        throughput = THROUGHPUT_GBPS * tfac * (1 + THROUGHPUT_NOISE * zs[2])

        # ---- jobs: a synchronous job runs at its slowest rank and its slowest link
        zj = rng.standard_normal((2, nj))
        ranks = busy & ~dead
        jpos = work.gpu_job[ranks]
        comp_max = np.zeros(nj)
        np.maximum.at(comp_max, jpos, rank_time[ranks])
        comm_max = np.ones(nj)
        nodes_busy = np.flatnonzero(work.node_job >= 0)
        np.maximum.at(comm_max, work.node_job[nodes_busy], comm[nodes_busy])
        n_ranks = np.bincount(jpos, minlength=nj)
        mean = np.bincount(
            jpos, weights=rank_time[ranks] * comm[topo.gpu_node[ranks]], minlength=nj
        ) / np.maximum(n_ranks, 1)
        job_step = np.where(self._job_sync, comp_max * comm_max, mean) * (1 + JOB_NOISE * zj[0])
        job_wfac = np.where(self._job_storage >= 0, wfac[np.maximum(self._job_storage, 0)], 1.0)
        ckpt = CHECKPOINT_S * job_wfac**CHECKPOINT_LATENCY_EXP * (1 + CHECKPOINT_NOISE * zj[1])
        since_ckpt = np.mod(t + np.arange(nj) * 317.0, CHECKPOINT_EVERY_S)  # fixed per-job phases
        jobs_on = work.active[n_ranks[work.active] > 0]

        rack_power = (
            np.bincount(topo.node_rack[topo.gpu_node], weights=np.where(dead, 0.0, power), minlength=nr)
            / 1000.0
            + NODE_OVERHEAD_KW * np.bincount(topo.node_rack, minlength=nr)
        ) * (1 + 0.005 * zr[1])

        # ---- XID events (never dropped: they arrive through the kernel log, not the scrape)
        app = (rng.random(ng) < APP_XID_PER_H * tick / 3600.0) & busy & gpu_present
        app_idx = np.flatnonzero(app)
        ev_local = [app_idx]
        ev_code = [APP_XIDS[rng.integers(0, APP_XIDS.size, app_idx.size)]]
        ev_ts = [t - rng.random(app_idx.size) * tick * 0.999]
        for kind, code, delay in (("xid79", 79, 0.0), ("hbm_ecc", 48, None)):
            for f in self._by_kind.get(kind, []):
                when = f.onset + (f.ramp if delay is None else delay)
                if t - tick < when <= t:
                    ev_local.append(np.array([f.local], np.int64))
                    ev_code.append(np.array([code], np.int64))
                    ev_ts.append(np.array([when]))

        # ---- assemble
        gpu_vals = np.concatenate(
            [gpu_temp, mem_temp, clock, power, util, bits.astype(np.float64), sbe, dbe, nvlink, pcie, remap]
        )
        n_gpu_sig = len(GPU_SIGNALS)
        blocks: list[tuple[IntArray, IntArray, FloatArray, FloatArray, BoolArray, BoolArray]] = [
            (
                self._gpu_block_ent,
                self._gpu_block_sig,
                np.tile(ts_gpu, n_gpu_sig),
                gpu_vals,
                np.tile(gpu_present, n_gpu_sig),
                self._gpu_block_gauge,
            )
        ]

        def add(kind: EntityKind, local: IntArray | None, name: str, ts: FloatArray, val: FloatArray,
                present: BoolArray | None = None) -> None:  # fmt: skip
            members = topo.members[kind]
            ent = members if local is None else members[local]
            n = ent.size
            blocks.append(
                (
                    ent,
                    np.full(n, self._sig[name], np.int64),
                    ts,
                    val,
                    np.ones(n, bool) if present is None else present,
                    np.full(n, self.catalog[name].kind is SignalKind.GAUGE),
                )
            )

        stepping = np.flatnonzero(busy & gpu_present)
        add(EntityKind.GPU, stepping, "gpu.step_time_s", ts_gpu[stepping], rank_time[stepping])
        add(EntityKind.NODE, None, "node.heartbeat_age_s", ts_node, heartbeat, ~silent)
        add(EntityKind.RACK, None, "rack.inlet_temp_c", ts_rack, inlet)
        add(EntityKind.RACK, None, "rack.power_kw", ts_rack, rack_power)
        for name, val in (("cdu.flow_lpm", cdu_flow), ("cdu.supply_temp_c", cdu_supply),
                          ("cdu.return_temp_c", cdu_return), ("cdu.pressure_kpa", cdu_pressure)):  # fmt: skip
            add(EntityKind.CDU, None, name, ts_cdu, val)
        for name, val in (("link.latency_us", latency), ("link.retransmits_total", retrans),
                          ("link.errors_total", errors)):  # fmt: skip
            add(EntityKind.LINK, None, name, ts_node, val, ~silent)
        add(EntityKind.SWITCH, None, "switch.buffer_util_pct", ts_leaf, buffer)
        for name, val in (("storage.write_latency_ms", write), ("storage.read_latency_ms", read),
                          ("storage.throughput_gbps", throughput)):  # fmt: skip
            add(EntityKind.STORAGE, None, name, ts_sto, val)
        for name, val in (("job.step_time_s", job_step), ("job.checkpoint_duration_s", ckpt),
                          ("job.since_checkpoint_s", since_ckpt)):  # fmt: skip
            blocks.append(
                (
                    self._job_gidx[jobs_on],
                    np.full(jobs_on.size, self._sig[name], np.int64),
                    ts_job[jobs_on],
                    val[jobs_on],
                    np.ones(jobs_on.size, bool),
                    np.ones(jobs_on.size, bool),
                )
            )

        ent = np.concatenate([b[0] for b in blocks])
        sig = np.concatenate([b[1] for b in blocks])
        ts = np.concatenate([b[2] for b in blocks])
        val = np.concatenate([b[3] for b in blocks])
        keep = np.concatenate([b[4] for b in blocks])
        gauge = np.concatenate([b[5] for b in blocks])
        if self.dropout > 0:
            keep &= rng.random(keep.size) >= self.dropout
        if self.sentinel_rate > 0:
            hit = np.flatnonzero(gauge & (rng.random(gauge.size) < self.sentinel_rate))
            val[hit] = SENTINELS[rng.integers(0, SENTINELS.size, hit.size)]
        xid_local = np.concatenate(ev_local)
        xid_sig = self._sig["gpu.xid"]
        # The scheduler's view comes by its own path, after the exporters' dropouts: no synthetic
        # fault takes a node's slurmd down (a GPU off the bus leaves the node up).
        nodes = topo.members[EntityKind.NODE]
        sched_sig = np.repeat([self._sig["node.slurm_down"], self._sig["node.slurm_not_responding"]], nn)
        return TelemetryBatch(
            np.concatenate([ent[keep], self._gpu_g[xid_local], np.tile(nodes, 2)]),
            np.concatenate([sig[keep], np.full(xid_local.size, xid_sig, np.int64), sched_sig]),
            np.concatenate([ts[keep], *ev_ts, np.tile(ts_node, 2)]),
            np.concatenate([val[keep], np.concatenate(ev_code).astype(np.float64), np.zeros(2 * nn)]),
        )

    # ---- physics pieces -------------------------------------------------------------------
    def _storage_of(self, job: JobRecord, nodes: IntArray, sto_ix: dict[str, int]) -> int:
        """A job checkpoints to its own storage if it names one, else to its nodes' (most common)."""
        if job.storage:
            return sto_ix.get(job.storage, -1)
        st = self.topology.node_storage[nodes]
        st = st[st >= 0]
        return int(np.bincount(st).argmax()) if st.size else -1

    def _work(self, t: float) -> _Work:
        key = active_jobs(self.topology, t)
        cached = self._work_cache.get(key)
        if cached is not None:
            return cached
        placed = build_workload(self.topology, key)
        work = _Work(np.array(key, dtype=np.int64), placed.node_job, placed.gpu_job, placed.gpu_job >= 0)
        if len(self._work_cache) > 64:
            self._work_cache.clear()
        self._work_cache[key] = work
        return work

    def _cdu_rise(self, racks: IntArray, times: FloatArray, per_unit: float) -> FloatArray:
        out = np.zeros(np.broadcast(racks, times).shape)
        for f in self._by_kind.get("cdu_flow_loss", []):
            hit = self.topology.rack_cdu[racks] == f.local
            if np.any(hit):
                out += np.where(hit, per_unit * f.sev * f.progress(times), 0.0)
        return out

    def _inlet(self, racks: IntArray, times: FloatArray) -> FloatArray:
        """Noise-free rack inlet: supply + approach, the diurnal swing of its row, any CDU fault."""
        diurnal = DIURNAL_AMP_C * np.sin(2 * np.pi * times / DAY_S + self._rack_phase[racks])
        return SUPPLY_C + INLET_OVER_SUPPLY_C + diurnal + self._cdu_rise(racks, times, INLET_RISE_C)

    def _plate(self, racks: IntArray, times: FloatArray) -> FloatArray:
        """Extra GPU heating when the cold plates' coolant flow falls with the CDU's."""
        return self._cdu_rise(racks, times, PLATE_RISE_C)

    @staticmethod
    def _write_growth(f: _Fault) -> float:
        return 1 + (WRITE_TAIL_MS / WRITE_MS - 1) * f.sev

    def _fault_count(self, name: str, f: _Fault, times: FloatArray) -> FloatArray:
        """Extra events a fault has added to counter ``name`` by ``times`` (closed-form integrals)."""
        tau = np.maximum(times - f.onset, 0.0)
        if name == "gpu.ecc_sbe_total" and f.kind == "hbm_ecc":
            r0 = HBM_SBE_START_PER_H / 3600
            r1 = max(HBM_SBE_END_PER_H * f.sev, 2 * HBM_SBE_START_PER_H) / 3600
            k = math.log(r1 / r0) / f.ramp
            inside = np.minimum(tau, f.ramp)
            return r0 * np.expm1(k * inside) / k + r1 * np.maximum(tau - f.ramp, 0.0)
        if name == "gpu.ecc_dbe_total" and f.kind == "hbm_ecc":
            return (tau >= f.ramp).astype(np.float64) * (times >= f.onset)
        if name == "gpu.pcie_replay_total" and f.kind == "pcie_downtrain":
            return PCIE_REPLAY_PER_MIN / 60 * f.sev * tau
        if f.kind == "link_retransmits" and name in ("link.retransmits_total", "link.errors_total"):
            # Retransmits and symbol errors escalate over the first half of the ramp: a marginal
            # link is busy recovering well before the lost bandwidth shows up as latency.
            r0 = RETRANSMITS_PER_S if name == "link.retransmits_total" else LINK_ERRORS_START_PER_S
            growth = max(LINK_RETRANSMITS_END_PER_S / RETRANSMITS_PER_S * f.sev, 2.0)
            rise = f.ramp * LINK_ERRORS_RAMP_SHARE
            k = math.log(growth) / rise
            inside = np.minimum(tau, rise)
            return r0 * np.expm1(k * inside) / k + r0 * growth * np.maximum(tau - rise, 0.0)
        return np.zeros_like(times)

    def _expected(self, name: str, local: IntArray | None, times: FloatArray) -> FloatArray:
        c = self._counters[name]
        phase = c.phase if local is None else c.phase[local]
        origin = c.origin if local is None else c.origin[local]
        lam = c.rate_per_s * (times - origin) + phase
        for f in (f for kind in COUNTER_FAULTS[name] for f in self._by_kind.get(kind, [])):
            if local is None:
                lam[f.local] += self._fault_count(name, f, times[f.local : f.local + 1])[0]
            else:
                sel = local == f.local
                if np.any(sel):
                    lam[sel] += self._fault_count(name, f, times[sel])
        return lam

    def _count(self, name: str, times: FloatArray, eps: FloatArray | None) -> FloatArray:
        """floor(expected + jitter): the jitter stays below one tick's baseline increment, so the
        series is monotone (apart from injected resets) without depending on earlier ticks."""
        c = self._counters[name]
        lam = self._expected(name, None, times)
        if eps is not None and c.rate_per_s > 0:
            lam += eps * (c.rate_per_s * (1 - 2 * JITTER) * self.tick_s)
        value = np.floor(lam)
        if name in RESET_COUNTERS:
            for f in self._by_kind.get("counter_reset", []):
                if times[f.local] >= f.onset:
                    at = np.array([f.local], np.int64)
                    value[f.local] -= np.floor(self._expected(name, at, np.array([f.onset]))[0])
        return value

    # ---- labels ---------------------------------------------------------------------------
    def _label(self, f: _Fault) -> Label:
        affected = affected_entities(f.spec, self.topology, self._jobs, f.onset)
        return Label(f.kind, f.spec.target, f.onset, self._impact(f), f.spec.benign, affected)

    def _impact(self, f: _Fault) -> float:
        """When the fault starts costing something; where a weak fault never does, full development."""
        if f.kind == "hbm_ecc":
            return f.onset + f.ramp
        if f.kind == "link_retransmits":
            need = (LINK_SLOWDOWN_FROM - 1) / (LINK_LATENCY_RISE * f.sev)
            return f.onset + f.ramp * math.sqrt(need) if need <= 1 else f.onset + f.ramp
        if f.kind == "storage_tail":
            growth = self._write_growth(f)
            need = math.log(WRITE_IMPACT_MS / WRITE_MS) / math.log(growth)
            return f.onset + f.ramp * need if need <= 1 else f.onset + f.ramp
        if f.kind == "cdu_flow_loss":
            return self._thermal_impact(f)
        return f.onset

    def _thermal_impact(self, f: _Fault) -> float:
        """First time any GPU under the CDU reaches the thermal-throttle temperature (noise-free)."""
        topo = self.topology
        racks = np.flatnonzero(topo.rack_cdu == f.local)
        nodes = np.flatnonzero(np.isin(topo.node_rack, racks))
        if nodes.size == 0:
            return f.onset + f.ramp
        gpus = np.flatnonzero(np.isin(topo.gpu_node, nodes))
        pos = np.searchsorted(nodes, topo.gpu_node[gpus])
        hottest = np.full(nodes.size, -np.inf)
        np.maximum.at(hottest, pos, self._gpu_offset[gpus])
        fine = f.onset + np.arange(0.0, f.ramp + THERMAL_LAG_S + 60.0, 5.0)
        grid = np.concatenate([fine, fine[-1] + np.arange(60.0, DAY_S, 60.0)])
        busy = np.zeros((nodes.size, grid.size), dtype=bool)
        for j, job_nodes in enumerate(self._job_nodes):
            on = np.isin(nodes, job_nodes)
            if on.any():
                busy |= on[:, None] & ((self._job_start[j] <= grid) & (grid < self._job_end[j]))[None, :]
        rack = topo.node_rack[nodes][:, None]
        lagged = grid[None, :] - THERMAL_LAG_S
        raw = (
            self._inlet(rack, lagged)
            + self._plate(rack, lagged)
            + hottest[:, None]
            + np.where(busy, GPU_OVER_INLET_BUSY_C, GPU_OVER_INLET_IDLE_C)
        )
        hot = (raw >= SW_THERMAL_C).any(axis=0)
        return float(grid[int(np.argmax(hot))]) if hot.any() else f.onset + f.ramp
