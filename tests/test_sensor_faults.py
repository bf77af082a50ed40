"""Sensor faults are not equipment faults: implausible values, counter resets, flatlined sensors
and readings their physically coupled readings contradict (docs/scoring.md)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from seamguard.config import Config, config_from_mapping, load_config
from seamguard.control.controller import Controller
from seamguard.errors import InputError
from seamguard.model.catalog import SignalKind, catalog_from_rows, signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import JobRecord
from seamguard.model.states import JobClass, State
from seamguard.model.topology import Topology, build_topology
from seamguard.scoring.corroboration import corroborate
from seamguard.scoring.evidence import make_evidence
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.store import SENTINEL_THRESHOLD, TelemetryStore
from tests.conftest import small_inventory
from tests.test_controller import normal_batch

CAT = signal_catalog()
CFG = load_config()
ROOT = Path(__file__).resolve().parents[1]
TICK = 30.0
START = 1000.0


def rows(topo: Topology, samples: list[tuple[str, str, float, float]]) -> TelemetryBatch:
    return TelemetryBatch(
        np.array([topo.index[e] for e, _, _, _ in samples], dtype=np.int64),
        np.array([CAT[s].index for _, s, _, _ in samples], dtype=np.int64),
        np.array([t for _, _, t, _ in samples], dtype=np.float64),
        np.array([v for _, _, _, v in samples], dtype=np.float64),
    )


# ---- physical ranges ------------------------------------------------------------------------------


def test_a_value_outside_its_physical_range_is_missing_and_counted(topology: Topology) -> None:
    store = TelemetryStore(topology, CAT)
    store.ingest(
        30.0,
        rows(topology, [("gpu/n00/0", "gpu.temp_c", 29.0, 61.0), ("gpu/n00/1", "gpu.temp_c", 29.0, 62.0)]),
    )
    rep = store.ingest(
        60.0,
        rows(topology, [
            ("gpu/n00/0", "gpu.temp_c", 59.0, 4294967295.0),  # a driver's UINT32_MAX: not a temperature
            ("gpu/n00/1", "gpu.temp_c", 50.0, 63.0),  # a plausible sample of the same tick still counts...
            ("gpu/n00/1", "gpu.temp_c", 59.0, -273.0),  # ...over a later implausible one
            ("gpu/n00/2", "gpu.util_pct", 59.0, 180.0),
        ]),
    )  # fmt: skip
    assert rep.implausible == 3 and rep.accepted == 1 and rep.sentinel == 0
    temp = store.current("gpu.temp_c")
    assert np.isnan(temp[0])  # missing: not the 61 seen a tick before carried forward
    assert temp[1] == 63.0
    assert np.isnan(store.current("gpu.util_pct")[2])
    assert store.fresh("gpu.temp_c")[1]


def test_what_real_hardware_reports_is_never_implausible(topology: Topology) -> None:
    """Extremes that real GPUs, plants and backends do report stay measurements."""
    extremes = [
        ("gpu/n00/0", "gpu.temp_c", 110.0),  # past the slowdown temperature, before shutdown
        ("gpu/n00/1", "gpu.temp_c", 20.0),
        ("gpu/n00/0", "gpu.mem_temp_c", 105.0),
        ("gpu/n00/1", "gpu.mem_temp_c", 0.0),  # B200/T4 exporters print 0 for an unsupported HBM sensor
        ("gpu/n00/0", "gpu.power_w", 1400.0),  # B300-class board power
        ("gpu/n00/1", "gpu.power_w", 0.0),
        ("gpu/n00/0", "gpu.sm_clock_mhz", 3105.0),
        ("gpu/n00/0", "gpu.mem_clock_mhz", 14001.0),  # GDDR7 as NVML reports it
        ("gpu/n00/0", "gpu.util_pct", 100.0),
        ("gpu/n00/1", "gpu.util_pct", 0.0),
        ("gpu/n00/0", "gpu.fb_used_mib", 274658.0),  # 288 GB of HBM3e
        ("cdu/c0", "cdu.flow_lpm", 0.0),  # a stopped pump reads zero flow
        ("cdu/c0", "cdu.pressure_kpa", -3.0),  # a differential sensor's offset at rest
        ("rack/r0", "rack.power_kw", 140.0),
        ("link/n00", "link.latency_us", 0.9),
        ("storage/ckpt0", "storage.write_latency_ms", 30000.0),  # a hung backend's p99
        ("node/n00", "node.heartbeat_age_s", 86400.0 * 30),  # down for a month
    ]
    store = TelemetryStore(topology, CAT)
    rep = store.ingest(60.0, rows(topology, [(e, s, 59.0, v) for e, s, v in extremes]))
    assert rep.implausible == 0 and rep.accepted == len(extremes)


def test_the_ranges_hold_every_value_in_the_real_exporter_fixtures() -> None:
    """Every gauge value dcgm-exporter prints in tests/fixtures/dcgm (blank sentinels aside),
    mapped as data/dcgm.yaml maps it, lies inside its signal's range."""
    fields = yaml.safe_load((ROOT / "src/seamguard/data/dcgm.yaml").read_text())["fields"]
    sample = re.compile(r"^([A-Z_]+)(?:\{[^}]*\})?\s+(\S+)")
    checked = 0
    for path in sorted((ROOT / "tests/fixtures/dcgm").glob("*.prom")):
        for text in path.read_text().splitlines():
            m = sample.match(text)
            field: dict[str, Any] | None = fields.get(m.group(1)) if m else None
            if m is None or field is None or field.get("role", "value") != "value":
                continue
            for name in {field["signal"], field.get("instance_signal", field["signal"])}:
                sig = CAT[name]
                raw = float(m.group(2))
                if sig.kind is not SignalKind.GAUGE or abs(raw) >= SENTINEL_THRESHOLD:
                    continue
                value = raw * field.get("scale", 1.0) + field.get("offset", 0.0)
                assert sig.range is not None
                assert sig.range[0] <= value <= sig.range[1], f"{path.name}: {text}"
                checked += 1
    assert checked > 200


