"""The noise-free state of the plant at any (entity, time): the couplings between signals.

GPU temperature = local coolant + thermal resistance x power + model and part offsets; the
local coolant is the CDU supply plus half the loop's rise, and the rise is heat / flow
(return - supply = Q / (rho c F)). A pump's flow and head fall together along the system
curve; lower flow also worsens every cold plate's film coefficient. Storage latency follows
load over capacity, and clients with bounded concurrency see throughput fall as latency
rises (Little's law). The noise model is applied on top by generator.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.fieldsim.effects import Effects
from seamguard.fieldsim.fleet import Fleet
from seamguard.fieldsim.hardware import H100, L40S
from seamguard.fieldsim.noise import diurnal
from seamguard.fieldsim.workload import Workload
from seamguard.model.entities import EntityKind

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
KJ_PER_L_K = 4.18 / 60.0  # water: kW per (L/min x K)
SW_THERMAL_BIT, HW_THERMAL_BIT = 0x20, 0x40
SUPPLY_SETPOINT_C = 30.0
HEAT_GRID_S = 15.0


def _pick(is_h100: BoolArray, h100: float, l40s: float) -> FloatArray:
    return np.where(is_h100, h100, l40s)


@dataclass(frozen=True)
class Plant:
    """Per-part constants of one seed's fleet: manufacturing spread, site offsets, baselines."""

    gpu_temp_offset: FloatArray
    gpu_mem_offset: FloatArray
    gpu_power_eff: FloatArray
    rack_offset: FloatArray  # rack inlet above CDU supply
    cdu_flow0: FloatArray  # nominal flow, L/min
    cdu_head0: FloatArray  # nominal differential pressure, kPa
    cdu_supply0: FloatArray
    link_base_us: FloatArray
    link_retx_base: FloatArray  # retransmits/s of a busy healthy link
    storage_capacity: FloatArray  # GB/s
    storage_read_gbps: FloatArray  # data loading, a steady demand
    diurnal_phase_s: float

    @staticmethod
    def draw(fleet: Fleet, rng: np.random.Generator, capacity_gbps: FloatArray) -> Plant:
        topo = fleet.topology
        n_gpu, n_rack = fleet.n_gpus, topo.count(EntityKind.RACK)
        n_cdu, n_link = topo.count(EntityKind.CDU), topo.count(EntityKind.LINK)
        cdu_h100 = np.zeros(n_cdu, dtype=bool)
        cdu_h100[topo.rack_cdu[topo.node_rack[fleet.node_is_h100]]] = True
        return Plant(
            gpu_temp_offset=rng.normal(0.0, 1.6, n_gpu),
            gpu_mem_offset=rng.normal(0.0, 1.2, n_gpu),
            gpu_power_eff=np.exp(rng.normal(0.0, 0.02, n_gpu)),
            rack_offset=rng.uniform(0.2, 1.0, n_rack),
            cdu_flow0=_pick(cdu_h100, 330.0, 130.0) * rng.uniform(0.95, 1.05, n_cdu),
            cdu_head0=_pick(cdu_h100, 180.0, 140.0) * rng.uniform(0.95, 1.05, n_cdu),
            cdu_supply0=SUPPLY_SETPOINT_C + rng.uniform(-0.5, 0.5, n_cdu),
            link_base_us=rng.uniform(3.6, 4.4, n_link),
            link_retx_base=np.exp(rng.normal(math.log(1.2), 0.4, n_link)),
            storage_capacity=capacity_gbps,
            storage_read_gbps=0.25 * capacity_gbps * rng.uniform(0.9, 1.1, capacity_gbps.size),
            diurnal_phase_s=float(rng.uniform(0, 86_400.0)),
        )


@dataclass(frozen=True)
class GpuTruth:
    job: IntArray  # job record, -1 idle
    util: FloatArray  # 0..1
    power_w: FloatArray  # demanded board power (the cap is applied with the noise)
    clock_mhz: FloatArray
    temp_c: FloatArray
    mem_temp_c: FloatArray
    bits: IntArray  # fault and thermal throttle bits (benign ones are added with the noise)
    slowdown: FloatArray  # the rank's step-time factor


