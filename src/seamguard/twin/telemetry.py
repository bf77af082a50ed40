"""The twin's telemetry: what an exporter fleet would report of the plant, in the engine's catalog.

Values come from the plant and the jobs, never from fault records: a policy learns of a fault
only the way it would in production. Each sample carries its scrape time (a fixed phase per
entity plus jitter inside the tick), ~``dropout`` of samples are lost, DCGM's blank sentinels
(≥ 2^62) stand in for a few gauges, idle GPUs set the idle bit and busy ones the benign
power-cap and sync-boost bits now and then, and applications raise harmless XIDs (13, 31, 43).
XIDs of failures are never dropped: they arrive through the kernel log, not the scrape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.model.catalog import SignalCatalog, SignalKind, signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.telemetry.batch import TelemetryBatch
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
from seamguard.twin.physics import compute, storage
from seamguard.twin.plant import Plant
from seamguard.twin.scenario import Scenario

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

LINK_DOWN_BURST = 50_000.0  # errors and retransmits a port logs as it goes down


@dataclass(frozen=True)
class Snapshot:
    """The state of everything a scrape reads, at the end of a tick."""

    t: float
    busy: BoolArray  # per GPU
    rank_step_s: FloatArray  # per GPU, NaN outside running jobs (training ranks, serving replicas)
    offline: BoolArray  # per node: in repair, powered off
    silent: BoolArray  # per node: exporter down
    heartbeat_age: FloatArray  # per node: NaN if alive, else seconds since it died
    storage_streams: FloatArray  # per backend: concurrent checkpoint transfers
    job_step_s: FloatArray  # per job, NaN when not running
    job_checkpoint_s: FloatArray  # per job, NaN before its first save
    job_since_s: (
        FloatArray  # per job: age of its last durable copy, as its runtime reports it; NaN when not running
    )
    job_failures: FloatArray  # per job: its failed attempts, as its runtime counts them; NaN when not running
    xid_gpu: IntArray
    xid_code: IntArray
    xid_t: FloatArray


@dataclass(frozen=True)
class _Scope:
    nodes: IntArray
    gpus: IntArray
    racks: IntArray
    cdus: IntArray
    leaves: IntArray


class Emitter:
    def __init__(self, scenario: Scenario, plant: Plant, topology_ids: dict[EntityKind, IntArray],
                 gpu_node: IntArray, node_rack: IntArray, node_leaf: IntArray, rack_cdu: IntArray,
                 seed: int) -> None:  # fmt: skip
        self.scenario = scenario
        self.plant = plant
        self.members = topology_ids
        self.gpu_node, self.node_rack, self.node_leaf, self.rack_cdu = (
            gpu_node,
            node_rack,
            node_leaf,
            rack_cdu,
        )
        self.catalog: SignalCatalog = signal_catalog()
        self._sig = {s.name: s.index for s in self.catalog.signals}
        self._gauge = {s.name: s.kind is SignalKind.GAUGE for s in self.catalog.signals}
        rng = np.random.default_rng([seed, 2, 7])
        tick = scenario.tick_s
        self.phase = {
            kind: rng.uniform(PHASE_MIN, PHASE_MAX, self.members[kind].size) * tick
            for kind in (EntityKind.NODE, EntityKind.RACK, EntityKind.CDU, EntityKind.SWITCH, EntityKind.STORAGE,
                         EntityKind.JOB)
        }  # fmt: skip
        self._scopes: dict[int, _Scope] = {}

    def scope(self, key: int, nodes: IntArray) -> _Scope:
        cached = self._scopes.get(key)
        if cached is not None:
            return cached
        gpus = np.flatnonzero(np.isin(self.gpu_node, nodes)).astype(np.int64)
        racks = np.unique(self.node_rack[nodes])
        sc = _Scope(nodes, gpus, racks, np.unique(self.rack_cdu[racks]), np.unique(self.node_leaf[nodes]))
        self._scopes[key] = sc
        return sc

    def emit(self, snap: Snapshot, sc: _Scope, jobs: BoolArray, rng: np.random.Generator) -> TelemetryBatch:
        """Every sample of the tick ending at ``snap.t`` for the nodes of ``sc`` and the jobs in ``jobs``."""
        p, pl, t, tick = self.scenario.physics, self.plant, snap.t, self.scenario.tick_s
        m = self.members
        nodes, gpus = sc.nodes, sc.gpus
        ng, nn = gpus.size, nodes.size
        blocks = Blocks(m, self.catalog)
        add = blocks.add

        jit = rng.random(nn) * (JITTER * tick)
        ts_node = t - self.phase[EntityKind.NODE][nodes] - jit
        node_pos = np.searchsorted(nodes, self.gpu_node[gpus])
        ts_gpu = ts_node[node_pos]
        offline = snap.offline[nodes]
        silent = snap.silent[nodes]
        reporting = ~offline & ~silent
        gpu_present = reporting[node_pos] & ~pl.gpu_dead[gpus]  # a dead GPU answers nothing
        busy = snap.busy[gpus]
        z = rng.standard_normal((6, ng))
        temp = pl.gpu_temp[gpus]
        bits = pl.bits[gpus] | np.where(busy, 0, compute.BIT_IDLE)
        u = rng.random(ng)
        c = p.compute
        bits |= np.where(busy & (u < c.power_cap_probability), compute.BIT_POWER_CAP, 0)
        bits |= np.where(busy & (u >= c.power_cap_probability) & (u < c.power_cap_probability + c.sync_boost_probability),
                         compute.BIT_SYNC_BOOST, 0)  # fmt: skip
        gpu_values = {
            "gpu.temp_c": temp + GPU_TEMP_NOISE_C * z[0],
            "gpu.mem_temp_c": temp + p.cooling.mem_over_gpu_c + GPU_TEMP_NOISE_C * z[1],
            "gpu.sm_clock_mhz": c.sm_clock_mhz * pl.clock[gpus] + CLOCK_NOISE_MHZ * z[2],
            "gpu.power_w": pl.gpu_w[gpus] + np.where(busy, 10.0, 3.0) * z[3],
            # Utilisation is the share of each step the GPU computes (``pl.load``: less while it waits for input).
            "gpu.util_pct": np.where(busy, np.minimum(c.util_busy_pct + z[4], 100.0) * pl.load[gpus], 0.0),
            "gpu.throttle_reasons": bits.astype(np.float64),
            "gpu.ecc_sbe_total": pl.sbe[gpus],
            "gpu.ecc_dbe_total": pl.dbe[gpus],
            "gpu.nvlink_errors_total": pl.nvlink[gpus],
            "gpu.pcie_replay_total": pl.pcie[gpus],
            "gpu.row_remap_pending": pl.remap[gpus].astype(np.float64),
        }
        for name, val in gpu_values.items():
            add(EntityKind.GPU, gpus, name, ts_gpu, val, gpu_present)
        step = snap.rank_step_s[gpus]
        stepping = gpu_present & np.isfinite(step)
        add(EntityKind.GPU, gpus[stepping], "gpu.step_time_s", ts_gpu[stepping],
            step[stepping] * (1 + RANK_NOISE * z[5][stepping]))  # fmt: skip

        age = snap.heartbeat_age[nodes]
        heartbeat = np.where(np.isfinite(age), age, rng.random(nn) * HEARTBEAT_MAX_S)
        add(
            EntityKind.NODE,
            nodes,
            "node.heartbeat_age_s",
            ts_node,
            heartbeat,
            ~offline & (~silent | np.isfinite(age)),
        )
        link_up = reporting & ~pl.link_down[nodes]
        f = p.fabric
        add(EntityKind.LINK, nodes, "link.latency_us", ts_node,
            f.latency_us * pl.link_latency[nodes] * (1 + f.latency_noise * rng.standard_normal(nn)), link_up)  # fmt: skip
        add(EntityKind.LINK, nodes, "link.retransmits_total", ts_node, pl.retransmits[nodes], reporting)
        add(EntityKind.LINK, nodes, "link.errors_total", ts_node, pl.link_errors[nodes], reporting)

        racks, cdus, leaves = sc.racks, sc.cdus, sc.leaves
        ts_rack = t - self.phase[EntityKind.RACK][racks] - rng.random(racks.size) * JITTER * tick
        add(
            EntityKind.RACK,
            racks,
            "rack.inlet_temp_c",
            ts_rack,
            pl.inlet[racks] + INLET_NOISE_C * rng.standard_normal(racks.size),
        )
        add(
            EntityKind.RACK,
            racks,
            "rack.power_kw",
            ts_rack,
            pl.rack_kw[racks] * (1 + 0.005 * rng.standard_normal(racks.size)),
        )
        ts_cdu = t - self.phase[EntityKind.CDU][cdus] - rng.random(cdus.size) * JITTER * tick
        zc = rng.standard_normal((4, cdus.size))
        cool = p.cooling
        add(
            EntityKind.CDU,
            cdus,
            "cdu.flow_lpm",
            ts_cdu,
            cool.nominal_flow_lpm * pl.cdu_flow[cdus] * (1 + FACILITY_NOISE * zc[0]),
        )
        add(
            EntityKind.CDU,
            cdus,
            "cdu.pressure_kpa",
            ts_cdu,
            cool.nominal_pressure_kpa * pl.cdu_flow[cdus] * (1 + FACILITY_NOISE * zc[1]),
        )
        add(
            EntityKind.CDU,
            cdus,
            "cdu.supply_temp_c",
            ts_cdu,
            pl.cdu_supply[cdus] * (1 + FACILITY_NOISE * zc[2]),
        )
        add(
            EntityKind.CDU,
            cdus,
            "cdu.return_temp_c",
            ts_cdu,
            pl.cdu_return[cdus] + FACILITY_NOISE * 40.0 * zc[3],
        )
        ts_leaf = t - self.phase[EntityKind.SWITCH][leaves] - rng.random(leaves.size) * JITTER * tick
        add(EntityKind.SWITCH, leaves, "switch.buffer_util_pct", ts_leaf,
            np.clip(f.switch_buffer_pct + pl.switch_buffer[leaves] + 2.0 * rng.standard_normal(leaves.size), 0.0, 100.0))  # fmt: skip

        ns = m[EntityKind.STORAGE].size
        sto = np.arange(ns, dtype=np.int64)
        ts_sto = t - self.phase[EntityKind.STORAGE] - rng.random(ns) * JITTER * tick
        sp = p.storage
        streams = snap.storage_streams
        zs = rng.standard_normal((3, ns))
        queue = storage.queue_latency_factor(sp, streams)
        add(EntityKind.STORAGE, sto, "storage.write_latency_ms", ts_sto,
            sp.write_latency_ms * pl.storage_write * queue * (1 + sp.latency_noise * zs[0]))  # fmt: skip
        add(EntityKind.STORAGE, sto, "storage.read_latency_ms", ts_sto,
            sp.read_latency_ms * pl.storage_read * queue * (1 + sp.latency_noise * zs[1]))  # fmt: skip
        add(EntityKind.STORAGE, sto, "storage.throughput_gbps", ts_sto,
            sp.write_gbps * pl.storage_throughput * storage.congestion(sp, streams + 1.0) * (1 + sp.throughput_noise * zs[2]))  # fmt: skip

        jobs_idx = np.flatnonzero(jobs & np.isfinite(snap.job_step_s)).astype(np.int64)
        ts_job = t - self.phase[EntityKind.JOB][jobs_idx] - rng.random(jobs_idx.size) * JITTER * tick
        add(EntityKind.JOB, jobs_idx, "job.step_time_s", ts_job,
            snap.job_step_s[jobs_idx] * (1 + JOB_NOISE * rng.standard_normal(jobs_idx.size)))  # fmt: skip
        saved = jobs_idx[np.isfinite(snap.job_checkpoint_s[jobs_idx])]
        add(EntityKind.JOB, saved, "job.checkpoint_duration_s", ts_job[np.isin(jobs_idx, saved)],
            snap.job_checkpoint_s[saved])  # fmt: skip
        # The runtime's own clock: the age at the sample's time (the engine ages it to the tick).
        aged = np.isfinite(snap.job_since_s[jobs_idx])
        add(EntityKind.JOB, jobs_idx[aged], "job.since_checkpoint_s", ts_job[aged],
            snap.job_since_s[jobs_idx[aged]] - (t - ts_job[aged]))  # fmt: skip
        counted = np.isfinite(snap.job_failures[jobs_idx])
        add(EntityKind.JOB, jobs_idx[counted], "job.failures_total", ts_job[counted],
            snap.job_failures[jobs_idx[counted]])  # fmt: skip

        ent, sig, ts, val = blocks.observe(
            rng, self.scenario.observation.dropout, self.scenario.observation.sentinel_rate
        )
        xg, xc, xt = self._xids(snap, sc, busy, gpu_present, rng)
        return TelemetryBatch(
            np.concatenate([ent, m[EntityKind.GPU][xg]]),
            np.concatenate([sig, np.full(xg.size, self._sig["gpu.xid"], np.int64)]),
            np.concatenate([ts, xt]),
            np.concatenate([val, xc.astype(np.float64)]),
        )

    def _xids(self, snap: Snapshot, sc: _Scope, busy: BoolArray, present: BoolArray,
              rng: np.random.Generator) -> tuple[IntArray, IntArray, FloatArray]:  # fmt: skip
        app, app_code, app_t = app_xids(rng, busy & present, self.scenario.tick_s, snap.t)
        in_scope = np.isin(snap.xid_gpu, sc.gpus) if snap.xid_gpu.size else np.zeros(0, bool)
        g = np.concatenate([sc.gpus[app], snap.xid_gpu[in_scope]]).astype(np.int64)
        code = np.concatenate([app_code, snap.xid_code[in_scope]]).astype(np.int64)
        when = np.concatenate([app_t, snap.xid_t[in_scope]])
        return g, code, when