def test_the_catalog_refuses_a_range_that_is_not_lo_below_hi_or_missing() -> None:
    row = {"name": "gpu.x", "unit": "W", "domain": "compute", "kind": "gauge", "entity": "gpu"}
    assert catalog_from_rows([{**row, "range": [0, 10]}]).signals[0].range == (0.0, 10.0)
    for bad, why in (
        ([10, 10], "lo < hi"),
        ([5, 1], "lo < hi"),
        ([0], r"\[lo, hi\]"),
        (["a", 3], r"\[lo, hi\]"),
        (None, "needs its physical range"),
    ):
        with pytest.raises(ValueError, match=why):
            catalog_from_rows([{**row, "range": bad}])
    with pytest.raises(ValueError, match="only a gauge has a range"):
        catalog_from_rows([{**row, "kind": "counter", "range": [0, 1]}])
    assert all(s.range is not None for s in CAT.signals if s.kind is SignalKind.GAUGE)


# ---- counter resets -------------------------------------------------------------------------------


def test_an_ecc_dbe_counter_reset_is_no_hard_failure_but_a_later_increase_is(topology: Topology) -> None:
    """A driver reload restarts the volatile ECC totals: 3 -> 1 says nothing about how many errors
    came when (taking the 1 as an increase, as Prometheus' rate() does, would fail the GPU on a
    reload). The next increase (1 -> 2) is a new uncorrectable error, a hard failure as ever."""
    ctl = Controller(topology, CFG)
    rng = np.random.default_rng(0)
    gpu = "gpu/n01/2"
    gidx = topology.index[gpu]
    resets = []
    for i, dbe in enumerate((3.0, 3.0, 3.0, 1.0, 1.0)):
        now = START + TICK * (i + 1)
        result = ctl.tick(now, normal_batch(topology, now, rng, overrides={(gpu, "gpu.ecc_dbe_total"): dbe}))
        resets.append(result.ingest.resets)
    assert resets == [0, 0, 0, 1, 0]
    assert ctl.states[gidx] == State.HEALTHY and not ctl.frame.hard_fail[gidx]  # type: ignore[union-attr]
    now = START + TICK * 6
    ctl.tick(now, normal_batch(topology, now, rng, overrides={(gpu, "gpu.ecc_dbe_total"): 2.0}))
    assert ctl.states[gidx] == State.FAILED


# ---- a small facility: 16 CDUs, one rack each -----------------------------------------------------

FACILITY = {"cdu.flow_lpm": 450.0, "cdu.pressure_kpa": 160.0, "cdu.supply_temp_c": 30.0,
            "cdu.return_temp_c": 40.0, "rack.inlet_temp_c": 33.0}  # fmt: skip
STORAGE = {"storage.write_latency_ms": 25.0, "storage.read_latency_ms": 12.0, "storage.throughput_gbps": 8.0}
NOISE = {"storage.write_latency_ms": 0.05, "storage.read_latency_ms": 0.05, "storage.throughput_gbps": 0.02}
Override = Callable[[int, str, str], float | None]  # (tick, entity, signal) -> value, None: normal


