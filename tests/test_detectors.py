from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from seamguard.config import EconomicsConfig, config_from_mapping, load_config
from seamguard.control.controller import Controller
from seamguard.economics.harm import straggler_harm
from seamguard.model.catalog import signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.model.states import State
from seamguard.model.topology import Topology, build_topology
from seamguard.scoring import detectors
from seamguard.scoring.events import XidMemory, heartbeat
from seamguard.scoring.evidence import Evidence, make_evidence
from seamguard.scoring.gfs import combine, contributions
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.store import TickEvents
from tests.conftest import small_inventory

CFG = load_config()
CAT = signal_catalog()
DET = CFG.detectors


def test_level_soft_limits_and_nan() -> None:
    rule = DET.level["gpu.temp_c"]
    ev = detectors.level(
        CAT["gpu.temp_c"], rule, np.array([70.0, rule.warn, (rule.warn + rule.crit) / 2, 200.0, np.nan])
    )
    assert ev.evidence.tolist() == [0.0, 0.0, 0.5, 1.0, 0.0]
    assert "above its soft limit of" in ev.describe(3)


def _ring(values_per_min: list[float], tick_s: float = 30.0) -> tuple[np.ndarray, np.ndarray, float]:
    vals = np.array(values_per_min, dtype=float)
    ts = np.arange(vals.size) * tick_s
    return ts, vals[:, None], float(ts[-1])


def test_trend_measures_rising_temperature() -> None:
    minutes = np.arange(20) * 0.5
    ts, ring, now = _ring(list(70 + 0.8 * minutes))
    slope, se = detectors.weighted_slope(ts, ring, now, window_s=600, halflife_s=300, min_points=6, log=False)
    assert np.isclose(slope[0], 0.8)
    assert se[0] < 1e-6  # a straight line has no noise to doubt it by
    ev = detectors.trend(CAT["gpu.temp_c"], DET.trend["gpu.temp_c"], slope, se, 3.0, ring.min(axis=0) > 69)
    assert ev.evidence[0] > 0 and "+0.80" in ev.describe(0)


def test_warming_up_to_working_temperature_is_load_not_a_trend(topology: Topology) -> None:
    """A job starting heats idle GPUs by degrees a minute; a trend counts only once the GPU has
    stayed past the rule's `beyond` for the whole trend window (the engine checks the window)."""
    cfg = load_config()
    rule = cfg.detectors.trend["gpu.temp_c"]
    assert rule.beyond is not None
    gidx = topology.index["gpu/n01/2"]
    sig = CAT["gpu.temp_c"].index

    def run(start_c: float) -> float:
        ctl = Controller(topology, cfg)
        for i in range(20):  # ten minutes rising 3 °C/min
            now = 1000.0 + 30 * (i + 1)
            batch = TelemetryBatch(
                np.array([gidx]), np.array([sig]), np.array([now - 1]), np.array([start_c + 1.5 * i])
            )
            ctl.tick(now, batch)
        frame = ctl.frame
        assert frame is not None
        found = [c for c in contributions(frame.evidence, topology, gidx) if c.detector == "trend"]
        return max((c.score for c in found), default=0.0)

    assert run(40.0) == 0.0  # 40 -> 68.5 °C: warming up to work
    assert run(rule.beyond + 1.0) > 0.0  # the same slope past the floor all along


def test_trend_ignores_diurnal_swing_and_noise() -> None:
    rng = np.random.default_rng(1)
    t_s = np.arange(20) * 30.0 + 6 * 3600  # steepest part of the daily sinusoid
    inlet = 33 + 0.75 * np.sin(2 * np.pi * t_s / 86400) + rng.normal(0, 0.15, t_s.size)
    slope, se = detectors.weighted_slope(
        t_s, inlet[:, None], float(t_s[-1]), window_s=600, halflife_s=300, min_points=6, log=False
    )
    ev = detectors.trend(CAT["rack.inlet_temp_c"], DET.trend["rack.inlet_temp_c"], slope, se, 3.0)
    assert ev.evidence[0] == 0.0