class Physics:
    def __init__(self, fleet: Fleet, effects: Effects, workload: Workload, plant: Plant) -> None:
        self.fleet, self.effects, self.workload, self.plant = fleet, effects, workload, plant
        topo = fleet.topology
        self.gpu_node = topo.gpu_node
        self.gpu_rack = topo.node_rack[topo.gpu_node]
        self.gpu_cdu = topo.rack_cdu[self.gpu_rack]
        self.node_cdu = topo.rack_cdu[topo.node_rack]
        h = fleet.gpu_is_h100
        self.idle_w, self.busy_w = _pick(h, H100.idle_w, L40S.idle_w), _pick(h, H100.busy_w, L40S.busy_w)
        self.boost, self.idle_mhz = (
            _pick(h, H100.boost_mhz, L40S.boost_mhz),
            _pick(h, H100.idle_mhz, L40S.idle_mhz),
        )
        self.r_th = _pick(h, H100.r_th, L40S.r_th)
        self.temp_off = _pick(h, H100.temp_offset_c, L40S.temp_offset_c) + plant.gpu_temp_offset
        self.mem_off = _pick(h, H100.mem_offset_c, L40S.mem_offset_c) + plant.gpu_mem_offset
        self.sw_c, self.hw_c = (
            _pick(h, H100.sw_thermal_c, L40S.sw_thermal_c),
            _pick(h, H100.hw_thermal_c, L40S.hw_thermal_c),
        )
        nh = fleet.node_is_h100
        self.node_gpus = np.bincount(topo.gpu_node, minlength=fleet.n_nodes).astype(np.float64)
        self.node_idle_w, self.node_busy_w = (
            _pick(nh, H100.idle_w, L40S.idle_w),
            _pick(nh, H100.busy_w, L40S.busy_w),
        )
        self.node_host_kw = _pick(nh, H100.host_kw, L40S.host_kw)
        self._heat: dict[float, FloatArray] = {}

    # ---- facilities -----------------------------------------------------------------------
    def node_power_kw(self, node: IntArray, load: FloatArray) -> FloatArray:
        gpu_w = self.node_idle_w[node] + (self.node_busy_w[node] - self.node_idle_w[node]) * load**1.2
        return np.asarray(
            self.node_gpus[node] * gpu_w / 1000.0 + self.node_host_kw[node] * (0.6 + 0.4 * load)
        )

    def cdu_heat_kw(self, t: float) -> FloatArray:
        """Heat each CDU carries at grid time ``t``, from the thermally lagged load."""
        cached = self._heat.get(t)
        if cached is not None:
            return cached
        nodes = np.arange(self.fleet.n_nodes)
        load = self.workload.smooth_load(nodes, np.full(nodes.size, t))
        load[self.effects.node_dead(nodes, np.full(nodes.size, t))] = 0.0
        power = self.node_power_kw(nodes, load)
        heat = np.bincount(self.node_cdu, power, minlength=self.plant.cdu_flow0.size).astype(np.float64)
        if len(self._heat) > 256:
            self._heat.clear()
        self._heat[t] = heat
        return heat

    def heat_kw(self, cdu: IntArray, t: FloatArray) -> FloatArray:
        """Per sample: its CDU's heat on a 15 s grid (heat moves slowly; one sum per grid time)."""
        keys = np.floor(t / HEAT_GRID_S) * HEAT_GRID_S
        grid, inverse = np.unique(keys, return_inverse=True)
        table = np.stack([self.cdu_heat_kw(float(k)) for k in grid])
        return np.asarray(table[inverse.ravel(), cdu])

    def rack_power_kw(self, rack_t: FloatArray) -> FloatArray:
        """Each rack's power at its own sample time (instantaneous load: PDUs see saves and stalls)."""
        topo, wl = self.fleet.topology, self.workload
        nodes = np.arange(self.fleet.n_nodes)
        t = rack_t[topo.node_rack]
        job = wl.job_at(nodes, t)
        util = wl.util(nodes, t, job, self.effects.stall_factor(job, t))
        power = np.where(self.effects.node_dead(nodes, t), 0.0, self.node_power_kw(nodes, util))
        return np.bincount(topo.node_rack, power, minlength=rack_t.size).astype(np.float64)

    def supply_c(self, cdu: IntArray, t: FloatArray) -> FloatArray:
        return self.plant.cdu_supply0[cdu] + diurnal(t, 0.8, self.plant.diurnal_phase_s)

    def flow_lpm(self, cdu: IntArray, t: FloatArray) -> FloatArray:
        return self.plant.cdu_flow0[cdu] * self.effects.pump_health(cdu, t)

    def head_kpa(self, cdu: IntArray, t: FloatArray) -> FloatArray:
        return self.plant.cdu_head0[cdu] * self.effects.pump_health(cdu, t) ** 2

    def loop_rise_c(self, cdu: IntArray, t: FloatArray) -> FloatArray:
        """Return minus supply: heat / (rho c flow)."""
        return self.heat_kw(cdu, t) / (KJ_PER_L_K * self.flow_lpm(cdu, t))

    def rack_inlet_c(self, rack: IntArray, t: FloatArray) -> FloatArray:
        cdu = self.fleet.topology.rack_cdu[rack]
        return self.supply_c(cdu, t) + self.plant.rack_offset[rack]

    # ---- GPUs ---------------------------------------------------------------------------
    def gpu(self, gpu: IntArray, t: FloatArray) -> GpuTruth:
        eff, wl = self.effects, self.workload
        node, cdu = self.gpu_node[gpu], self.gpu_cdu[gpu]
        job = wl.job_at(node, t)
        stall = eff.stall_factor(job, t)
        util = wl.util(node, t, job, stall)
        smooth = wl.smooth_load(node, t)
        cf = eff.clock_factor(gpu, t)
        span = self.busy_w[gpu] - self.idle_w[gpu]
        power = (self.idle_w[gpu] + span * util**1.2) * self.plant.gpu_power_eff[gpu] * cf**2
        heat_w = (self.idle_w[gpu] + span * smooth**1.2) * self.plant.gpu_power_eff[gpu] * cf**2
        flow_share = eff.pump_health(cdu, t)
        coolant = (
            self.supply_c(cdu, t)
            + self.plant.rack_offset[self.gpu_rack[gpu]]
            + 0.5 * self.loop_rise_c(cdu, t)
        )
        r_th = self.r_th[gpu] * eff.rth_mult(gpu, t) * flow_share**-0.5
        t_free = coolant + r_th * heat_w + self.temp_off[gpu]
        over = t_free - self.sw_c[gpu]
        thermal_cf = np.where(over > 0, np.clip(1.0 - 0.025 * over, 0.55, 1.0), 1.0)
        temp = np.where(over > 0, self.sw_c[gpu] + 0.25 * over, t_free)
        bits = (
            eff.fault_bits(gpu, t)
            | np.where(over > 0, SW_THERMAL_BIT, 0)
            | np.where(t_free > self.hw_c[gpu], HW_THERMAL_BIT, 0)
        )
        # The clock governor holds boost while a job owns the GPU (a save's few idle seconds do not
        # clock it down); it idles only when no job runs.
        clock = np.where(job >= 0, self.boost[gpu], self.idle_mhz[gpu]) * cf * thermal_cf
        return GpuTruth(
            job=job,
            util=util,
            power_w=power * thermal_cf**2,
            clock_mhz=clock,
            temp_c=temp,
            mem_temp_c=temp + self.mem_off[gpu],
            bits=bits.astype(np.int64),
            slowdown=eff.rank_slowdown(gpu, t) / thermal_cf * stall,
        )

    def throttling(self, gpu: IntArray, t: FloatArray) -> BoolArray:
        """GPUs a thermal slowdown is costing: throttled while running a job."""
        truth = self.gpu(gpu, t)
        return np.asarray((truth.bits & SW_THERMAL_BIT).astype(bool) & (truth.job >= 0))

    # ---- storage ------------------------------------------------------------------------
    def storage(self, sto: IntArray, t: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(p99 write latency ms, p99 read latency ms, delivered GB/s) per storage sample."""
        p = self.plant
        health = self.effects.storage_health(sto, t)
        cap = p.storage_capacity[sto]
        read = p.storage_read_gbps[sto] * (1.0 + 0.12 * np.sin(2 * math.pi * t / 2400.0 + sto))
        demand = self.workload.write_demand(sto, t) + read
        rho_full = np.minimum(demand / cap, 1.6)
        rho = np.minimum(demand / (cap * health), 1.6)
        write_full = 9.0 * (1.0 + 5.0 * rho_full**3)
        write = 9.0 * (1.0 + 5.0 * rho**3) * (1.0 + 3.0 * (1.0 - health))
        read_ms = 4.5 * (1.0 + 2.5 * rho**3) * (1.0 + 2.0 * (1.0 - health))
        delivered = np.minimum(demand, 0.95 * cap * health) * (write_full / write) ** 0.6
        return write, read_ms, delivered