def facility() -> Topology:
    inv = small_inventory(nodes=32, gpus=1, racks_per_cdu=1, nodes_per_rack=2)
    nodes = tuple(f"n{i:02d}" for i in range(8))  # cdu c0-c3
    return build_topology(inv, (JobRecord("train", JobClass.SYNC_TRAINING, nodes, 0.0, 1e10),))


def plant_batch(topo: Topology, tick: int, rng: np.random.Generator, override: Override) -> TelemetryBatch:
    """Every CDU, rack and storage gauge at steady values with its sensor noise; ``override`` sets
    exact values (a stuck sensor repeats one value to the digit)."""
    now = START + TICK * tick
    samples = []
    for name, base in {**FACILITY, **STORAGE}.items():
        sig = CAT[name]
        for g in topo.members[sig.entity].tolist():
            eid = topo.ids[g]
            value = override(tick, eid, name)
            if value is None:
                value = (
                    base + 0.12 * rng.normal()
                    if name == "cdu.return_temp_c"
                    else base * (1 + NOISE.get(name, 0.003) * rng.normal())
                )
            samples.append((eid, name, now - 2.0, value))
    return rows(topo, samples)


def run_plant(topo: Topology, config: Config, ticks: int, override: Override) -> tuple[Controller, list[Any]]:
    """(controller, per tick: (transitions, notices))."""
    ctl = Controller(topo, config)
    rng = np.random.default_rng(7)
    out = []
    for tick in range(1, ticks + 1):
        result = ctl.tick(START + TICK * tick, plant_batch(topo, tick, rng, override))
        out.append((result.transitions, result.notices))
    return ctl, out


def states_of(out: list[Any], entity: str) -> list[str]:
    return [t.to_state for transitions, _ in out for t in transitions if t.entity == entity]


def notices_about(out: list[Any], text: str) -> list[tuple[int, str]]:
    return [(tick, n) for tick, (_, notices) in enumerate(out, start=1) for n in notices if text in n]


WARM = 20  # ten minutes of clean history before anything happens


def stuck_flow(tick: int, eid: str, name: str) -> float | None:
    """cdu/c0's flow meter freezes at 360 L/min (20% low) at WARM; the plant runs on unchanged."""
    return 360.0 if eid == "cdu/c0" and name == "cdu.flow_lpm" and tick > WARM else None


def flow_loss(tick: int, eid: str, name: str) -> float | None:
    """cdu/c0's pump loses 20% of its flow over five minutes: flow and head fall together."""
    if eid != "cdu/c0" or name not in ("cdu.flow_lpm", "cdu.pressure_kpa") or tick <= WARM:
        return None
    lost = 0.2 * min((tick - WARM) / 10, 1.0)
    return FACILITY[name] * (1 - lost) * (1 + 0.003 * np.sin(tick))


def without(**removed: str) -> Config:
    """The defaults with ``detectors.<table>.<signal>`` removed."""
    return config_from_mapping({"detectors": {table: {name: None} for table, name in removed.items()}})


# ---- corroboration --------------------------------------------------------------------------------


def test_a_stuck_flow_meter_reading_20pct_low_leaves_its_cdu_healthy() -> None:
    topo = facility()
    ctl, out = run_plant(topo, CFG, WARM + 60, stuck_flow)
    assert states_of(out, "cdu/c0") == []  # never degraded, never quarantined
    said = notices_about(out, "cdu.flow_lpm on cdu/c0 (360 L/min) is not corroborated by cdu.pressure_kpa")
    # once, after it stayed uncorroborated for CLAIM_AFTER_S (ten ticks)
    assert len(said) == 1 and WARM + 10 < said[0][0] <= WARM + 16
    assert ctl.view("cdu/c0").evidence == ()  # explain shows nothing dropped
    # the rule is what keeps it healthy: the same telemetry without it degrades the CDU
    _, unscreened = run_plant(topo, without(corroborate="cdu.flow_lpm"), WARM + 10, stuck_flow)
    assert states_of(unscreened, "cdu/c0")[:1] == ["degraded"]


def test_a_real_flow_loss_with_falling_pressure_still_quarantines_its_cdu() -> None:
    topo = facility()
    ctl, out = run_plant(topo, CFG, WARM + 20, flow_loss)
    assert "quarantine" in states_of(out, "cdu/c0")
    assert not notices_about(out, "not corroborated")
    shown = {item.signal for item in ctl.view("cdu/c0").evidence}
    assert {"cdu.flow_lpm", "cdu.pressure_kpa"} <= shown