def test_trend_needs_enough_points_and_skips_nan() -> None:
    ts = np.arange(20) * 30.0
    vals = np.full((20, 1), np.nan)
    vals[-3:, 0] = [1.0, 2.0, 3.0]
    slope, _se = detectors.weighted_slope(
        ts, vals, float(ts[-1]), window_s=600, halflife_s=300, min_points=6, log=False
    )
    assert np.isnan(slope[0])


def test_peer_flags_straggler_not_same_sku_spread() -> None:
    rng = np.random.default_rng(0)
    step = 2.0 * rng.normal(1.0, 0.01, 64)
    step[5] = 2.0 * 1.30  # PCIe downtrain straggler
    step[9] = 2.0 * 1.08  # the known same-SKU spread: not a fault
    groups = np.zeros(64, dtype=np.int64)
    ev = detectors.peer(CAT["gpu.step_time_s"], DET.peer["gpu.step_time_s"], step, groups, 1)
    assert ev.evidence[5] > 0.3
    assert ev.evidence[9] == 0.0
    assert "above its job's peers" in ev.describe(5)


def test_peer_needs_a_cohort() -> None:
    step = np.array([1.0, 1.0, 3.0])
    ev = detectors.peer(
        CAT["gpu.step_time_s"], DET.peer["gpu.step_time_s"], step, np.zeros(3, dtype=np.int64), 1
    )
    assert not ev.evidence.any()  # cohort of 3 is below min_cohort


def test_counter_rate_units() -> None:
    rule = DET.counter["gpu.ecc_sbe_total"]
    ev = detectors.counter_rate(CAT["gpu.ecc_sbe_total"], rule, np.array([0.0, 1000 / 3600, np.nan]))
    assert ev.evidence[0] == 0 and ev.evidence[1] == 1.0 and ev.evidence[2] == 0
    assert "/h" in ev.describe(1)


def test_throttle_benign_bits_are_not_evidence() -> None:
    masks = np.array([0x1, 0x4, 0x10, 0x1 | 0x4 | 0x10, 0x40, 0x40 | 0x4, np.nan])
    ev = detectors.throttle(CAT["gpu.throttle_reasons"], DET.throttle, masks)
    assert ev.evidence[:4].tolist() == [0, 0, 0, 0]
    assert np.isclose(ev.evidence[4], DET.throttle.bits["hw_thermal"])
    assert np.isclose(ev.evidence[5], ev.evidence[4])
    assert ev.evidence[6] == 0
    assert ev.describe(4) == "hw_thermal throttle bit set"


def test_xid_floor_memory_and_app_errors() -> None:
    mem = XidMemory.create(4, DET.xid)
    events = TickEvents(
        local=np.array([0, 1, 2]), code=np.array([48, 13, 74]), timestamp=np.array([1.0, 1.0, 1.0])
    )
    ev, floor = mem.update(CAT["gpu.xid"], 30.0, events)
    assert floor.tolist() == [int(State.FAILED), -1, int(State.QUARANTINE), -1]
    assert ev.evidence[1] == 0.0  # XID 13 is the application's fault
    assert "double-bit" in ev.describe(0)
    ev2, floor2 = mem.update(CAT["gpu.xid"], 30.0 + DET.xid.decay_halflife_s, None)
    assert (floor2 == -1).all()
    assert np.isclose(ev2.evidence[2], ev.evidence[2] / 2)


def test_stale_heartbeat_fails_unless_everyone_is_stale() -> None:
    hb = DET.heartbeat
    sig = CAT["node.heartbeat_age_s"]
    age = np.full(10, 3.0)
    age[3] = hb.fail_after_s + 1
    v = heartbeat(sig, hb, age)
    assert v.hard_fail.tolist() == [i == 3 for i in range(10)]
    assert "heartbeat" in v.evidence.describe(3)
    v2 = heartbeat(sig, hb, np.full(10, hb.fail_after_s + 1))
    assert v2.mass_stale and not v2.hard_fail.any()
    # a missing sample is lost telemetry: never extrapolated into an age, never failed
    missing = heartbeat(sig, hb, np.full(10, np.nan))
    assert not missing.hard_fail.any() and not missing.evidence.evidence.any()


