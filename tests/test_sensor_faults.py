"""Sensor faults are not equipment faults: implausible values and counter resets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from seamguard.config import load_config
from seamguard.control.controller import Controller
from seamguard.model.catalog import SignalKind, catalog_from_rows, signal_catalog
from seamguard.model.states import State
from seamguard.model.topology import Topology
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.store import SENTINEL_THRESHOLD, TelemetryStore
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