def test_a_reading_whose_coupled_readings_are_all_missing_keeps_its_evidence() -> None:
    """Nothing to tell a lying meter from a real loss by: the reading stands."""
    n = 3
    flow = make_evidence("trend", "cdu.flow_lpm", EntityKind.CDU, 0.6, np.array([0.9, 0.9, 0.9]),
                         np.zeros(n), lambda a, b: "")  # fmt: skip
    head = make_evidence("trend", "cdu.pressure_kpa", EntityKind.CDU, 0.4, np.array([0.0, 0.8, 0.0]),
                         np.zeros(n), lambda a, b: "")  # fmt: skip
    # CDU 0: pressure and temperatures reported and quiet; 1: pressure agrees; 2: none reported
    missing = {"cdu.flow_lpm": np.array([False, False, False]),
               "cdu.pressure_kpa": np.array([False, False, True]),
               "cdu.return_temp_c": np.array([False, True, True]),
               "cdu.supply_temp_c": np.array([False, True, True])}  # fmt: skip
    got = corroborate([flow, head], CFG.detectors.corroborate, missing.__getitem__)
    assert got.evidence[0].evidence.tolist() == [0.0, 0.9, 0.9]
    assert got.dropped["cdu.flow_lpm"].tolist() == [True, False, False]
    assert got.evidence[1] is head


def demand_falls(tick: int, eid: str, name: str) -> float | None:
    """Saves end and jobs leave: delivered throughput falls 5%/min for ten minutes while the p99
    latencies stay where they are (the backend is less busy, not slower)."""
    if name != "storage.throughput_gbps":
        return None
    minutes = min(max(tick - WARM, 0), 20) * TICK / 60
    return 8.0 * np.exp(-0.05 * minutes)


def degrading(tick: int, eid: str, name: str) -> float | None:
    """The backend slows: throughput falls 5%/min while the p99 write latency climbs 8%/min."""
    minutes = max(tick - WARM, 0) * TICK / 60
    if name == "storage.throughput_gbps":
        return 8.0 * np.exp(-0.05 * minutes)
    if name == "storage.write_latency_ms":
        return 60.0 * np.exp(0.08 * minutes)
    return None


def test_throughput_falling_with_demand_while_latency_stays_flat_is_load_not_a_fault() -> None:
    topo = facility()
    ctl, out = run_plant(topo, CFG, WARM + 20, demand_falls)
    assert states_of(out, "storage/ckpt0") == []  # no recovery_unsafe, nothing at all
    assert notices_about(out, "storage.throughput_gbps on storage/ckpt0")
    assert ctl.view("storage/ckpt0").evidence == ()
    _, unscreened = run_plant(topo, without(corroborate="storage.throughput_gbps"), WARM + 20, demand_falls)
    assert "recovery_unsafe" in states_of(unscreened, "storage/ckpt0")


def test_throughput_falling_with_write_latency_rising_is_recovery_unsafe() -> None:
    """Twenty minutes of decline, judged on throughput corroborated by the latency's rise."""
    topo = facility()
    _, out = run_plant(topo, CFG, WARM + 40, degrading)
    entered = [t for transitions, _ in out for t in transitions if t.entity == "storage/ckpt0"]
    assert [t.to_state for t in entered][:1] == ["recovery_unsafe"]
    # the throughput trend counts, corroborated by the latency moving up while the latency's own
    # trend is still held back by its load gate (twice the backend's usual level)
    assert "storage.throughput_gbps" in {i.signal for i in entered[0].evidence}
    assert not notices_about(out, "not corroborated")


# ---- flatlines ------------------------------------------------------------------------------------