@given(
    st.lists(st.floats(0, 1), min_size=1, max_size=6), st.lists(st.floats(0.05, 1), min_size=6, max_size=6)
)
def test_noisy_or_is_bounded_and_monotone(evs: list[float], weights: list[float]) -> None:
    topo = build_topology(small_inventory())
    n = topo.count(CAT["gpu.temp_c"].entity)
    items = [
        make_evidence(
            "t", "gpu.temp_c", CAT["gpu.temp_c"].entity, w, np.full(n, e), np.zeros(n), lambda a, b: ""
        )
        for e, w in zip(evs, weights, strict=False)
    ]
    gfs = combine(items, topo).gfs
    more = combine([*items, items[0]], topo).gfs
    assert (gfs >= 0).all() and (gfs <= 1).all()
    assert (more >= gfs - 1e-12).all()
    assert gfs.max() >= max(w * e for e, w in zip(evs, weights, strict=False)) - 1e-9


def test_harm_only_for_the_slowest_rank_of_a_sync_job() -> None:
    econ = CFG.economics
    step = np.full(256, 2.0)
    step[7] = 2.4  # 20% slow rank in a 256-GPU synchronous job
    step[200:] = np.nan
    gpu_job = np.zeros(256, dtype=np.int64)
    harm = straggler_harm(step, gpu_job, np.array([True]), np.array([256.0]), econ)
    assert harm.ratio[7] > econ.harmful_enter_ratio
    assert (np.delete(harm.ratio, 7) == 0).all()
    async_harm = straggler_harm(step, gpu_job, np.array([False]), np.array([256.0]), econ)
    assert not async_harm.ratio.any()  # no amplification, no harm


def test_harm_spares_the_natural_slowest_rank_but_not_an_outlier() -> None:
    econ = CFG.economics
    rng = np.random.default_rng(5)
    speeds = 1 + rng.normal(0, econ.sku_spread, 8)
    speeds[3] = 1.045  # the job's naturally slowest rank: 3 sigma out, far from the runner-up
    speeds[np.arange(8) != 3] = np.clip(speeds[np.arange(8) != 3], 0.98, 1.01)
    step = 2.0 * speeds
    gpu_job = np.zeros(8, dtype=np.int64)
    natural = straggler_harm(step, gpu_job, np.array([True]), np.array([8.0]), econ)
    gap = (step[3] - np.delete(step, 3).max()) / step[3] * 8
    assert (
        gap / (econ.restart_cost_s * 8 / econ.horizon_s) > econ.harmful_enter_ratio
    )  # the gap alone would do
    assert natural.ratio[3] == 0 and natural.stragglers[3] == 0  # but it is within the known same-SKU spread
    step[3] = 2.0 * 1.12
    outlier = straggler_harm(step, gpu_job, np.array([True]), np.array([8.0]), econ)
    assert outlier.ratio[3] > econ.harmful_enter_ratio


def test_two_equal_stragglers_are_both_harmful() -> None:
    econ = CFG.economics
    step = np.full(64, 2.0)
    step[[5, 40]] = 2.3
    harm = straggler_harm(step, np.zeros(64, dtype=np.int64), np.array([True]), np.array([64.0]), econ)
    assert harm.ratio[5] == harm.ratio[40] > econ.harmful_enter_ratio
    assert harm.stragglers[5] == 2 and (np.delete(harm.ratio, [5, 40]) == 0).all()
    evenly = straggler_harm(
        np.full(64, 2.3), np.zeros(64, dtype=np.int64), np.array([True]), np.array([64.0]), econ
    )
    assert not evenly.ratio.any()  # an evenly slow job has nothing to swap


def _gpu_evidence(
    topo: Topology, name: str, weight: float, at: dict[int, float], recovery: bool = False
) -> Evidence:
    n = topo.count(EntityKind.GPU)
    e = np.zeros(n)
    for i, v in at.items():
        e[i] = v
    return Evidence(
        name, "gpu.temp_c", EntityKind.GPU, weight, e, e * 100, np.zeros(n), lambda m, x: f"{m:g}", recovery
    )


