"""The physical state of the cluster and its step: temperatures, clocks, power, links, storage.

The plant integrates the physics models (``twin.physics``) over a step. Alongside every actual
temperature it keeps the *clean* one (the same cluster with no fault active) so that the pace a
job would have had without gray failures is known exactly; the difference is the slowdown the
accounting charges to gray failures, and a fault-free run has none.

Counters (ECC, replays, retransmits) advance by Poisson draws. Background events, tiny per GPU
and step, are drawn fleet-wide and scattered, so a 16k-GPU step costs a few draws, not 16k.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology
from seamguard.twin.effects import Effects
from seamguard.twin.physics import ambient, compute, cooling, fabric, power
from seamguard.twin.scenario import Physics

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass
class Plant:
    physics: Physics
    gpu_node: IntArray
    gpu_rack: IntArray
    gpu_cdu: IntArray
    node_rack: IntArray
    node_leaf: IntArray
    rack_cdu: IntArray
    rack_nodes: FloatArray
    rack_full_kw: FloatArray
    offset: FloatArray  # per GPU thermal offset
    speed: FloatArray  # per GPU same-SKU speed
    reference_c: FloatArray  # per GPU busy temperature at the setpoint (DVFS reference)
    rng: np.random.Generator
    inlet: FloatArray = field(init=False)
    inlet_clean: FloatArray = field(init=False)
    gpu_temp: FloatArray = field(init=False)
    gpu_temp_clean: FloatArray = field(init=False)
    sbe: FloatArray = field(init=False)
    dbe: FloatArray = field(init=False)
    nvlink: FloatArray = field(init=False)
    pcie: FloatArray = field(init=False)
    retransmits: FloatArray = field(init=False)
    link_errors: FloatArray = field(init=False)
    gpu_dead: BoolArray = field(init=False)
    node_down: BoolArray = field(init=False)
    link_down: BoolArray = field(init=False)
    # Derived each step.
    load: FloatArray = field(init=False)
    clock: FloatArray = field(init=False)
    bits: IntArray = field(init=False)
    gpu_w: FloatArray = field(init=False)
    rank_factor: FloatArray = field(init=False)
    rank_factor_clean: FloatArray = field(init=False)
    rack_kw: FloatArray = field(init=False)
    cdu_flow: FloatArray = field(init=False)
    cdu_supply: FloatArray = field(init=False)
    cdu_return: FloatArray = field(init=False)
    link_latency: FloatArray = field(init=False)
    comm: FloatArray = field(init=False)
    remap: BoolArray = field(init=False)
    switch_buffer: FloatArray = field(init=False)
    storage_write: FloatArray = field(init=False)
    storage_read: FloatArray = field(init=False)
    storage_throughput: FloatArray = field(init=False)
    counters_reset: BoolArray = field(init=False)  # GPUs whose counters a driver reload restarted

    def __post_init__(self) -> None:
        ng, nn, nr = self.gpu_node.size, self.node_rack.size, self.rack_cdu.size
        nc = int(self.rack_cdu.max()) + 1 if nr else 0
        p = self.physics
        supply = p.ambient.supply_c
        self.inlet = np.full(nr, supply + p.cooling.approach_c)
        self.inlet_clean = self.inlet.copy()
        self.gpu_temp = self.inlet[self.gpu_rack] + p.cooling.gpu_rise_idle_c + self.offset
        self.gpu_temp_clean = self.gpu_temp.copy()
        for name in ("sbe", "dbe", "nvlink", "pcie"):
            setattr(self, name, np.zeros(ng))
        self.retransmits, self.link_errors = np.zeros(nn), np.zeros(nn)
        self.counters_reset = np.zeros(ng, bool)
        self.gpu_dead, self.node_down, self.link_down = (
            np.zeros(ng, bool),
            np.zeros(nn, bool),
            np.zeros(nn, bool),
        )
        self.load = np.zeros(ng)
        self.clock = np.ones(ng)
        self.bits = np.zeros(ng, np.int64)
        self.gpu_w = np.full(ng, p.power.gpu_idle_w)
        self.rank_factor = self.speed.copy()
        self.rank_factor_clean = self.speed.copy()
        self.rack_kw = np.zeros(nr)
        self.cdu_flow, self.cdu_supply, self.cdu_return = (
            np.ones(nc),
            np.full(nc, supply),
            np.full(nc, supply),
        )
        self.link_latency, self.comm = np.ones(nn), np.ones(nn)
        self.remap = np.zeros(ng, bool)
        self.switch_buffer = np.zeros(int(self.node_leaf.max()) + 1 if nn else 0)
        ns = 0
        self.storage_write, self.storage_read, self.storage_throughput = np.ones(ns), np.ones(ns), np.ones(ns)

    @classmethod
    def build(cls, physics: Physics, topology: Topology, seed: int) -> Plant:
        from seamguard.twin.world import STATIC_STREAM

        rng = np.random.default_rng([seed, STATIC_STREAM])
        ng = topology.count(EntityKind.GPU)
        offset = rng.normal(0.0, physics.cooling.gpu_offset_sd_c, ng)
        speed = compute.sku_speed(physics.compute, rng, ng)
        c = physics.cooling
        reference = physics.ambient.supply_c + c.approach_c + c.gpu_rise_busy_c + offset
        gpu_rack = topology.node_rack[topology.gpu_node]
        nr = topology.count(EntityKind.RACK)
        rack_nodes = np.bincount(topology.node_rack, minlength=nr).astype(np.float64)
        rack_gpus = np.bincount(gpu_rack, minlength=nr).astype(np.float64)
        return cls(
            physics=physics, gpu_node=topology.gpu_node, gpu_rack=gpu_rack, gpu_cdu=topology.rack_cdu[gpu_rack],
            node_rack=topology.node_rack, node_leaf=topology.node_leaf, rack_cdu=topology.rack_cdu,
            rack_nodes=rack_nodes, rack_full_kw=power.full_rack_kw(physics.power, rack_gpus, rack_nodes),
            offset=offset, speed=speed, reference_c=reference, rng=np.random.default_rng([seed, STATIC_STREAM, 1]),
        )  # fmt: skip

    def advance(self, t1: float, dt: float, fx: Effects, load: FloatArray, rerouted: BoolArray) -> IntArray:
        """Integrate one step ending at ``t1``; returns GPUs that crossed the thermal trip point."""
        p = self.physics
        self.load = load
        supply = ambient.supply_temperature(p.ambient, t1)
        cdu_supply = supply + fx.cdu_supply_extra
        heat = np.clip(self.rack_kw / np.maximum(self.rack_full_kw, 1e-9), 0.0, 1.0)
        lost_rack = fx.cdu_lost[self.rack_cdu]
        tau_r, tau_g = p.cooling.rack_time_constant_s, p.cooling.gpu_time_constant_s
        self.inlet = cooling.relax(
            self.inlet, cooling.inlet_target(p.cooling, cdu_supply[self.rack_cdu], lost_rack, heat), dt, tau_r
        )
        clean_supply = np.full(self.rack_cdu.size, supply)
        no_loss = np.zeros(self.rack_cdu.size)
        self.inlet_clean = cooling.relax(
            self.inlet_clean, cooling.inlet_target(p.cooling, clean_supply, no_loss, heat), dt, tau_r
        )
        target = cooling.gpu_target(
            p.cooling, self.inlet[self.gpu_rack], fx.cdu_lost[self.gpu_cdu], load, self.offset, fx.gpu_heat_c
        )
        self.gpu_temp = cooling.relax(self.gpu_temp, target, dt, tau_g)
        zero = np.zeros(self.gpu_node.size)
        clean_target = cooling.gpu_target(
            p.cooling, self.inlet_clean[self.gpu_rack], zero, load, self.offset, zero
        )
        self.gpu_temp_clean = cooling.relax(self.gpu_temp_clean, clean_target, dt, tau_g)

        throttle, bits = compute.thermal_throttle(p.compute, self.gpu_temp)
        dvfs = compute.dvfs_factor(p.compute, self.gpu_temp, self.reference_c)
        clock = np.minimum(dvfs * throttle, fx.gpu_clock_cap)
        bits |= np.where(fx.gpu_hw_slowdown, compute.BIT_HW_THERMAL, 0)
        busy = load > 0
        demand = power.rack_power_kw(
            p.power, power.gpu_power(p.power, load, clock), self.gpu_rack, self.rack_nodes, ~self.gpu_dead
        )
        limit = self.rack_full_kw * p.power.rack_limit_headroom * fx.rack_limit_factor
        brake = power.power_brake(demand, limit)[self.gpu_rack] & busy
        clock = np.where(brake, clock * p.power.brake_clock, clock)
        bits |= np.where(brake, compute.BIT_POWER_BRAKE, 0)
        self.clock, self.bits = clock, bits
        self.gpu_w = power.gpu_power(p.power, load, clock)
        self.rack_kw = power.rack_power_kw(
            p.power, self.gpu_w, self.gpu_rack, self.rack_nodes, ~self.gpu_dead
        )
        self.rank_factor = compute.rank_time_factor(self.speed, clock, fx.gpu_slow)
        clean_clock = compute.dvfs_factor(p.compute, self.gpu_temp_clean, self.reference_c)
        self.rank_factor_clean = compute.rank_time_factor(self.speed, clean_clock, np.ones_like(clean_clock))

        flow = cooling.flow_fraction(p.cooling, fx.cdu_lost)
        cdu_heat = np.bincount(self.rack_cdu, weights=self.rack_kw, minlength=flow.size) / np.maximum(
            np.bincount(self.rack_cdu, weights=self.rack_full_kw, minlength=flow.size), 1e-9
        )
        self.cdu_flow, self.cdu_supply = flow, cdu_supply
        self.cdu_return = cooling.return_temperature(p.cooling, cdu_supply, flow, cdu_heat)

        leaf_latency = fx.switch_latency[self.node_leaf]
        self.link_latency = fx.link_latency * leaf_latency
        self.comm = fabric.comm_factor(p.fabric, fx.link_latency, leaf_latency, rerouted)
        self.switch_buffer = fx.switch_buffer_pct
        self.storage_write, self.storage_read = fx.storage_write, fx.storage_read
        self.storage_throughput = fx.storage_throughput
        self.remap = fx.gpu_remap
        self._count(dt, fx)

        tripped = np.flatnonzero((self.gpu_temp >= p.compute.trip_c) & ~self.gpu_dead)
        return tripped.astype(np.int64)

    def _scatter(self, counter: FloatArray, base_per_s: float, extra_per_s: FloatArray, dt: float) -> None:
        n = counter.size
        if n == 0:
            return
        total = self.rng.poisson(base_per_s * dt * n)
        if total:
            np.add.at(counter, self.rng.integers(0, n, total), 1.0)
        hot = np.flatnonzero(extra_per_s > 0)
        if hot.size:
            counter[hot] += self.rng.poisson(extra_per_s[hot] * dt)

    def _count(self, dt: float, fx: Effects) -> None:
        m, f = self.physics.memory, self.physics.fabric
        fresh = fx.gpu_counter_reset & ~self.counters_reset
        if fresh.any():  # counter_reset: the running counters restart from zero (DBEs persist)
            for counter in (self.sbe, self.nvlink, self.pcie):
                counter[fresh] = 0.0
            self.counters_reset |= fresh
        alive = ~self.gpu_dead
        self._scatter(self.sbe, m.sbe_per_h / 3600.0, np.where(alive, fx.gpu_sbe_per_h / 3600.0, 0.0), dt)
        self._scatter(self.nvlink, m.nvlink_per_h / 3600.0, fx.gpu_nvlink_per_h / 3600.0, dt)
        self._scatter(self.pcie, m.pcie_replay_per_h / 3600.0, fx.gpu_pcie_per_h / 3600.0, dt)
        up = ~self.link_down
        self.retransmits += np.where(
            up, self.rng.poisson(f.retransmits_per_s * fx.link_retransmit_mult * dt), 0
        )
        self._scatter(self.link_errors, f.errors_per_s, np.where(up, fx.link_errors_per_s, 0.0), dt)
