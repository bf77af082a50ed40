"""The twin's physics models and its accounting, one behaviour at a time.

Each physics model is checked through its own public functions with its default parameters
(every expected number is derived from those parameters), and where the behaviour only shows
in the integration, through ``Plant.advance`` on a tiny cluster. The accounting is checked on a
``TrainingJob`` driven by hand, then on whole runs of the twin: a fault-free run loses nothing
but its checkpoint saves, and a windows-mode run with faults still books every second.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pytest

from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology
from seamguard.twin.accounting import Bucket
from seamguard.twin.effects import PCIE_SLOWDOWN, Effects, apply_faults
from seamguard.twin.faults import FAULT_KINDS, Fault
from seamguard.twin.jobs import Failure, JobEvent, Memory, Phase, SavePlan, TrainingJob
from seamguard.twin.physics import ambient, compute, cooling, fabric, memory, power, storage
from seamguard.twin.physics.ambient import DAY_S, AmbientParams
from seamguard.twin.physics.compute import ComputeParams
from seamguard.twin.physics.cooling import CoolingParams
from seamguard.twin.physics.fabric import FabricParams
from seamguard.twin.physics.memory import MemoryParams
from seamguard.twin.physics.power import PowerParams
from seamguard.twin.physics.storage import StorageParams
from seamguard.twin.plant import Plant
from seamguard.twin.results import RunResult
from seamguard.twin.scenario import Job, Scenario, hard_default, scenario_from_mapping
from seamguard.twin.sim import POLICIES, Twin
from seamguard.twin.world import World, build_world

FloatArray = npt.NDArray[np.float64]
HOUR = 3600.0

# Two CDUs, one rack each, two 8-GPU nodes per rack: enough for one CDU to fail beside a control.
TINY: dict[str, Any] = {
    "name": "tiny",
    "duration_h": 1,
    "cluster": {"cdus": 2, "racks_per_cdu": 1, "nodes_per_rack": 2, "gpus_per_node": 8},
    "jobs": [{"name": "train", "class": "sync_training", "nodes": 2}],
}
# 1,024 GPUs: enough draws to measure the same-SKU spread.
WIDE: dict[str, Any] = {
    "name": "wide",
    "duration_h": 1,
    "cluster": {"cdus": 4, "racks_per_cdu": 4, "nodes_per_rack": 8, "gpus_per_node": 8},
    "jobs": [{"name": "train", "class": "sync_training", "nodes": 2}],
}
# One training job on two nodes, nothing ever goes wrong: no faults, no hazards.
QUIET: dict[str, Any] = {
    "name": "quiet",
    "duration_h": 4,
    "cluster": {"cdus": 1, "racks_per_cdu": 1, "nodes_per_rack": 2, "gpus_per_node": 8},
    "jobs": [{"name": "train", "class": "sync_training", "nodes": 2, "checkpoint_gb": 400}],
}
# Windows mode, a cell per rack: a GPU whose HBM fails after a precursor, then an uplink going down.
WINDOWED: dict[str, Any] = {
    "name": "windowed",
    "duration_h": 4,
    "cluster": {"cdus": 2, "racks_per_cdu": 2, "nodes_per_rack": 4, "gpus_per_node": 8, "storage": ["ckpt0", "ckpt1"]},
    "jobs": [
        {"name": "train", "class": "sync_training", "nodes": 10, "checkpoint_gb": 400, "fallback_storage": "ckpt1"},
        {"name": "batch", "class": "async_batch_inference", "nodes": 2},
    ],
    "faults": [
        {"kind": "hbm_ecc", "target": "gpu/n0002/1", "onset_h": 0.5, "ramp_h": 0.5},
        {"kind": "link_down", "target": "link/n0009", "onset_h": 2.5},
    ],
    "observation": {"mode": "windows", "cell_racks": 1},
}  # fmt: skip


def load(data: dict[str, Any], **changes: Any) -> Scenario:
    return scenario_from_mapping({**data, **changes}, data["name"])


@pytest.fixture(scope="module")
def tiny() -> World:
    return build_world(load(TINY), 0)


def effects(topo: Topology) -> Effects:
    k = EntityKind
    return Effects.none(topo.count(k.CDU), topo.count(k.RACK), topo.count(k.GPU), topo.count(k.NODE),
                        topo.count(k.SWITCH), topo.count(k.STORAGE), topo.count(k.JOB))  # fmt: skip


def fault(kind: str, local: int, onset: float = 0.0, ramp: float = 0.0, severity: float = 1.0) -> Fault:
    """A component fault record as the world would make it (hard or not as the kind says)."""
    spec = FAULT_KINDS[kind]
    return Fault(0, kind, f"{spec.target.value}/x", local, onset, ramp, severity, math.inf,
                 hard_default(kind, None), spec.xid, "declared", 0.0)  # fmt: skip


def step(plant: Plant, world: World, t1: float, dt: float, fx: Effects, load: FloatArray) -> float:
    plant.advance(t1, dt, fx, load, np.zeros(world.topology.count(EntityKind.NODE), bool))
    return t1


def settle(plant: Plant, world: World, load: FloatArray, hours: int = 6) -> float:
    """Steady state under ``load`` (the lags are exact, so an hour's step is 20+ time constants)."""
    t = world.start
    for _ in range(hours):
        t = step(plant, world, t + HOUR, HOUR, effects(world.topology), load)
    return t


# ---- ambient ----------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [AmbientParams(), AmbientParams(peak_hour_utc=4.5, diurnal_amplitude_c=1.5)])
def test_supply_peaks_at_peak_hour_and_swings_by_the_amplitude(p: AmbientParams) -> None:
    day = 20_000 * DAY_S  # any midnight UTC
    ts = day + np.arange(0.0, DAY_S, 60.0)
    temps = np.array([ambient.supply_temperature(p, float(t)) for t in ts])
    assert (ts[int(temps.argmax())] - day) / HOUR == pytest.approx(p.peak_hour_utc, abs=1 / 60)
    assert temps.max() == pytest.approx(p.supply_c + p.diurnal_amplitude_c)
    trough = day + ((p.peak_hour_utc + 12) % 24) * HOUR
    assert ambient.supply_temperature(p, trough) == pytest.approx(p.supply_c - p.diurnal_amplitude_c)
    assert temps.mean() == pytest.approx(p.supply_c)
    assert ambient.supply_temperature(p, trough + DAY_S) == pytest.approx(
        ambient.supply_temperature(p, trough)
    )  # the same every day


# ---- cooling ----------------------------------------------------------------------------------


def test_relaxation_is_an_exact_exponential() -> None:
    tau = CoolingParams().rack_time_constant_s
    current, target = np.array([30.0, 80.0]), np.array([70.0, 40.0])
    whole = cooling.relax(current, target, 90.0, tau)
    halves = cooling.relax(cooling.relax(current, target, 45.0, tau), target, 45.0, tau)
    np.testing.assert_allclose(whole, halves, rtol=1e-12)
    after_tau = cooling.relax(current, target, tau, tau)
    np.testing.assert_allclose((after_tau - current) / (target - current), 1 - 1 / math.e, rtol=1e-12)


def test_lost_flow_raises_inlet_and_gpu_targets_by_the_documented_rises() -> None:
    p = CoolingParams()
    supply, none, lost, full = np.array([30.0]), np.array([0.0]), np.array([0.45]), np.array([1.0])
    inlet0, inlet1 = cooling.inlet_target(p, supply, none, full), cooling.inlet_target(p, supply, lost, full)
    assert inlet1 - inlet0 == pytest.approx(p.inlet_rise_per_lost_flow_c * 0.45)
    zero = np.zeros(1)
    gpu0 = cooling.gpu_target(p, inlet0, none, full, zero, zero)
    gpu1 = cooling.gpu_target(p, inlet1, lost, full, zero, zero)
    rise = (p.inlet_rise_per_lost_flow_c + p.plate_rise_per_lost_flow_c) * 0.45
    assert gpu1 - gpu0 == pytest.approx(rise)
    # Less water carries the same heat: the return runs hotter.
    ret = cooling.return_temperature(p, supply, cooling.flow_fraction(p, lost), full)
    assert ret - supply == pytest.approx(p.return_delta_c / 0.55)


def test_losing_cdu_flow_heats_the_inlet_then_the_gpus_into_throttling(tiny: World) -> None:
    topo = tiny.topology
    plant = Plant.build(tiny.scenario.physics, topo, 0)
    p = plant.physics.cooling
    busy = np.ones(topo.count(EntityKind.GPU))
    t = settle(plant, tiny, busy)
    hit, control = plant.gpu_cdu == 0, plant.gpu_cdu == 1
    heat = plant.rack_kw[0] / plant.rack_full_kw[0]
    inlet_before, gpu_before = plant.inlet.copy(), plant.gpu_temp.copy()

    def lose() -> Effects:
        fx = effects(topo)
        fx.cdu_lost[0] = 0.45
        return fx

    t = step(plant, tiny, t + 30, 30, lose(), busy)
    # The rack inlet moves exactly its lag's share of the way to its new target.
    gap = p.inlet_rise_per_lost_flow_c * 0.45 * heat
    supply_moved = ambient.supply_temperature(plant.physics.ambient, t) - ambient.supply_temperature(
        plant.physics.ambient, t - 30
    )
    expected = inlet_before[0] + (1 - math.exp(-30 / p.rack_time_constant_s)) * (gap + supply_moved)
    assert plant.inlet[0] == pytest.approx(expected, abs=1e-3)
    assert plant.inlet[0] > plant.inlet[1] + 0.5
    assert (plant.gpu_temp[hit] > gpu_before[hit] + 1).all()
    temps = [plant.gpu_temp[hit].mean()]
    for _ in range(60):
        t = step(plant, tiny, t + 30, 30, lose(), busy)
        temps.append(plant.gpu_temp[hit].mean())
    assert np.all(np.diff(temps) > 0)  # still climbing as the inlet follows
    assert np.abs(plant.gpu_temp[control] - gpu_before[control]).max() < 0.2  # the other CDU: unmoved
    throttled = (plant.bits & compute.BIT_SW_THERMAL) != 0
    assert throttled[hit].any() and not throttled[control].any()
    assert plant.clock[hit].max() < plant.clock[control].min()


def test_a_busy_gpu_is_hotter_than_an_idle_one(tiny: World) -> None:
    p = CoolingParams()
    inlet, zero = np.array([33.0]), np.zeros(1)
    busy = cooling.gpu_target(p, inlet, zero, np.ones(1), zero, zero)
    idle = cooling.gpu_target(p, inlet, zero, zero, zero, zero)
    assert busy - idle == pytest.approx(p.gpu_rise_busy_c - p.gpu_rise_idle_c)
    # In the plant: node 0 busy, node 1 idle, same rack; their own offsets taken out.
    plant = Plant.build(tiny.scenario.physics, tiny.topology, 0)
    load = (plant.gpu_node == 0).astype(np.float64)
    settle(plant, tiny, load)
    own = plant.gpu_temp - plant.offset
    same_rack = plant.gpu_rack == 0
    np.testing.assert_allclose(
        own[(plant.gpu_node == 0) & same_rack].min() - own[(plant.gpu_node == 1) & same_rack].max(),
        plant.physics.cooling.gpu_rise_busy_c - plant.physics.cooling.gpu_rise_idle_c,
        atol=1e-6,
    )


# ---- compute ----------------------------------------------------------------------------------


def test_thermal_throttling_starts_at_the_documented_throttle_points() -> None:
    p = ComputeParams()
    below = np.array([p.sw_thermal_c - 10, p.sw_thermal_c - 0.01])
    factor, bits = compute.thermal_throttle(p, below)
    assert (factor == 1.0).all() and (bits == 0).all()
    sw = np.array([p.sw_thermal_c, p.sw_thermal_c + 1.0])
    factor, bits = compute.thermal_throttle(p, sw)
    assert (factor < 1.0).all() and factor[1] == pytest.approx(factor[0] - p.clock_drop_per_c)
    assert (bits == compute.BIT_SW_THERMAL).all()  # software slowdown only, below the hw point
    factor, bits = compute.thermal_throttle(p, np.array([p.hw_thermal_c, p.trip_c + 20]))
    assert (bits == compute.BIT_SW_THERMAL | compute.BIT_HW_THERMAL).all()
    assert factor[1] == pytest.approx(p.min_clock_factor)  # never below the floor


def test_a_gpu_past_the_trip_point_shuts_down(tiny: World) -> None:
    plant = Plant.build(tiny.scenario.physics, tiny.topology, 0)
    busy = np.ones(tiny.topology.count(EntityKind.GPU))
    t = settle(plant, tiny, busy)
    fx = effects(tiny.topology)
    fx.gpu_heat_c[5] = plant.physics.compute.trip_c  # far past it
    tripped = plant.advance(t + HOUR, HOUR, fx, busy, np.zeros(tiny.topology.count(EntityKind.NODE), bool))
    assert tripped.tolist() == [5]


def test_dvfs_slows_a_gpu_hotter_than_its_reference_within_the_range() -> None:
    p = ComputeParams()
    ref = np.full(4, 68.0)
    f = compute.dvfs_factor(p, ref + np.array([0.0, 1.0, -1.0, 100.0]), ref)
    assert f[0] == 1.0
    assert f[1] == pytest.approx(1 - p.dvfs_per_c) and f[2] == pytest.approx(1 + p.dvfs_per_c)
    assert f[3] == pytest.approx(1 - p.dvfs_range)


def test_a_slower_or_throttled_gpu_has_a_larger_rank_time_factor() -> None:
    one = np.ones(3)
    speed = np.array([1.0, 1.03, 1.0])
    clock = np.array([1.0, 1.0, 0.8])
    f = compute.rank_time_factor(speed, clock, one)
    assert f[1] == pytest.approx(1.03) and f[2] == pytest.approx(1 / 0.8) and f[0] < f[1] < f[2]


def test_plant_draws_the_documented_same_sku_spread() -> None:
    world = build_world(load(WIDE), 0)
    p = world.scenario.physics.compute
    speed = Plant.build(world.scenario.physics, world.topology, 0).speed
    assert speed.size == 1024
    assert speed.std() == pytest.approx(p.sku_sd, rel=0.1)
    assert speed.mean() == pytest.approx(1.0, abs=3 * p.sku_sd / math.sqrt(speed.size))
    assert speed.min() >= 1 - p.sku_clip and speed.max() <= 1 + p.sku_clip
    assert speed.max() - speed.min() > 1.5 * p.sku_clip  # the ~8% fastest-to-slowest spread
    other = Plant.build(world.scenario.physics, world.topology, 1).speed
    assert not np.array_equal(speed, other)


# ---- power ------------------------------------------------------------------------------------


def test_rack_power_grows_with_load_and_full_load_is_the_full_rack_draw() -> None:
    p = PowerParams()
    gpu_rack = np.repeat(np.arange(2), 8).astype(np.int64)
    nodes = np.array([1.0, 1.0])
    alive = np.ones(16, bool)
    draws = [
        power.rack_power_kw(p, power.gpu_power(p, np.full(16, x), np.ones(16)), gpu_rack, nodes, alive)
        for x in (0.0, 0.5, 1.0)
    ]
    assert (draws[0] < draws[1]).all() and (draws[1] < draws[2]).all()
    np.testing.assert_allclose(draws[0], 8 * p.gpu_idle_w / 1000 + p.node_overhead_kw)
    np.testing.assert_allclose(draws[2], power.full_rack_kw(p, np.array([8.0, 8.0]), nodes))
    dead = alive.copy()
    dead[:4] = False
    less = power.rack_power_kw(p, power.gpu_power(p, np.ones(16), np.ones(16)), gpu_rack, nodes, dead)
    assert less[0] == pytest.approx(draws[2][0] - 4 * p.gpu_busy_w / 1000) and less[1] == draws[2][1]


def test_power_brake_only_when_demand_exceeds_the_limit() -> None:
    brake = power.power_brake(np.array([9.0, 10.0, 10.01]), np.array([10.0, 10.0, 10.0]))
    assert brake.tolist() == [False, False, True]


def _braked(world: World, severity: float) -> tuple[Plant, Plant]:
    """(faulted, clean) plants after one step under a psu_loss on rack 0; node 1 idle."""
    topo = world.topology
    load = np.where(world.topology.gpu_node == 1, 0.0, 1.0)
    plants = []
    for faulted in (True, False):
        plant = Plant.build(world.scenario.physics, topo, 0)
        t = settle(plant, world, load)
        fx = effects(topo)
        if faulted:
            fx = apply_faults(fx, [fault("psu_loss", 0, severity=severity)], t, plant.physics)
        step(plant, world, t + 30, 30, fx, load)
        plants.append(plant)
    return plants[0], plants[1]


def test_the_power_brake_lowers_the_busy_clocks_of_an_over_limit_rack(tiny: World) -> None:
    faulted, clean = _braked(tiny, severity=1.5)  # the limit cut to a quarter: under the draw
    p = faulted.physics.power
    braked = (faulted.bits & compute.BIT_POWER_BRAKE) != 0
    busy_rack0 = (faulted.gpu_rack == 0) & (faulted.load > 0)
    assert busy_rack0.any() and (braked == busy_rack0).all()  # rack 1 and the idle node: untouched
    np.testing.assert_allclose(faulted.clock[busy_rack0], clean.clock[busy_rack0] * p.brake_clock)
    np.testing.assert_array_equal(faulted.clock[~busy_rack0], clean.clock[~busy_rack0])
    assert faulted.rack_kw[0] < clean.rack_kw[0]


def test_no_brake_while_demand_fits_the_reduced_limit(tiny: World) -> None:
    faulted, clean = _braked(tiny, severity=0.2)
    p = faulted.physics.power
    limit = faulted.rack_full_kw * p.rack_limit_headroom * (1 - 0.5 * 0.2)  # psu_loss: x (1 - sev/2)
    assert (clean.rack_kw < limit).all()
    assert not (faulted.bits & compute.BIT_POWER_BRAKE).any()
    np.testing.assert_array_equal(faulted.clock, clean.clock)


# ---- fabric -----------------------------------------------------------------------------------


def test_collective_time_grows_with_latency_past_the_knee_and_rerouting_lowers_it() -> None:
    p = FabricParams()
    lat = np.array([1.0, p.collective_knee, p.collective_knee + 0.5, p.collective_knee + 2.0])
    calm_leaf = np.ones(4)
    f = fabric.comm_factor(p, lat, calm_leaf, np.zeros(4, bool))
    assert f[0] == f[1] == 1.0  # modest latency noise costs nothing
    assert f[2] == pytest.approx(1 + 0.5 * p.collective_gain) and f[3] > f[2]
    rerouted = fabric.comm_factor(p, lat, calm_leaf, np.ones(4, bool))
    assert (rerouted == 1 + p.reroute_penalty).all() and rerouted[3] < f[3]
    # a reroute leaves the node's uplink, not its leaf: a congested leaf's latency stays
    hot_leaf = np.full(4, p.collective_knee + 2.0)
    stuck = fabric.comm_factor(p, np.ones(4), hot_leaf, np.ones(4, bool))
    np.testing.assert_allclose(stuck, 1 + 2.0 * p.collective_gain + p.reroute_penalty)


def test_a_gray_link_turns_latency_toxic_over_its_ramp(tiny: World) -> None:
    p = tiny.scenario.physics
    ramp = 2 * HOUR
    link = fault("link_gray", 1, onset=1000.0, ramp=ramp)
    lat, mult = [], []
    for frac in (0.0, 0.25, 0.5, 0.75, 0.999):
        fx = apply_faults(effects(tiny.topology), [link], 1000.0 + frac * ramp, p)
        lat.append(fx.link_latency[1])
        mult.append(fx.link_retransmit_mult[1])
        assert fx.link_latency[0] == 1.0  # the other links: nominal
    assert np.all(np.diff(lat) > 0) and lat[-1] == pytest.approx(1 + p.fabric.gray_latency_rise, rel=1e-2)
    # Retransmits grow exponentially over the first half, then hold at the full growth.
    assert mult[0] == 1.0 and mult[1] < mult[2] == mult[3] == mult[4] == p.fabric.retransmit_growth
    rerouted = np.array([False, True, False, False])
    comm = fabric.comm_factor(p.fabric, np.array(lat[-1:] * 4), np.ones(4), rerouted)
    assert comm[1] < comm[0]


# ---- storage ----------------------------------------------------------------------------------


def test_congestion_collapse_past_the_knee() -> None:
    p = StorageParams()
    streams = np.arange(1.0, 4 * p.congestion_knee + 1)
    c = storage.congestion(p, streams)
    upto = streams <= p.congestion_knee
    assert (c[upto] == 1.0).all()
    aggregate = p.write_gbps * c
    assert np.all(np.diff(aggregate[~upto]) < 0)  # more streams, less in total
    assert aggregate[~upto].max() < p.write_gbps


def test_a_save_takes_longer_with_size_and_with_streams() -> None:
    p = StorageParams()

    def save(size_gb: float, streams: float) -> float:
        agg = p.write_gbps * float(storage.congestion(p, np.array(streams)))
        return storage.transfer_seconds(size_gb, agg, streams, p.overhead_s)

    assert save(100, 1) == pytest.approx(100 / p.write_gbps + p.overhead_s)
    sizes = [save(s, 1) for s in (100, 400, 1600)]
    assert sizes[0] < sizes[1] < sizes[2]
    by_streams = [save(400, c) for c in range(1, 17)]
    assert np.all(np.diff(by_streams) > 0)
    # Up to the knee the backend is shared fairly; past it each share also shrinks.
    k = int(p.congestion_knee)
    assert by_streams[k - 1] - p.overhead_s == pytest.approx(k * (by_streams[0] - p.overhead_s))
    assert by_streams[2 * k - 1] - p.overhead_s > 2 * k * (by_streams[0] - p.overhead_s)


def test_a_storage_tail_grows_with_progress() -> None:
    p = StorageParams()
    steps = [storage.tail_factors(p, 1.0, x) for x in (0.0, 0.25, 0.5, 1.0)]
    assert steps[0] == (1.0, 1.0, 1.0)
    w, r, tput = (np.array(v) for v in zip(*steps, strict=True))
    assert np.all(np.diff(w) > 0) and np.all(np.diff(r) > 0) and np.all(np.diff(tput) < 0)
    assert w[-1] == pytest.approx(p.tail_write_ms / p.write_latency_ms)
    assert r[-1] == pytest.approx(p.tail_read_ms / p.read_latency_ms)
    assert tput[-1] == pytest.approx(1 - p.throughput_loss)
    q = storage.queue_latency_factor(p, np.array([0.0, 1.0, 8.0]))
    assert q[0] == 1.0 and q[1] < q[2]


# ---- memory and effects -----------------------------------------------------------------------


def test_hbm_ecc_correctables_rise_over_the_ramp_before_the_hard_failure(tiny: World) -> None:
    p = tiny.scenario.physics
    onset, ramp = 5000.0, HOUR
    hbm = fault("hbm_ecc", 3, onset=onset, ramp=ramp)
    assert hbm.hard and hbm.hard_at == onset + ramp

    def at(t: float) -> Effects:
        return apply_faults(effects(tiny.topology), [hbm], t, p)

    rates, remaps = [], []
    for frac in (0.0, 0.2, 0.4, 0.6, 0.8, 0.999):
        fx = at(onset + frac * ramp)
        rates.append(fx.gpu_sbe_per_h[3])
        remaps.append(bool(fx.gpu_remap[3]))
        assert fx.gpu_sbe_per_h[np.arange(fx.gpu_sbe_per_h.size) != 3].max() == 0.0
    assert np.all(np.diff(rates) > 0)
    assert rates[0] == pytest.approx(p.memory.sbe_start_per_h)
    assert rates[-1] == pytest.approx(p.memory.sbe_end_per_h, rel=1e-2)
    ratio = np.array(rates[1:]) / np.array(rates[:-1])
    np.testing.assert_allclose(ratio[:-1], ratio[0])  # exponential: a constant factor per step
    assert remaps == [False, False, False, True, True, True]  # a row remap pending from halfway
    # Before the onset and once it has broken hard, no gray effect.
    assert at(onset - 1).gpu_sbe_per_h[3] == 0.0 and at(onset + ramp).gpu_sbe_per_h[3] == 0.0


def test_precursor_rate_scales_with_severity() -> None:
    p = MemoryParams()
    assert memory.precursor_sbe_per_h(p, 0.5, 1.0) == pytest.approx(0.5 * p.sbe_end_per_h)
    assert memory.precursor_sbe_per_h(p, 0.5, 0.5) < memory.precursor_sbe_per_h(p, 1.0, 0.5)


def test_a_failing_hbm_counts_far_more_corrected_errors_than_its_peers(tiny: World) -> None:
    topo = tiny.topology
    plant = Plant.build(tiny.scenario.physics, topo, 0)
    hbm = fault("hbm_ecc", 3, onset=tiny.start, ramp=HOUR)
    busy = np.ones(topo.count(EntityKind.GPU))
    t = tiny.start
    while t < tiny.start + HOUR - 60:
        fx = apply_faults(effects(topo), [hbm], t + 60, plant.physics)
        t = step(plant, tiny, t + 60, 60, fx, busy)
    m = plant.physics.memory
    # Each minute counts at the rate of its end: the expectation of the Poisson draws.
    expected = sum(memory.precursor_sbe_per_h(m, 1.0, k / 60) / 60 for k in range(1, 60))
    assert expected > 100 and plant.sbe[3] == pytest.approx(expected, rel=0.2)
    peers = np.delete(plant.sbe, 3)
    assert peers.max() < 0.01 * plant.sbe[3]


def test_a_downtrained_pcie_link_makes_its_rank_a_straggler(tiny: World) -> None:
    topo = tiny.topology
    busy = np.ones(topo.count(EntityKind.GPU))
    slow, clean = Plant.build(tiny.scenario.physics, topo, 0), Plant.build(tiny.scenario.physics, topo, 0)
    t = settle(slow, tiny, busy)
    settle(clean, tiny, busy)
    severity = 0.5
    fx = apply_faults(effects(topo), [fault("pcie_downtrain", 9, severity=severity)], t, slow.physics)
    step(slow, tiny, t + 30, 30, fx, busy)
    step(clean, tiny, t + 30, 30, effects(topo), busy)
    ratio = slow.rank_factor / clean.rank_factor
    assert ratio[9] == pytest.approx(1 + PCIE_SLOWDOWN * severity)
    np.testing.assert_allclose(np.delete(ratio, 9), 1.0)
    assert int(slow.rank_factor.argmax()) == 9  # it sets the pace of a synchronous job


# ---- a training job's accounting, driven by hand ------------------------------------------------


class FakeEnv:
    """The cluster around one job: fixed save and restore times, a fixed interval."""

    def __init__(
        self,
        save: float = 10.0,
        restore: float = 20.0,
        interval: float = 100.0,
        persist: float = 0.0,
        memory: Memory = Memory.NONE,
    ) -> None:
        self.save, self.restore, self.interval = save, restore, interval
        self.persist, self.memory = persist, memory
        self.hang_timeout_s = 60.0

    def save_plan(self, job: TrainingJob, t: float) -> SavePlan:
        return SavePlan(self.save, self.persist, self.memory, 0)

    def restore_seconds(self, job: TrainingJob, t: float) -> float:
        return self.restore

    def interval_s(self, job: TrainingJob) -> float:
        return self.interval


def training_job(env: FakeEnv, nodes: int = 2, restart_s: float = 300.0) -> TrainingJob:
    """A 16-GPU job launched fresh at t = 0."""
    spec = Job.model_validate({"name": "t", "class": "sync_training", "nodes": nodes, "restart_s": restart_s})
    job = TrainingJob(0, spec, 8, 0.0, math.inf, 0, np.zeros(0, np.int64))
    job.launch(0.0, np.arange(nodes, dtype=np.int64), env, fresh=True)
    return job


def booked(job: TrainingJob) -> float:
    """Every GPU-second so far: the buckets plus the progress not yet saved."""
    return float(job.buckets.sum() + job.pending.sum())


def test_a_save_inside_a_step_books_exactly_its_seconds() -> None:
    env = FakeEnv(save=10.0, interval=100.0)
    job = training_job(env)
    g = job.gpus
    job.advance(0.0, 90.0, 1.0, [], env)
    assert job.buckets.sum() == 0.0 and job.pending[0] == 90.0 * g  # nothing committed before a save
    job.advance(90.0, 120.0, 1.0, [], env)  # 10 s running, the 10 s save, 10 s running again
    assert job.buckets[Bucket.CHECKPOINT_SAVE] == 10.0 * g
    assert job.buckets[Bucket.PRODUCTIVE] == 100.0 * g and job.pending[0] == 10.0 * g
    assert job.saves == 1 and job.phase is Phase.RUNNING and job.next_save == 210.0
    assert booked(job) == 120.0 * g


def test_a_crash_rolls_back_exactly_the_unsaved_progress() -> None:
    env = FakeEnv(save=10.0, interval=100.0)
    job = training_job(env)
    g = job.gpus
    job.advance(0.0, 120.0, 0.8, [], env)  # saved at 110 what ran in [0, 100)
    job.advance(120.0, 180.0, 0.8, [JobEvent(150.0, Failure.CRASH)], env)
    assert job.buckets[Bucket.ROLLBACK] == pytest.approx((150.0 - 110.0) * g)
    assert job.buckets[Bucket.PRODUCTIVE] == pytest.approx(0.8 * 100.0 * g)  # saved work stays
    assert job.buckets[Bucket.SLOWDOWN] == pytest.approx(0.2 * 100.0 * g)
    assert job.buckets[Bucket.PLACEMENT_WAIT] == pytest.approx((180.0 - 150.0) * g)  # no nodes yet
    assert job.phase is Phase.RECOVERING and job.failures == 1
    assert booked(job) == pytest.approx(180.0 * g)


def test_a_hang_waits_for_the_watchdog_then_restarts_and_restores() -> None:
    env = FakeEnv(save=10.0, restore=20.0, interval=100.0)
    job = training_job(env, restart_s=50.0)
    g = job.gpus
    job.advance(0.0, 200.0, 1.0, [JobEvent(130.0, Failure.HANG)], env)
    # Hung at 130: the watchdog fires 60 s later, then the job waits for nodes.
    assert job.buckets[Bucket.RESTART] == pytest.approx(env.hang_timeout_s * g)
    assert job.buckets[Bucket.PLACEMENT_WAIT] == pytest.approx((200.0 - 190.0) * g)
    job.launch(200.0, job.nodes, env, fresh=False)
    job.advance(200.0, 300.0, 1.0, [], env)  # 50 s restart, 20 s restore, then running
    assert job.buckets[Bucket.RESTART] == pytest.approx((env.hang_timeout_s + 50.0) * g)
    assert job.buckets[Bucket.RESTORE] == pytest.approx(20.0 * g)
    assert job.phase is Phase.RUNNING and job.next_save == 270.0 + env.interval
    assert booked(job) == pytest.approx(300.0 * g)


def test_silent_corruption_rolls_back_past_the_checkpoints_written_after_it() -> None:
    env = FakeEnv(save=10.0, interval=100.0)
    job = training_job(env)
    g = job.gpus
    # Saves end at 110 and 220; corruption began at 150 and is found at 250.
    job.advance(0.0, 260.0, 1.0, [JobEvent(250.0, Failure.SDC, since=150.0)], env)
    assert job.buckets[Bucket.PRODUCTIVE] == pytest.approx(100.0 * g)  # only the save at 110 is good
    assert job.buckets[Bucket.ROLLBACK] == pytest.approx(((210.0 - 110.0) + (250.0 - 220.0)) * g)
    assert job.buckets[Bucket.CHECKPOINT_SAVE] == pytest.approx(20.0 * g)
    assert booked(job) == pytest.approx(260.0 * g)


def test_a_tiered_copy_not_yet_persisted_survives_in_memory_unless_its_host_goes() -> None:
    # Saves block 2 s (a copy to host memory) and reach storage 60 s later.
    for host_lost, restart_point in ((False, 102.0), (True, 0.0)):
        env = FakeEnv(save=2.0, interval=100.0, persist=60.0, memory=Memory.HOST)
        job = training_job(env)
        g = job.gpus
        job.advance(0.0, 130.0, 1.0, [JobEvent(120.0, Failure.CRASH, host_lost=host_lost)], env)
        # The save returned at 102; at 120 it is still persisting (durable at 162).
        kept = job.buckets[Bucket.PRODUCTIVE] / g
        assert kept == pytest.approx(100.0 if restart_point else 0.0)
        assert job.buckets[Bucket.ROLLBACK] == pytest.approx((120.0 - 2.0 - kept) * g)
        assert (job.restore_from is not None) == bool(restart_point)
        assert booked(job) == pytest.approx(130.0 * g)


def test_a_persisted_copy_survives_a_host_crash_and_a_peer_copy_any_one_failure() -> None:
    env = FakeEnv(save=2.0, interval=100.0, persist=30.0, memory=Memory.HOST)
    job = training_job(env)
    g = job.gpus
    # Saves return at 102 and 204; the first is on storage at 132, the second would be at 234.
    job.advance(0.0, 220.0, 1.0, [JobEvent(210.0, Failure.CRASH, host_lost=True)], env)
    assert job.buckets[Bucket.PRODUCTIVE] == pytest.approx(100.0 * g)  # back to the persisted copy
    assert job.restore_from is not None and job.restore_from.memory is Memory.NONE
    assert job.durable_age(220.0) == pytest.approx(220.0 - 102.0)
    peer = FakeEnv(save=2.0, interval=100.0, persist=math.inf, memory=Memory.PEER)
    job = training_job(peer)
    job.advance(0.0, 220.0, 1.0, [JobEvent(210.0, Failure.CRASH, host_lost=True)], peer)
    assert job.buckets[Bucket.PRODUCTIVE] == pytest.approx(200.0 * g)  # the buddy held the newest
    assert job.restore_from is not None and job.restore_from.memory is Memory.PEER
    assert job.persisting(150.0) == -1  # memory only: nothing written in the background


def test_the_buckets_always_sum_to_the_elapsed_time() -> None:
    """Uneven steps, varying pace, every kind of failure, planned restarts and early saves: at
    every step nothing is lost or counted twice, and after ``finish`` the buckets alone sum."""
    rng = np.random.default_rng(7)
    env = FakeEnv(save=17.0, restore=23.0, interval=130.0)
    job = training_job(env, restart_s=41.0)
    g, t = job.gpus, 0.0
    kinds = (Failure.CRASH, Failure.HANG, Failure.SDC)
    for i in range(400):
        t1 = t + float(rng.uniform(1.0, 60.0))
        events = []
        if rng.random() < 0.05:
            at = float(rng.uniform(t, t1))
            events.append(JobEvent(at, kinds[i % 3], since=float(rng.uniform(0.0, at))))
        job.advance(t, t1, float(rng.uniform(0.5, 1.0)), events, env)
        t = t1
        if job.phase is Phase.RECOVERING:
            job.launch(t, job.nodes, env, fresh=False)
        elif job.phase is Phase.RUNNING and rng.random() < 0.03:
            job.checkpoint_now(t, env, 30.0)
        elif rng.random() < 0.02:
            job.restart_elsewhere(t, {0}, env)
        assert booked(job) == pytest.approx(t * g, rel=1e-12), i
        assert (job.buckets >= -1e-9).all()
    assert job.failures > 5 and job.saves > 5 and job.restarts > 5
    job.finish()
    assert job.buckets.sum() == pytest.approx(t * g, rel=1e-12)


# ---- whole runs of the twin -----------------------------------------------------------------------


class Quiet(NamedTuple):
    scenario: Scenario
    job: TrainingJob  # the twin's own job object, after the run
    result: RunResult


@pytest.fixture(scope="module")
def quiet() -> Quiet:
    sc = load(QUIET)
    twin = Twin(build_world(sc, 0), "binary")
    result = twin.run()
    job = twin.jobs[0]
    assert isinstance(job, TrainingJob)
    return Quiet(sc, job, result)


def _expected_saves(sc: Scenario, save_s: float) -> int:
    """Saves a job completes on a timer over the run: interval, save, interval, save, ..."""
    interval, t, n = sc.policies.binary.checkpoint_interval_min * 60.0, 0.0, 0
    while t + interval + save_s <= sc.duration_s:
        t, n = t + interval + save_s, n + 1
    return n


def test_fault_free_run_loses_nothing_but_its_checkpoint_saves(quiet: Quiet) -> None:
    sc, job = quiet.scenario, quiet.job
    spec, sp = sc.jobs[0], sc.physics.storage
    save_s = storage.transfer_seconds(
        spec.checkpoint_gb, sp.write_gbps * float(storage.congestion(sp, np.array(1.0))), 1.0, sp.overhead_s
    )
    assert job.last_save_s == pytest.approx(save_s)  # an idle, healthy backend: the physics formula
    assert job.saves == _expected_saves(sc, save_s) > 0
    res = quiet.result.jobs[0]
    b = dict(zip(Bucket, res.buckets, strict=True))
    assert b[Bucket.CHECKPOINT_SAVE] == pytest.approx(job.saves * save_s * job.gpus, rel=1e-12)
    for lost in (
        Bucket.RESTORE,
        Bucket.ROLLBACK,
        Bucket.RESTART,
        Bucket.QUARANTINE_IDLE,
        Bucket.PLACEMENT_WAIT,
    ):
        assert b[lost] == 0.0, lost
    assert sum(res.buckets) == pytest.approx(res.reserved_gpu_s, rel=1e-12)
    assert res.failures == 0 and res.restarts == 0


def test_fault_free_run_has_ettr_one_minus_checkpoint_overhead(quiet: Quiet) -> None:
    """Also: a GPU cooler than its reference boosts in the real plant as in the fault-free one."""
    res = quiet.result.jobs[0]
    save = res.buckets[Bucket.CHECKPOINT_SAVE]
    assert res.buckets[Bucket.SLOWDOWN] == 0.0
    assert res.buckets[Bucket.PRODUCTIVE] + save == pytest.approx(res.reserved_gpu_s, rel=1e-12)
    assert res.ettr == pytest.approx(1 - save / res.reserved_gpu_s, rel=1e-12)


def test_fault_free_windowed_run_saves_exactly_as_the_full_cadence_run(quiet: Quiet) -> None:
    """Between windows the twin takes 10-minute steps; jobs are exact within any step."""
    sc = load(QUIET, observation={"mode": "windows", "cell_racks": 1})
    twin = Twin(build_world(sc, 0), "binary")
    res = twin.run()
    assert res.engine_ticks == 0  # nothing to watch: only quiet steps
    a, b = quiet.result.jobs[0], res.jobs[0]
    assert b.saves == a.saves
    assert b.buckets[Bucket.CHECKPOINT_SAVE] == pytest.approx(a.buckets[Bucket.CHECKPOINT_SAVE], rel=1e-12)
    assert sum(b.buckets) == pytest.approx(b.reserved_gpu_s, rel=1e-12)


def test_windowed_run_with_faults_books_every_second_for_every_policy() -> None:
    sc = load(WINDOWED)
    for policy in POLICIES:
        res = Twin(build_world(sc, 0), policy).run()
        assert res.engine_ticks < round(sc.duration_s / sc.tick_s)  # really windowed
        train = next(j for j in res.jobs if j.name == "train")
        assert train.restarts > 0, policy  # the faults did reach the job
        for job in res.jobs:
            assert sum(job.buckets) == pytest.approx(job.reserved_gpu_s, rel=1e-9), (policy, job.name)
            assert all(b >= -1e-6 for b in job.buckets), (policy, job.name)