def test_noisy_or_combines_every_piece_and_the_recovery_share_apart() -> None:
    topo = build_topology(small_inventory())
    g0 = int(topo.members[EntityKind.GPU][0])
    empty = Evidence(
        "none", "gpu.temp_c", EntityKind.GPU, 1.0, np.zeros(0), np.zeros(0), np.zeros(0), lambda m, x: ""
    )
    items = [
        empty,  # a detector with nothing to say does not end the combination
        _gpu_evidence(topo, "a", 0.5, {0: 0.4}, recovery=True),
        _gpu_evidence(topo, "b", 1.0, {0: 0.5}, recovery=True),
        _gpu_evidence(topo, "c", 1.0, {0: 0.3}),
    ]
    combined = combine(items, topo)
    gfs, rec = combined.gfs, combined.recovery
    assert gfs[g0] == pytest.approx(1 - 0.8 * 0.5 * 0.7, rel=1e-12)
    assert rec[g0] == pytest.approx(1 - 0.8 * 0.5, rel=1e-12)  # the two recovery-path pieces only


def test_the_precursor_score_combines_only_the_precursor_signals() -> None:
    """What the hazard reads: an ECC storm counts, a throttled clock on the same GPU does not."""
    topo = build_topology(small_inventory())
    g0 = int(topo.members[EntityKind.GPU][0])
    ecc = replace(_gpu_evidence(topo, "counter", 0.6, {0: 0.5}), signal="gpu.ecc_sbe_total")
    clock = replace(_gpu_evidence(topo, "peer", 0.6, {0: 1.0}), signal="gpu.sm_clock_mhz")
    combined = combine([ecc, clock], topo, frozenset({"gpu.ecc_sbe_total"}))
    assert combined.precursor[g0] == pytest.approx(0.3, rel=1e-12)
    assert combined.gfs[g0] == pytest.approx(1 - 0.7 * 0.4, rel=1e-12)
    assert not combine([ecc, clock], topo).precursor.any()  # no precursors named: nothing raises a rate
    hot = replace(_gpu_evidence(topo, "level", 0.8, {0: 0.5}), signal="gpu.temp_c")
    warming = replace(_gpu_evidence(topo, "trend", 0.4, {0: 1.0}), signal="gpu.temp_c")
    one_rule = combine([hot, warming], topo, frozenset({"level:gpu.temp_c"})).precursor
    assert one_rule[g0] == pytest.approx(0.4, rel=1e-12)  # the level rule's evidence, not the trend's


def test_contributions_are_the_strongest_first_from_the_floor_up_at_most_four() -> None:
    topo = build_topology(small_inventory())
    g1 = int(topo.members[EntityKind.GPU][1])
    items = [
        _gpu_evidence(topo, f"d{k}", 0.5, {1: v}) for k, v in enumerate((0.02, 0.4, 0.019, 1.0, 0.6, 0.2))
    ]
    short = Evidence(
        "short", "gpu.temp_c", EntityKind.GPU, 1.0, np.ones(1), np.ones(1), np.ones(1), lambda m, x: ""
    )
    found = contributions([*items, short], topo, g1)  # ``short`` has no value for GPU 1: skipped
    assert [(c.detector, c.score) for c in found] == [("d3", 0.5), ("d4", 0.3), ("d1", 0.2), ("d5", 0.1)]
    everything = contributions(items, topo, g1, limit=10)
    assert [c.detector for c in everything][-1] == "d0"  # 0.5 x 0.02 = 0.01: at the floor, kept
    assert "d2" not in [c.detector for c in everything]  # just under it


def _econ(**update: float) -> EconomicsConfig:
    """Round thresholds so that the values below sit exactly on them: restart 600 s over a 1 h horizon."""
    base = {
        "min_slowdown": 0.1,
        "min_z": 1.0,
        "sku_spread": 0.01,
        "restart_cost_s": 600.0,
        "horizon_s": 3600.0,
    }
    return CFG.economics.model_copy(update={**base, **update})