def test_a_flatlined_reading_is_missing_for_every_detector_until_it_moves() -> None:
    """Without corroboration, only the flatline rule stands between a meter stuck 20% low and the
    CDU's score: from the limit on, the reading gives no evidence at all. With a limit shorter
    than the trend window, the step into the stuck value is still in the trend's history: the
    trend must not count it either."""
    topo = facility()
    limit = 300.0
    assert limit < CFG.scores.trend_window_s
    stuck_ticks = int(limit // TICK)
    config = config_from_mapping(
        {"detectors": {"corroborate": {"cdu.flow_lpm": None}, "flatline": {"cdu.flow_lpm": limit}}}
    )
    ctl = Controller(topo, config)
    rng = np.random.default_rng(3)
    c0 = int(topo.local[topo.index["cdu/c0"]])
    peer: list[float] = []
    trend: list[float] = []
    for tick in range(1, WARM + stuck_ticks + 6):
        ctl.tick(START + TICK * tick, plant_batch(topo, tick, rng, stuck_flow))
        assert ctl.frame is not None
        found = {
            ev.detector: float(ev.evidence[c0]) for ev in ctl.frame.evidence if ev.signal == "cdu.flow_lpm"
        }
        peer.append(found["peer"])
        trend.append(found["trend"])
    stuck = slice(WARM + 2, WARM + stuck_ticks - 1)
    assert min(peer[stuck]) > 0.1 and max(trend[stuck]) > 0.2  # 10% below its peers, a step: believed...
    flat = slice(WARM + stuck_ticks + 1, None)
    assert max(peer[flat]) == 0.0 and max(trend[flat]) == 0.0  # ...until it has not moved for the limit
    assert np.isnan(ctl.store.current("cdu.flow_lpm")[c0])
    assert np.isfinite(ctl.store.current("cdu.flow_lpm")[c0 + 1])  # its peers still read
    # it moves: a reading again
    tick = WARM + stuck_ticks + 6
    ctl.tick(START + TICK * tick, plant_batch(topo, tick, rng, lambda *_: None))
    assert ctl.store.current("cdu.flow_lpm")[c0] == pytest.approx(450.0, rel=0.02)


def test_a_flatline_is_announced_once_and_clears_when_the_value_moves() -> None:
    topo = facility()
    limit = CFG.detectors.flatline["cdu.flow_lpm"]
    stuck_until = WARM + int(limit // TICK) + 10
    resumed_at = stuck_until + 5

    def stuck_then_moving_then_stuck(tick: int, eid: str, name: str) -> float | None:
        if eid != "cdu/c0" or name != "cdu.flow_lpm" or tick <= WARM:
            return None
        if tick <= stuck_until:
            return 405.0
        return None if tick < resumed_at else 448.5  # moves, then sticks again

    ticks = resumed_at + int(limit // TICK) + 4
    ctl, out = run_plant(topo, CFG, ticks, stuck_then_moving_then_stuck)
    said = notices_about(out, "cdu.flow_lpm flatlined on cdu/c0")
    assert [tick for tick, _ in said] == [WARM + 1 + int(limit // TICK), resumed_at + int(limit // TICK)]
    assert re.search(r"cdu/c0 at 405 L/min for 9\d\d s", said[0][1])
    assert "at 448.5 L/min" in said[1][1]
    flat, _, _ = ctl.store.flatlined("cdu.flow_lpm")
    assert flat[topo.local[topo.index["cdu/c0"]]] and flat.sum() == 1
    assert states_of(out, "cdu/c0") == []


def test_many_flatlines_at_once_are_one_bounded_notice() -> None:
    """A BMS that freezes every CDU's register at once: one notice naming three, counting the rest."""
    topo = facility()

    def frozen(tick: int, eid: str, name: str) -> float | None:
        return 437.0 + int(eid.removeprefix("cdu/c")) if name == "cdu.flow_lpm" else None

    _, out = run_plant(topo, CFG, int(CFG.detectors.flatline["cdu.flow_lpm"] // TICK) + 3, frozen)
    said = notices_about(out, "cdu.flow_lpm flatlined")
    assert len(said) == 1
    assert "on 16 cdus: cdu/c0 at 437 L/min" in said[0][1] and "and 13 more" in said[0][1]
    assert said[0][1].count("cdu/") == 3


# ---- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("detectors", "expect"),
    [
        ({"flatline": {"gpu.ecc_sbe_total": 600}}, "is a counter, expected gauge"),
        ({"flatline": {"cdu.flow_lpm": 0}}, "greater than 0"),
        ({"corroborate": {"cdu.flow_lpm": ["rack.inlet_temp_c"]}}, "another signal of the same cdu"),
        ({"corroborate": {"cdu.flow_lpm": ["cdu.flow_lpm"]}}, "another signal of the same cdu"),
        ({"corroborate": {"cdu.flow_lpm": []}}, "at least one coupled signal"),
        ({"corroborate": {"cdu.flow_lpm": ["cdu.pump_rpm"]}}, "unknown signal 'cdu.pump_rpm'"),
    ],
)
def test_sensor_fault_settings_are_checked_at_load(detectors: dict[str, Any], expect: str) -> None:
    with pytest.raises(InputError, match=re.escape(expect)):
        config_from_mapping({"detectors": detectors})


def test_docs_list_every_gauge_range_as_the_catalog_has_it() -> None:
    doc = (ROOT / "docs" / "signals.md").read_text()
    for sig in CAT.signals:
        row = next(line for line in doc.splitlines() if line.startswith(f"| `{sig.name}` |"))
        cell = row.split("|")[5].strip()
        if sig.range is None:
            assert cell == "", sig.name
        else:
            lo, hi = (float(x.replace("−", "-")) for x in cell.split(" … "))
            assert (lo, hi) == sig.range, sig.name
