"""Synthetic, labelled fleet telemetry: a physically plausible baseline plus injected faults.

The labelled detection suite's generator. Its faults are the twin's (``twin.faults``: the one
table of kinds, the ``Fault`` record), each kind realised here in closed form with the effect
sizes the twin's physics uses where they coincide; its ground truth uses the one scope function
(``twin.scope``) and its observation constants are the twin emitter's (``twin.telemetry``).

Every value is a closed-form function of (seed, time): ``batch(t)`` draws its noise from
``default_rng([seed, tick_number])`` and evaluates fault curves at the samples' timestamps, so
a tick's batch does not depend on the ticks before it (counters: ``labelled_counters``).
Everything is vectorised over the entities of a kind; Python only loops over the (few) faults.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.model.catalog import SignalCatalog, SignalKind, signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.model.states import SYNCHRONOUS_CLASSES
from seamguard.model.topology import Topology
from seamguard.model.workload import active_jobs, build_workload
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.twin import labelled_physics as lp
from seamguard.twin.effects import (
    FAILING_GPU_SLOWDOWN,
    HW_THERMAL_CLOCK,
    HW_THERMAL_JUMP_C,
    KV_PATH_BUFFER_RISE_PCT,
    PCIE_SLOWDOWN,
    SLOW_GPU,
    SUPPLY_RISE_C,
    SWITCH_BUFFER_RISE_PCT,
)
from seamguard.twin.faults import Fault, HardEffect
from seamguard.twin.labelled_counters import Counter, count
from seamguard.twin.labelled_physics import (
    gray,
    input_slowdown,
    power_brake,
    stopped_jobs,
    storage_factors,
    storage_of,
)
from seamguard.twin.labelled_truth import impact
from seamguard.twin.observe import (
    CLOCK_NOISE_MHZ,
    FACILITY_NOISE,
    GPU_TEMP_NOISE_C,
    HEARTBEAT_MAX_S,
    INLET_NOISE_C,
    JITTER,
    JOB_NOISE,
    PHASE_MAX,
    PHASE_MIN,
    RANK_NOISE,
    Blocks,
    app_xids,
)
from seamguard.twin.scope import scope_of

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Truth = tuple[Fault, frozenset[str], float]  # a fault, its scope and its impact (unix seconds)


@dataclass(frozen=True)
class _Work:
    """Placement at one instant (model.workload), with the active jobs as an index array."""

    active: IntArray
    node_job: IntArray
    gpu_job: IntArray
    busy: BoolArray


class SyntheticFleet:
    """Telemetry of ``topology`` with ``faults`` injected; see the module docstring."""

    def __init__(
        self,
        topology: Topology,
        faults: Sequence[Fault],
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
        for f in faults:  # a fault built for another topology would inject into the wrong entity
            gidx = topology.lookup(f.target)
            if gidx is None or int(topology.local[gidx]) != f.local:
                raise ValueError(f"fault {f.kind}: target {f.target!r} is not entity {f.local} here")
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
        self.job_nodes = [
            np.array([node_ix[n] for n in j.nodes if n in node_ix], np.int64) for j in self._jobs
        ]
        self._job_sync = np.array([j.job_class in SYNCHRONOUS_CLASSES for j in self._jobs], dtype=bool)
        self.job_start = np.array([j.start for j in self._jobs], dtype=np.float64)
        self.job_end = np.array([j.end for j in self._jobs], dtype=np.float64)
        sto_ix = {s: i for i, s in enumerate(topo.names[EntityKind.STORAGE])}
        self._job_storage = np.array(
            [storage_of(topo, j, nodes, sto_ix) for j, nodes in zip(self._jobs, self.job_nodes, strict=True)],
            dtype=np.int64,
        )
        self._work_cache: dict[tuple[int, ...], _Work] = {}

        # Static per-entity properties: a stream of its own, never shared with the ticks.
        rng = np.random.default_rng([seed, lp.STATIC_STREAM, 0])
        ng, nn = self.n_gpu, self.n_node
        self.gpu_offset = rng.normal(0.0, lp.GPU_OFFSET_SD_C, ng)
        self._speed = np.clip(rng.normal(1.0, lp.SPEED_SD, ng), 1 - lp.SPEED_CLIP, 1 + lp.SPEED_CLIP)
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
        gpu_origin = self.start - rng.uniform(1.0, 30.0, ng) * lp.DAY_S
        link_origin = self.start - rng.uniform(1.0, 30.0, nn) * lp.DAY_S
        self._counters: dict[str, Counter] = {
            "gpu.ecc_sbe_total": Counter(lp.SBE_PER_H / 3600, rng.random(ng), gpu_origin),
            "gpu.ecc_dbe_total": Counter(0.0, rng.random(ng), gpu_origin),
            "gpu.nvlink_errors_total": Counter(lp.NVLINK_PER_H / 3600, rng.random(ng), gpu_origin),
            "gpu.pcie_replay_total": Counter(lp.PCIE_PER_H / 3600, rng.random(ng), gpu_origin),
            "link.retransmits_total": Counter(lp.RETRANSMITS_PER_S, rng.random(nn), link_origin),
            "link.errors_total": Counter(lp.LINK_ERRORS_PER_S, rng.random(nn), link_origin),
        }

        self._faults = tuple(faults)
        self._by_kind: dict[str, list[Fault]] = {}
        for f in self._faults:
            self._by_kind.setdefault(f.kind, []).append(f)

        # Output layout of the per-GPU block (11 signals x ng), built once.
        self._gpu_g = topo.members[EntityKind.GPU]
        self._gpu_block_ent = np.tile(self._gpu_g, len(lp.GPU_SIGNALS))
        self._gpu_block_sig = np.repeat(np.array([self._sig[s] for s in lp.GPU_SIGNALS], np.int64), ng)
        gauge = np.array([self.catalog[s].kind is SignalKind.GAUGE for s in lp.GPU_SIGNALS])
        self._gpu_block_gauge = np.repeat(gauge, ng)
        self._hard: dict[HardEffect, list[Fault]] = {}
        for f in self._faults:
            if f.hard:
                self._hard.setdefault(f.spec.hard, []).append(f)
        self._truth = tuple((f, self.scope(f), impact(self, f)) for f in self._faults)

    # ---- public ---------------------------------------------------------------------------
    @property
    def faults(self) -> tuple[Fault, ...]:
        return self._faults

    def truth(self) -> tuple[Truth, ...]:
        """Every injected fault with its scope (what it may push out of healthy) and impact."""
        return self._truth

    def scope(self, f: Fault) -> frozenset[str]:
        """The one scope function (``twin.scope``), with the jobs still running at the onset."""
        none = np.full(len(self._jobs), -1, dtype=np.int64)
        return scope_of(self.topology, f, self.job_nodes, self._job_storage, none, self.job_end > f.onset)

    def tick_number(self, t: float) -> int:
        return math.floor((t - self.start) / self.tick_s + 1e-6)

    def batch(self, t: float) -> TelemetryBatch:
        """All samples of the tick ending at ``t`` (timestamps in (t - tick_s, t])."""
        k = self.tick_number(t)
        rng = np.random.default_rng([self.seed, k] if k >= 0 else [self.seed, lp.STATIC_STREAM, 1, -k])
        topo, tick = self.topology, self.tick_s
        ng, nn, nr, nc = self.n_gpu, self.n_node, self.n_rack, self.n_cdu
        nl, ns, nj = self.n_leaf, self.n_sto, len(self._jobs)
        work = self._work(t)
        crashed, hung = stopped_jobs(self._hard, t, nj)
        on_job = work.gpu_job >= 0
        busy = work.busy & ~(on_job & crashed[np.maximum(work.gpu_job, 0)])

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
        supply = np.full(nc, lp.SUPPLY_C)
        for f in self._by_kind.get("cdu_flow_loss", []):
            p = float(gray(f, ts_cdu[f.local : f.local + 1])[0])
            flow_frac[f.local] *= max(1.0 - lp.FLOW_LOSS * f.severity * p, 0.05)
            supply[f.local] += lp.FLOW_LOSS_SUPPLY_RISE_C * f.severity * p
        for f in self._by_kind.get("supply_temp_rise", []):
            supply[f.local] += SUPPLY_RISE_C * f.severity * float(gray(f, ts_cdu[f.local : f.local + 1])[0])
        cdu_flow = lp.FLOW_LPM * flow_frac * (1 + FACILITY_NOISE * z[0])
        cdu_pressure = lp.PRESSURE_KPA * flow_frac * (1 + FACILITY_NOISE * z[1])
        cdu_supply = supply * (1 + FACILITY_NOISE * z[2])
        cdu_return = cdu_supply + lp.RETURN_DELTA_C / flow_frac + FACILITY_NOISE * 40.0 * z[3]
        zr = rng.standard_normal((2, nr))
        inlet = self.inlet(np.arange(nr), ts_rack) + INLET_NOISE_C * zr[0]

        # ---- GPUs (a starved job's GPUs compute for ``duty`` of each step and idle the rest)
        zg = rng.standard_normal((6, ng))
        node_heat = self.inlet(topo.node_rack, ts_node - lp.THERMAL_LAG_S) + self.plate(
            topo.node_rack, ts_node - lp.THERMAL_LAG_S
        )
        step_mult = input_slowdown(self._by_kind, work.gpu_job, self._job_storage, ts_gpu)
        duty = 1.0 / step_mult
        rise = lp.GPU_OVER_INLET_IDLE_C + (lp.GPU_OVER_INLET_BUSY_C - lp.GPU_OVER_INLET_IDLE_C) * duty
        raw = node_heat[topo.gpu_node] + np.where(busy, rise, lp.GPU_OVER_INLET_IDLE_C) + self.gpu_offset
        clock_factor = np.ones(ng)
        speed = self._speed.copy()
        bits = np.where(busy, 0, 0x1).astype(np.int64)
        for f in self._by_kind.get("hw_thermal", []):
            if ts_gpu[f.local] >= f.onset:
                raw[f.local] += HW_THERMAL_JUMP_C * f.severity
                clock_factor[f.local] *= 1 - (1 - HW_THERMAL_CLOCK) * min(f.severity, 1.0)
                step_mult[f.local] *= 1 + lp.HW_THERMAL_SLOWDOWN * f.severity
                bits[f.local] |= 0x40
        for f in self._by_kind.get("pcie_downtrain", []):
            if ts_gpu[f.local] >= f.onset:
                step_mult[f.local] *= 1 + PCIE_SLOWDOWN * f.severity
        for f in self._by_kind.get("slow_gpu", []):
            if ts_gpu[f.local] >= f.onset:
                speed[f.local] = 1 + SLOW_GPU * f.severity
        for f in self._by_kind.get("thermal_interface", []):
            raw[f.local] += HW_THERMAL_JUMP_C * f.severity * float(gray(f, ts_gpu[f.local : f.local + 1])[0])
        for f in self._by_kind.get("gpu_hard", []):  # a GPU on its way off the bus slows first
            p = float(gray(f, ts_gpu[f.local : f.local + 1])[0])
            step_mult[f.local] *= 1 + FAILING_GPU_SLOWDOWN * f.severity * p
        power_brake(
            self.topology, self._by_kind.get("psu_loss", []), busy, ts_rack, clock_factor, step_mult, bits
        )
        sw_thermal = raw >= lp.SW_THERMAL_C
        thermal = np.where(
            sw_thermal, np.clip(1 - lp.THERMAL_CLOCK_DROP_PER_C * (raw - lp.SW_THERMAL_C + 1), 0.6, 1), 1
        )
        clock_factor *= thermal
        step_mult /= thermal
        u = rng.random(ng)
        power_cap = busy & (u < lp.P_POWER_CAP)
        bits |= np.where(power_cap, 0x4, 0) | np.where(
            busy & (u >= lp.P_POWER_CAP) & (u < lp.P_POWER_CAP + lp.P_SYNC_BOOST), 0x10, 0
        )
        bits |= np.where(sw_thermal, 0x20, 0) | np.where(raw >= lp.HW_THERMAL_C, 0x40, 0)
        clock_factor *= np.where(power_cap, 0.985, 1.0)
        gpu_temp = raw + GPU_TEMP_NOISE_C * zg[0]
        mem_temp = raw + lp.MEM_OVER_GPU_C + GPU_TEMP_NOISE_C * zg[1]
        clock = lp.SM_CLOCK_MHZ * clock_factor + CLOCK_NOISE_MHZ * zg[2]
        busy_w = lp.waiting_power(lp.POWER_BUSY_W * clock_factor, duty)
        power = np.where(busy, busy_w + 10.0 * zg[3], lp.POWER_IDLE_W + 3.0 * zg[3])
        util = np.where(busy, np.minimum(lp.UTIL_BUSY_PCT + zg[4], 100.0) * duty, 0.0)
        rank_time = lp.STEP_S * speed * step_mult * (1 + RANK_NOISE * zg[5])
        eps = rng.random((3, ng))
        sbe = count(
            self._counters["gpu.ecc_sbe_total"],
            "gpu.ecc_sbe_total",
            self._by_kind,
            self.tick_s,
            ts_gpu,
            eps[0],
        )
        dbe = count(
            self._counters["gpu.ecc_dbe_total"], "gpu.ecc_dbe_total", self._by_kind, self.tick_s, ts_gpu, None
        )
        nvlink = count(
            self._counters["gpu.nvlink_errors_total"],
            "gpu.nvlink_errors_total",
            self._by_kind,
            self.tick_s,
            ts_gpu,
            eps[1],
        )
        pcie = count(
            self._counters["gpu.pcie_replay_total"],
            "gpu.pcie_replay_total",
            self._by_kind,
            self.tick_s,
            ts_gpu,
            eps[2],
        )
        remap = np.zeros(ng)
        for f in self._by_kind.get("hbm_ecc", []):
            if ts_gpu[f.local] >= f.onset + f.ramp / 2:
                remap[f.local] = 1.0
        dead = np.zeros(ng, dtype=bool)
        for f in self._hard.get(HardEffect.GPU, []):  # off the bus at the hard failure (its XID below)
            dead[f.local] |= bool(ts_gpu[f.local] >= f.hard_at)
        silent = np.zeros(nn, dtype=bool)
        for f in self._by_kind.get("exporter_silent", []):
            silent[f.local] |= bool(f.onset <= ts_node[f.local] < f.onset + f.ramp)
        down = np.full(nn, np.nan)  # seconds since a host died
        for f in self._hard.get(HardEffect.NODE, []):  # down from its hard failure (a reboot: until back)
            if f.hard_at <= ts_node[f.local] < f.back_at:
                down[f.local] = ts_node[f.local] - f.hard_at
        host_down = np.isfinite(down)
        silent |= host_down
        gpu_present = ~dead & ~silent[topo.gpu_node]

        # ---- nodes and links
        heartbeat = np.where(host_down, down, rng.random(nn) * HEARTBEAT_MAX_S)
        zl = rng.standard_normal(nn)
        eps_l = rng.random((2, nn))
        lat_factor = np.ones(nn)
        for f in self._by_kind.get("link_gray", []):
            p = float(gray(f, ts_node[f.local : f.local + 1])[0])
            lat_factor[f.local] *= 1 + lp.LINK_LATENCY_RISE * f.severity * p * p
        leaf_extra = np.zeros(nl)
        for f in self._by_kind.get("switch_congestion", []):
            p = float(gray(f, ts_leaf[f.local : f.local + 1])[0])
            lat_factor[topo.node_leaf == f.local] *= 1 + lp.CONGESTION_LATENCY_RISE * f.severity * p
            leaf_extra[f.local] += SWITCH_BUFFER_RISE_PCT * f.severity * p
        for f in self._by_kind.get("kv_path_degraded", []):  # only the leaf's uplink queues show it
            p = float(gray(f, ts_leaf[f.local : f.local + 1])[0])
            leaf_extra[f.local] += KV_PATH_BUFFER_RISE_PCT * f.severity * p
        link_up = ~silent
        for f in self._hard.get(HardEffect.LINK, []):
            link_up[f.local] &= bool(ts_node[f.local] < f.hard_at)
        latency = lp.LINK_LATENCY_US * lat_factor * (1 + lp.LINK_LATENCY_NOISE * zl)
        retrans = count(
            self._counters["link.retransmits_total"],
            "link.retransmits_total",
            self._by_kind,
            self.tick_s,
            ts_node,
            eps_l[0],
        )
        errors = count(
            self._counters["link.errors_total"],
            "link.errors_total",
            self._by_kind,
            self.tick_s,
            ts_node,
            eps_l[1],
        )
        comm = 1 + lp.LINK_JOB_GAIN * np.maximum(lat_factor - lp.LINK_SLOWDOWN_FROM, 0.0)

        # ---- switches, storage
        buffer = np.clip(lp.SWITCH_BUFFER_PCT + 2.0 * rng.standard_normal(nl) + leaf_extra, 0.0, 100.0)
        zs = rng.standard_normal((3, ns))
        wfac, rfac, tfac = storage_factors(self._by_kind, ts_sto, ns)
        write = lp.WRITE_MS * wfac * (1 + lp.STORAGE_NOISE * zs[0])
        read = lp.READ_MS * rfac * (1 + lp.STORAGE_NOISE * zs[1])
        throughput = lp.THROUGHPUT_GBPS * tfac * (1 + lp.THROUGHPUT_NOISE * zs[2])

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
        ckpt = lp.CHECKPOINT_S * job_wfac**lp.CHECKPOINT_LATENCY_EXP * (1 + lp.CHECKPOINT_NOISE * zj[1])
        since_ckpt = np.mod(t + np.arange(nj) * 317.0, lp.CHECKPOINT_EVERY_S)  # fixed per-job phases
        jobs_on = work.active[(n_ranks[work.active] > 0) & ~hung[work.active]]

        rack_power = (
            np.bincount(topo.node_rack[topo.gpu_node], weights=np.where(dead, 0.0, power), minlength=nr)
            / 1000.0
            + lp.NODE_OVERHEAD_KW * np.bincount(topo.node_rack, minlength=nr)
        ) * (1 + 0.005 * zr[1])

        # ---- XID events (never dropped: they arrive through the kernel log, not the scrape)
        app_idx, app_code, app_t = app_xids(rng, busy & gpu_present, tick, t)
        ev_local, ev_code, ev_ts = [app_idx], [app_code], [app_t]
        for f in self._hard.get(HardEffect.GPU, []):
            if f.xid is not None and t - tick < f.hard_at <= t:
                ev_local.append(np.array([f.local], np.int64))
                ev_code.append(np.array([f.xid], np.int64))
                ev_ts.append(np.array([f.hard_at]))

        # ---- assemble
        gpu_vals = np.concatenate(
            [gpu_temp, mem_temp, clock, power, util, bits.astype(np.float64), sbe, dbe, nvlink, pcie, remap]
        )
        n_gpu_sig = len(lp.GPU_SIGNALS)
        blocks = Blocks(topo.members, self.catalog)
        blocks.rows.append((self._gpu_block_ent, self._gpu_block_sig, np.tile(ts_gpu, n_gpu_sig), gpu_vals,
                            np.tile(gpu_present, n_gpu_sig), self._gpu_block_gauge))  # fmt: skip
        add = blocks.add

        stepping = np.flatnonzero(busy & gpu_present & ~(on_job & hung[np.maximum(work.gpu_job, 0)]))
        add(EntityKind.GPU, stepping, "gpu.step_time_s", ts_gpu[stepping], rank_time[stepping])
        add(EntityKind.NODE, None, "node.heartbeat_age_s", ts_node, heartbeat, ~silent | host_down)
        add(EntityKind.RACK, None, "rack.inlet_temp_c", ts_rack, inlet)
        add(EntityKind.RACK, None, "rack.power_kw", ts_rack, rack_power)
        for name, val in (("cdu.flow_lpm", cdu_flow), ("cdu.supply_temp_c", cdu_supply),
                          ("cdu.return_temp_c", cdu_return), ("cdu.pressure_kpa", cdu_pressure)):  # fmt: skip
            add(EntityKind.CDU, None, name, ts_cdu, val)
        add(EntityKind.LINK, None, "link.latency_us", ts_node, latency, link_up)  # a down port reads nothing
        for name, val in (("link.retransmits_total", retrans), ("link.errors_total", errors)):
            add(EntityKind.LINK, None, name, ts_node, val, ~silent)
        add(EntityKind.SWITCH, None, "switch.buffer_util_pct", ts_leaf, buffer)
        for name, val in (("storage.write_latency_ms", write), ("storage.read_latency_ms", read),
                          ("storage.throughput_gbps", throughput)):  # fmt: skip
            add(EntityKind.STORAGE, None, name, ts_sto, val)
        # A job here never runs again after its crash or hang (the suite labels detection, not
        # recovery): the failed attempts its runtime reports while it runs stay 0.
        for name, val in (("job.step_time_s", job_step), ("job.checkpoint_duration_s", ckpt),
                          ("job.since_checkpoint_s", since_ckpt), ("job.failures_total", np.zeros(nj))):  # fmt: skip
            blocks.add_ids(self._job_gidx[jobs_on], name, ts_job[jobs_on], val[jobs_on])
        ent, sig, ts, val = blocks.observe(rng, self.dropout, self.sentinel_rate)
        xid_local = np.concatenate(ev_local)
        xid_sig = self._sig["gpu.xid"]
        # The scheduler's view comes by its own path, after the exporters' dropouts: only a host
        # that died stops answering (a GPU off the bus leaves the node up).
        nodes = topo.members[EntityKind.NODE]
        sched_sig = np.repeat([self._sig["node.slurm_down"], self._sig["node.slurm_not_responding"]], nn)
        return TelemetryBatch(
            np.concatenate([ent, self._gpu_g[xid_local], np.tile(nodes, 2)]),
            np.concatenate([sig, np.full(xid_local.size, xid_sig, np.int64), sched_sig]),
            np.concatenate([ts, *ev_ts, np.tile(ts_node, 2)]),
            np.concatenate([val, np.concatenate(ev_code).astype(np.float64), np.zeros(nn), host_down.astype(np.float64)]),
        )  # fmt: skip

    # ---- physics pieces -------------------------------------------------------------------
    def _work(self, t: float) -> _Work:
        key = active_jobs(self.topology, t)
        if key not in self._work_cache:
            if len(self._work_cache) > 64:
                self._work_cache.clear()
            placed = build_workload(self.topology, key)
            self._work_cache[key] = _Work(
                np.array(key, np.int64), placed.node_job, placed.gpu_job, placed.gpu_job >= 0
            )
        return self._work_cache[key]

    def _cdu_rise(self, racks: IntArray, times: FloatArray, per_unit: dict[str, float]) -> FloatArray:
        """Noise-free warming of ``racks`` by the CDU faults, ``per_unit`` °C per kind at severity 1."""
        out = np.zeros(np.broadcast(racks, times).shape)
        for kind, unit in per_unit.items():
            for f in self._by_kind.get(kind, []):
                hit = self.topology.rack_cdu[racks] == f.local
                if np.any(hit):
                    out += np.where(hit, unit * f.severity * gray(f, times), 0.0)
        return out

    def inlet(self, racks: IntArray, times: FloatArray) -> FloatArray:
        """Noise-free rack inlet: supply + approach, the diurnal swing of its row, any CDU fault."""
        diurnal = lp.DIURNAL_AMP_C * np.sin(2 * np.pi * times / lp.DAY_S + self._rack_phase[racks])
        rise = self._cdu_rise(
            racks, times, {"cdu_flow_loss": lp.INLET_RISE_C, "supply_temp_rise": SUPPLY_RISE_C}
        )
        return lp.SUPPLY_C + lp.INLET_OVER_SUPPLY_C + diurnal + rise

    def plate(self, racks: IntArray, times: FloatArray) -> FloatArray:
        """Extra GPU heating when the cold plates' coolant flow falls with the CDU's."""
        return self._cdu_rise(racks, times, {"cdu_flow_loss": lp.PLATE_RISE_C})