def test_harm_per_gpu_in_two_synchronous_jobs_and_outside_any() -> None:
    """job 0: four ranks at 1.0 s; job 1: three at 2.0 s and one at 3.0 s; GPU 8 in no job.
    GPU 7 is 50% slow (z = 1.0 / (1% x 2.0) = 50); swapping it gains (3 - 2) / 3 x 4 GPUs = 4/3
    against 600 s x 4 GPUs / 3600 s = 2/3: ratio 2."""
    step = np.array([1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 2.0])
    gpu_job = np.array([0, 0, 0, 0, 1, 1, 1, 1, -1], dtype=np.int64)
    h = straggler_harm(step, gpu_job, np.array([True, True]), np.array([4.0, 4.0]), _econ())
    assert h.slowdown[:8].tolist() == [0.0] * 7 + [0.5] and np.isnan(h.slowdown[8])
    assert h.gain_gpus.tolist() == pytest.approx([0.0] * 7 + [4 / 3, 0.0])
    assert h.cost_gpus.tolist() == pytest.approx([0.0] * 7 + [2 / 3, 0.0])
    assert h.ratio.tolist() == pytest.approx([0.0] * 7 + [2.0, 0.0])
    assert h.stragglers.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 0]


@pytest.mark.parametrize(
    ("slow", "econ"),
    [
        (2.5, {"min_slowdown": 0.25, "min_z": 0.5, "sku_spread": 0.25}),  # slowdown 0.25, exactly the minimum
        (
            2.5,
            {"min_slowdown": 0.1, "min_z": 1.0, "sku_spread": 0.25},
        ),  # z = 0.5 / (25% x 2.0) = 1.0, exactly
    ],
)
def test_a_rank_exactly_on_a_threshold_is_a_straggler(slow: float, econ: dict[str, float]) -> None:
    step = np.array([2.0] * 7 + [slow])
    h = straggler_harm(step, np.zeros(8, dtype=np.int64), np.array([True]), np.array([8.0]), _econ(**econ))
    assert h.stragglers.tolist() == [1] * 8 and h.ratio[7] > 0


def test_the_peer_spread_is_the_mad_scaled_by_1_4826() -> None:
    """Nine ranks: median 2.2, MAD 0.2, so sigma = 0.2965 and the 3.0 s rank sits z = 2.7 out: a
    straggler at min_z = 2 (with 2.48 x MAD it would be 1.6, not one)."""
    step = np.array([2.0] * 4 + [2.2] * 4 + [3.0])
    h = straggler_harm(
        step,
        np.zeros(9, dtype=np.int64),
        np.array([True]),
        np.array([9.0]),
        _econ(min_z=2.0, sku_spread=0.001),
    )
    assert h.ratio[8] > 0 and h.stragglers[8] == 1


def test_an_evenly_slow_job_and_a_fleet_without_jobs_have_no_harm() -> None:
    even = straggler_harm(np.full(4, 2.0), np.zeros(4, dtype=np.int64), np.array([True]), np.array([4.0]),
                          _econ(min_slowdown=0.0, min_z=0.0))  # fmt: skip
    assert (
        even.ratio.tolist() == [0.0] * 4 and even.gain_gpus.tolist() == [0.0] * 4
    )  # every rank "slow": none is
    for gpu_job, sync in (
        (np.full(4, -1, dtype=np.int64), np.zeros(0, dtype=bool)),
        (np.zeros(4, dtype=np.int64), np.array([True])),
    ):
        step = np.full(4, np.nan) if sync.size else np.full(4, 2.0)  # no job, or no valid step time
        none = straggler_harm(step, gpu_job, sync, np.full(sync.size, 4.0), _econ())
        assert none.ratio.tolist() == none.gain_gpus.tolist() == none.cost_gpus.tolist() == [0.0] * 4
        assert none.stragglers.tolist() == [0] * 4 and np.isnan(none.slowdown).all()


def _cdu_run(topology: Topology, cfg: object, flow_share: list[float], glitch_at: int = -1) -> Controller:
    """Two CDUs read every 30 s; ``flow_share``: cdu/c0's flow and head, per tick, as a share of
    the 450 L/min and 200 kPa both CDUs run at (cdu/c1 stays there). Temperatures stay put.
    ``glitch_at``: the tick at which cdu/c0's pressure transmitter reads 0 kPa, once."""
    ctl = Controller(topology, cfg)  # type: ignore[arg-type]
    cdus = np.array([topology.index["cdu/c0"], topology.index["cdu/c1"]])
    names = ("cdu.flow_lpm", "cdu.pressure_kpa", "cdu.supply_temp_c", "cdu.return_temp_c")
    sigs = np.repeat([CAT[n].index for n in names], 2)
    rng = np.random.default_rng(7)
    for i, share in enumerate(flow_share):
        now = 1000.0 + 30.0 * (i + 1)
        jitter = 1 + 0.003 * rng.standard_normal(8)
        vals = np.array([450 * share, 450, 200 * share, 200, 30, 30, 40, 40]) * jitter
        vals[2] = 0.0 if i == glitch_at else vals[2]
        ctl.tick(now, TelemetryBatch(np.tile(cdus, 4), sigs, np.full(8, now - 1), vals))
    return ctl


def _usual_score(ctl: Controller, topology: Topology, detector: str = "usual") -> float:
    frame = ctl.frame
    assert frame is not None
    found = contributions(frame.evidence, topology, topology.index["cdu/c0"])
    return max((c.score for c in found if c.detector == detector), default=0.0)


def test_a_cdu_flow_loss_that_stopped_falling_stays_evidence_against_its_own_usual_level(
    topology: Topology,
) -> None:
    """Two CDUs are no cohort (peer needs four). cdu/c0 runs an hour at its usual flow, loses 70%
    of it over ten minutes, then holds there: half an hour later the trend sees nothing, and only
    the usual rule still says the CDU is not what it was (flow corroborated by head); without it
    the CDU would read healthy and its work go back."""
    ramp = [1.0 - 0.7 * k / 20 for k in range(20)]
    shares = [1.0] * 120 + ramp + [0.3] * 60
    cfg = load_config()
    ctl = _cdu_run(topology, cfg, shares)
    assert _usual_score(ctl, topology) > 0.5
    assert _usual_score(ctl, topology, "trend") == 0.0
    c0 = topology.index["cdu/c0"]
    assert ctl.classifier.state[c0] != int(State.HEALTHY)
    assert ctl.classifier.state[topology.index["cdu/c1"]] == int(State.HEALTHY)
    plain = config_from_mapping({"detectors": {"usual": {"cdu.flow_lpm": None, "cdu.pressure_kpa": None}}})
    assert _cdu_run(topology, plain, shares).classifier.state[c0] == int(State.HEALTHY)


def test_one_impossible_pressure_reading_is_the_transmitter_not_the_pump(topology: Topology) -> None:
    """A single 0 kPa reading is 100% below the CDU's usual head; flow and temperatures say
    nothing, so the reading is not believed (corroboration) and the CDU stays healthy."""
    ctl = _cdu_run(topology, load_config(), [1.0] * 120, glitch_at=119)
    assert ctl.classifier.state[topology.index["cdu/c0"]] == int(State.HEALTHY)
    frame = ctl.frame
    assert frame is not None and frame.gfs[topology.index["cdu/c0"]] < 0.05


def test_a_flow_lowered_on_purpose_becomes_the_usual_within_hours(topology: Topology) -> None:
    """A setpoint lowered by 20% is a change, not a fault: it gives evidence at first, and the
    usual level (learnt from every reading, half-life 6 h) has taken it in four hours later."""
    shares = [1.0] * 120 + [0.8] * (4 * 120)
    cfg = load_config()
    first = _cdu_run(topology, cfg, shares[: 120 + 10])
    assert _usual_score(first, topology) > 0.0
    later = _cdu_run(topology, cfg, shares)
    assert _usual_score(later, topology) == 0.0


def test_the_usual_rule_reads_shares_of_the_entity_s_own_level() -> None:
    rule = DET.usual["cdu.flow_lpm"]
    usual = np.array([450.0, 450.0, 450.0, 450.0, np.nan])
    value = np.array([450.0, 450 * (1 - rule.warn), 450 * (1 - (rule.warn + rule.crit) / 2), 10.0, 100.0])
    ev = detectors.own_usual(CAT["cdu.flow_lpm"], rule, value, usual)
    assert ev.evidence == pytest.approx([0.0, 0.0, 0.5, 1.0, 0.0])
    assert "98% below its own usual 450 L/min" in ev.describe(3)
