"""The facilities source against the twin's real pymodbus server on loopback.

Every read goes through TCP: the twin's server encodes the plant's values into registers,
the source reads and decodes them. Raw registers are cross-checked against pymodbus's own
conversion, so the two halves cannot agree on a wrong encoding.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from pymodbus.client import ModbusTcpClient

from seamguard.errors import InputError
from seamguard.model.catalog import signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.base import Collected
from seamguard.telemetry.sources.modbus import ModbusSource
from seamguard.telemetry.sources.registers import (
    MAX_READ_REGISTERS,
    ModbusConfig,
    ModbusDevice,
    RegisterPoint,
    decode,
    encode,
    load_register_map,
    plan_blocks,
    point_arrays,
)
from seamguard.twin.modbus_server import TwinModbusServer, retarget, twin_register_map
from seamguard.twin.scenario import scenario_from_mapping
from seamguard.twin.sim import Twin
from seamguard.twin.world import build_world

CAT = signal_catalog()
HOST = "127.0.0.1"
# Two CDUs with two racks each; no dropout and no DCGM sentinels, so every tick has every value.
SCENARIO: dict[str, Any] = {
    "name": "bms",
    "duration_h": 0.1,
    "cluster": {"cdus": 2, "racks_per_cdu": 2, "nodes_per_rack": 2, "gpus_per_node": 4},
    "jobs": [{"name": "train", "class": "sync_training", "nodes": 4}],
    "observation": {"dropout": 0.0, "sentinel_rate": 0.0},
}
# Worst-case read-back error of the twin map's points: float32, S7 counts over 0..400 kPa,
# hundredths of a degree, µA over 0..100 °C.
RESOLUTION = {
    "cdu.flow_lpm": 1e-4,
    "cdu.pressure_kpa": 400.0 / 27648 / 2 + 1e-9,
    "cdu.supply_temp_c": 0.005 + 1e-9,
    "cdu.return_temp_c": 0.005 + 1e-9,
    "rack.inlet_temp_c": 100.0 / 16000 / 2 + 1e-9,
}


def values_of(c: Collected, topo: Topology) -> dict[tuple[str, str], float]:
    names = CAT.names()
    return {
        (topo.ids[e], names[s]): float(v)
        for e, s, v in zip(
            c.batch.entity.tolist(), c.batch.signal.tolist(), c.batch.value.tolist(), strict=True
        )
    }


def latest(batch: TelemetryBatch, topo: Topology) -> dict[tuple[str, str], float]:
    names = CAT.names()
    out: dict[tuple[str, str], float] = {}
    for i in np.argsort(batch.timestamp, kind="stable").tolist():
        out[(topo.ids[int(batch.entity[i])], names[int(batch.signal[i])])] = float(batch.value[i])
    return out


def free_closed_port() -> int:
    s = socket.socket()
    s.bind((HOST, 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def device(name: str, port: int, points: Sequence[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return {"name": name, "host": HOST, "port": port, "points": list(points), **kw}


@pytest.fixture
def topo() -> Topology:
    return build_world(scenario_from_mapping(SCENARIO), 0).topology


@pytest.fixture
def twin_server(topo: Topology) -> Iterator[TwinModbusServer]:
    """The twin map served with plausible values everywhere (until set, loops show a failed transmitter)."""
    cfg = twin_register_map(topo)
    plausible = {"cdu.flow_lpm": 450.0, "cdu.pressure_kpa": 160.0, "cdu.supply_temp_c": 30.0,
                 "cdu.return_temp_c": 40.0, "rack.inlet_temp_c": 33.0}  # fmt: skip
    with TwinModbusServer(cfg, HOST, 0) as srv:
        srv.set_values({(p.entity, p.signal): plausible[p.signal] for d in cfg.devices for p in d.points})
        yield srv


# ---- the twin's values, served and read back ---------------------------------------------------


class Recorder:
    """Wraps a twin policy and keeps the telemetry it is shown."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.batches: list[TelemetryBatch] = []

    def observe(self, now: float, batches: Sequence[tuple[int, TelemetryBatch]], view: Any) -> Any:
        self.batches.append(TelemetryBatch.concat([b for _, b in batches]))
        return self._inner.observe(now, batches, view)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_twin_server_serves_the_plant_as_it_advances_and_the_source_reads_it_back() -> None:
    world = build_world(scenario_from_mapping(SCENARIO), 0)
    topo = world.topology
    twin = Twin(world, "binary")
    rec = Recorder(twin.policy)
    twin.policy = rec
    cfg = twin_register_map(topo)
    seen: list[dict[tuple[str, str], float]] = []
    with TwinModbusServer(cfg, HOST, 0) as srv, ModbusSource(retarget(cfg, HOST, srv.port), topo) as src:

        def step(t: float) -> None:
            srv.update_from_batch(rec.batches[-1], topo)
            got = src.collect(t)
            assert got.notices == ()
            assert got.unknown == {}
            assert np.all(got.batch.timestamp == t)
            want = {k: v for k, v in latest(rec.batches[-1], topo).items() if k[1] in RESOLUTION}
            read = values_of(got, topo)
            assert set(read) == set(want)
            for key, value in want.items():
                assert read[key] == pytest.approx(value, abs=RESOLUTION[key[1]], rel=1e-6), key
            seen.append(read)

        twin.run(step)
    assert len(seen) >= 10
    n_points = 4 * topo.count(EntityKind.CDU) + topo.count(EntityKind.RACK)
    assert all(len(s) == n_points for s in seen)
    flows = [s[("cdu/cdu0", "cdu.flow_lpm")] for s in seen]
    assert len(set(flows)) > 1  # the registers follow the twin, tick by tick


def test_twin_map_one_device_per_cdu_with_the_racks_it_cools(topo: Topology) -> None:
    cfg = twin_register_map(topo, port=1502)
    assert [d.unit for d in cfg.devices] == [1, 2]
    for c, dev in enumerate(cfg.devices):
        racks = {p.entity for p in dev.points if p.signal == "rack.inlet_temp_c"}
        cooled = {f"rack/{topo.names[EntityKind.RACK][r]}" for r in np.flatnonzero(topo.rack_cdu == c)}
        assert racks == cooled
        assert len(plan_blocks(dev)) == 2  # the CDU's holding registers and the rack inlets: one read each


# ---- register types and word order ----------------------------------------------------------


TYPED = [
    {"entity": "cdu/cdu0", "signal": "cdu.flow_lpm", "address": 0, "type": "uint32", "scale": 0.001},
    {"entity": "cdu/cdu0", "signal": "cdu.pressure_kpa", "address": 2, "type": "int32", "word_order": "little",
     "scale": 0.01, "offset": -100.0},
    {"entity": "cdu/cdu0", "signal": "cdu.supply_temp_c", "address": 4, "type": "float32", "word_order": "little"},
    {"entity": "cdu/cdu0", "signal": "cdu.return_temp_c", "address": 6, "type": "int16", "scale": 0.1},
    {"entity": "rack/r000", "signal": "rack.inlet_temp_c", "table": "input", "address": 10, "type": "uint16",
     "scale": 0.01},
]  # fmt: skip


def test_every_register_type_round_trips_and_matches_pymodbus_conversion(topo: Topology) -> None:
    cfg = load_register_map({"devices": [device("bms", 502, TYPED, unit=7)]})
    values = {
        ("cdu/cdu0", "cdu.flow_lpm"): 305419.896,  # 305419896 = 0x12345678 thousandths
        ("cdu/cdu0", "cdu.pressure_kpa"): -21474736.48,  # raw int32 -2147463648 after the offset
        ("cdu/cdu0", "cdu.supply_temp_c"): -31.4159,
        ("cdu/cdu0", "cdu.return_temp_c"): -12.3,
        ("rack/r000", "rack.inlet_temp_c"): 655.35,  # the largest uint16
    }
    with TwinModbusServer(cfg, HOST, 0) as srv:
        assert srv.set_values(values) == 5
        client = ModbusTcpClient(HOST, port=srv.port, timeout=2)
        assert client.connect()
        try:
            regs = client.read_holding_registers(0, count=7, device_id=7).registers
            conv = ModbusTcpClient.convert_from_registers
            dt = ModbusTcpClient.DATATYPE
            assert regs[0:2] == [0x1234, 0x5678]
            assert conv(regs[0:2], dt.UINT32) == 305419896
            assert conv(regs[2:4], dt.INT32, word_order="little") == -2147463648
            assert conv(regs[4:6], dt.FLOAT32, word_order="little") == pytest.approx(-31.4159, rel=1e-7)
            assert conv(regs[6:7], dt.INT16) == -123
            assert client.read_input_registers(10, count=1, device_id=7).registers == [65535]
        finally:
            client.close()
        with ModbusSource(retarget(cfg, HOST, srv.port), topo) as src:
            got = src.collect(1000.0)
    assert got.notices == ()
    read = values_of(got, topo)
    for key, value in values.items():
        assert read[key] == pytest.approx(value, rel=1e-7, abs=1e-6), key


def test_encode_then_decode_is_exact_within_resolution_for_random_values() -> None:
    rng = np.random.default_rng(11)
    dev = ModbusDevice.model_validate(device("d", 502, TYPED))
    blocks = plan_blocks(dev)
    pa = point_arrays(dev, blocks)
    scale = np.array([dev.points[i].scale for i in pa.index.tolist()])
    for _ in range(50):
        by_point = np.array(
            [
                rng.uniform(0, 4e6),
                rng.uniform(-2e7, 2e7),
                rng.normal(0, 100),
                rng.uniform(-3000, 3000),
                rng.uniform(0, 655),
            ]
        )
        vals = by_point[pa.index]
        enc = encode(pa, vals)
        tables = np.zeros((2, 65536), np.uint16)
        tables[enc.table, enc.address] = enc.word
        words = np.concatenate(
            [tables[0 if b.table.value == "holding" else 1, b.start : b.start + b.count] for b in blocks]
        )
        back = decode(pa, words).value
        tol = np.where(pa.type_code == 4, np.abs(vals) * 1.2e-7, scale / 2 + 1e-9)
        assert np.all(np.abs(back - vals) <= tol)


# ---- 4-20 mA -----------------------------------------------------------------------------------


def test_loop_current_scaled_and_ne43_out_of_range_is_missing_with_a_notice(topo: Topology) -> None:
    # The server holds plain loop readings (µA and S7 counts); the source's map converts them.
    served = [
        {
            "entity": "rack/r000",
            "signal": "rack.inlet_temp_c",
            "table": "input",
            "address": 0,
            "scale": 0.001,
        },
        {
            "entity": "rack/r001",
            "signal": "rack.inlet_temp_c",
            "table": "input",
            "address": 1,
            "scale": 0.001,
        },
        {
            "entity": "rack/r002",
            "signal": "rack.inlet_temp_c",
            "table": "input",
            "address": 2,
            "scale": 0.001,
        },
        {
            "entity": "rack/r003",
            "signal": "rack.inlet_temp_c",
            "table": "input",
            "address": 3,
            "scale": 0.001,
        },
        {"entity": "cdu/cdu0", "signal": "cdu.pressure_kpa", "address": 0, "type": "int16"},
        {"entity": "cdu/cdu1", "signal": "cdu.pressure_kpa", "address": 1, "type": "int16"},
    ]
    loop_ma = {"low": 0.0, "high": 80.0}
    s7 = {"low": 0.0, "high": 400.0, "at_4ma": 0, "at_20ma": 27648}
    read_map = [{**p, "loop": loop_ma} for p in served[:4]] + [{**p, "loop": s7} for p in served[4:]]
    with TwinModbusServer(load_register_map({"devices": [device("loops", 502, served)]}), HOST, 0) as srv:
        srv.set_values({
            ("rack/r000", "rack.inlet_temp_c"): 12.0,  # mA: mid-scale
            ("rack/r001", "rack.inlet_temp_c"): 3.5,  # under 3.8 mA: broken loop
            ("rack/r002", "rack.inlet_temp_c"): 21.0,  # over 20.5 mA: transmitter fault
            ("rack/r003", "rack.inlet_temp_c"): 3.9,  # in NE 43's measuring range, just under 4 mA
            ("cdu/cdu0", "cdu.pressure_kpa"): 6912,  # counts: a quarter of 27648 -> 8 mA
            ("cdu/cdu1", "cdu.pressure_kpa"): -4000,  # counts: 1.69 mA
        })  # fmt: skip
        cfg = load_register_map({"devices": [device("loops", srv.port, read_map)]})
        with ModbusSource(cfg, topo) as src:
            got = src.collect(50.0)
    read = values_of(got, topo)
    assert read[("rack/r000", "rack.inlet_temp_c")] == pytest.approx(40.0)
    assert read[("rack/r003", "rack.inlet_temp_c")] == pytest.approx(-0.5)
    assert read[("cdu/cdu0", "cdu.pressure_kpa")] == pytest.approx(100.0)
    for key in [
        ("rack/r001", "rack.inlet_temp_c"),
        ("rack/r002", "rack.inlet_temp_c"),
        ("cdu/cdu1", "cdu.pressure_kpa"),
    ]:
        assert math.isnan(read[key])  # a sample, explicitly missing: not stale, not zero
    text = [str(n) for n in got.notices]
    assert len(text) == 3
    assert any("rack/r001" in t and "3.50 mA is below 3.8" in t for t in text)
    assert any("rack/r002" in t and "21.00 mA is above 20.5" in t for t in text)
    assert any("cdu/cdu1" in t and "below 3.8" in t and "holding 1" in t for t in text)


def test_twin_encodes_saturation_and_the_failure_current() -> None:
    inlet = {"entity": "rack/r1", "signal": "rack.inlet_temp_c", "address": 0, "scale": 0.001}
    dev = ModbusDevice.model_validate(device("d", 502, [{**inlet, "loop": {"low": 0, "high": 100}}]))
    pa = point_arrays(dev, plan_blocks(dev))
    for value, ma in [(150.0, 20.5), (-50.0, 3.8), (float("nan"), 3.6), (50.0, 12.0)]:
        enc = encode(pa, np.array([value]))
        assert enc.word.tolist() == [round(ma * 1000)]


# ---- failures: exceptions, devices down, silence -----------------------------------------------


def test_illegal_address_block_is_a_notice_and_the_other_blocks_still_arrive(
    topo: Topology, twin_server: TwinModbusServer
) -> None:
    cfg = retarget(twin_register_map(topo), HOST, twin_server.port)
    first = cfg.devices[0]
    ghost = RegisterPoint(entity="cdu/cdu0", signal="cdu.pressure_kpa", address=200)  # the server has no 200
    moved = (*(p for p in first.points if p.signal != "cdu.pressure_kpa"), ghost)
    cfg = cfg.model_copy(update={"devices": (first.model_copy(update={"points": moved}), *cfg.devices[1:])})
    twin_server.set_values({("cdu/cdu0", "cdu.flow_lpm"): 440.0, ("rack/r001", "rack.inlet_temp_c"): 36.0})
    with ModbusSource(cfg, topo) as src:
        assert [b.label for b in src.blocks["cdu-cdu0"]] == ["holding 0..1", "holding 3..4", "holding 200..200",
                                                              "input 0..1"]  # fmt: skip
        got = src.collect(10.0)
    (n,) = got.notices
    assert n.source == "modbus"
    assert "cdu-cdu0" in n.where and "unit 1" in n.where and "holding 200..200" in n.where
    assert "exception code 2 (illegal data address)" in n.message
    read = values_of(got, topo)
    assert ("cdu/cdu0", "cdu.pressure_kpa") not in read  # stale, never zero
    assert read[("cdu/cdu0", "cdu.flow_lpm")] == 440.0  # the block before it
    assert read[("rack/r001", "rack.inlet_temp_c")] == pytest.approx(36.0, abs=0.004)  # the block after it
    assert ("cdu/cdu1", "cdu.supply_temp_c") in read  # the other device


def test_device_down_is_a_notice_and_the_others_still_arrive(
    topo: Topology, twin_server: TwinModbusServer
) -> None:
    cfg = retarget(twin_register_map(topo), HOST, twin_server.port)
    dead = cfg.devices[1].model_copy(update={"port": free_closed_port(), "timeout_s": 0.5})
    cfg = cfg.model_copy(update={"devices": (cfg.devices[0], dead)})
    twin_server.set_values({("cdu/cdu0", "cdu.flow_lpm"): 420.0})
    with ModbusSource(cfg, topo) as src:
        for now in (1.0, 2.0):  # a second poll reconnects and fails the same way
            got = src.collect(now)
            (n,) = got.notices
            assert "cdu-cdu1" in n.where and "cannot connect" in n.message
            read = values_of(got, topo)
            assert read[("cdu/cdu0", "cdu.flow_lpm")] == 420.0
            assert not any(k[0] in ("cdu/cdu1", "rack/r002", "rack/r003") for k in read)


def test_a_client_library_surprise_costs_only_its_device_and_a_closed_source_says_so(
    topo: Topology, twin_server: TwinModbusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the client raises beyond its documented errors is a notice for that device; the
    other device's samples still arrive. After close, collect answers instead of raising."""
    from pymodbus.client import ModbusTcpClient

    cfg = retarget(twin_register_map(topo), HOST, twin_server.port)
    twin_server.set_values({("cdu/cdu0", "cdu.flow_lpm"): 420.0})
    real = ModbusTcpClient.read_holding_registers

    def flaky(self: ModbusTcpClient, address: int, **kw: Any) -> Any:
        if kw.get("device_id") == cfg.devices[1].unit:
            raise ValueError("unexpected frame layout")
        return real(self, address, **kw)

    monkeypatch.setattr(ModbusTcpClient, "read_holding_registers", flaky)
    src = ModbusSource(cfg, topo)
    got = src.collect(1.0)
    assert [n.message for n in got.notices] == ["poll failed: ValueError: unexpected frame layout"]
    assert values_of(got, topo)[("cdu/cdu0", "cdu.flow_lpm")] == 420.0
    src.close()
    after = src.collect(2.0)
    assert len(after.batch) == 0 and [n.message for n in after.notices] == ["source closed"]


def test_silent_device_times_out_within_its_timeout(topo: Topology, twin_server: TwinModbusServer) -> None:
    # A listening socket that never answers: the kernel completes the handshake, nothing replies.
    silent = socket.socket()
    silent.bind((HOST, 0))
    silent.listen(8)
    try:
        cfg = retarget(twin_register_map(topo), HOST, twin_server.port)
        mute = cfg.devices[1].model_copy(update={"port": silent.getsockname()[1], "timeout_s": 0.3})
        cfg = cfg.model_copy(update={"devices": (cfg.devices[0], mute)})
        with ModbusSource(cfg, topo) as src:
            start = time.monotonic()
            got = src.collect(5.0)
            elapsed = time.monotonic() - start
    finally:
        silent.close()
    (n,) = got.notices
    assert "cdu-cdu1" in n.where and "holding 0..4" in n.where
    assert "no response within 0.3 s" in n.message and "1 more block(s) of this device skipped" in n.message
    assert elapsed < 3.0  # one timeout for the device, not one per block or per retry
    assert ("cdu/cdu0", "cdu.flow_lpm") in values_of(got, topo)


def test_points_of_entities_outside_the_topology_are_counted_unknown(
    topo: Topology, twin_server: TwinModbusServer
) -> None:
    pts = [{"entity": "cdu/cdu0", "signal": "cdu.flow_lpm", "address": 0, "type": "float32"},
           {"entity": "cdu/elsewhere", "signal": "cdu.supply_temp_c", "address": 3, "type": "int16", "scale": 0.01}]  # fmt: skip
    cfg = load_register_map({"devices": [device("d", twin_server.port, pts, unit=1)]})
    with ModbusSource(cfg, topo) as src:
        got = src.collect(1.0)
    assert got.unknown == {"cdu/elsewhere": 1}
    assert len(got.batch) == 1


# ---- planning reads -----------------------------------------------------------------------------


def test_reads_coalesce_contiguous_points_within_the_125_register_limit() -> None:
    pts = [{"entity": f"rack/r{i}", "signal": "rack.inlet_temp_c", "address": i} for i in range(130)]
    pts.append({"entity": "cdu/c", "signal": "cdu.flow_lpm", "address": 130, "type": "float32"})
    pts.append({"entity": "cdu/c", "signal": "cdu.supply_temp_c", "address": 140})
    pts.append({"entity": "cdu/c", "signal": "cdu.return_temp_c", "address": 0, "table": "input"})
    blocks = plan_blocks(ModbusDevice.model_validate(device("d", 502, pts)))
    assert [(b.table.value, b.start, b.count) for b in blocks] == [
        ("holding", 0, MAX_READ_REGISTERS), ("holding", 125, 7), ("holding", 140, 1), ("input", 0, 1)
    ]  # fmt: skip
    gap = plan_blocks(ModbusDevice.model_validate(device("d", 502, pts, max_gap=8)))
    assert [(b.start, b.count) for b in gap] == [(0, 125), (125, 16), (0, 1)]


# ---- config errors name the device and the point ----------------------------------------------


@pytest.mark.parametrize(
    ("point", "expected"),
    [
        ({"type": "uint8"}, ["'bms-1'", "point 1 (cdu/c1 cdu.supply_temp_c)", "type", "uint8"]),
        ({"address": 65535, "type": "float32"}, ["'bms-1'", "point 1", "beyond the last address 65535"]),
        ({"address": 70000}, ["'bms-1'", "point 1", "address", "65535"]),
        ({"signal": "gpu.temp_c"}, ["'bms-1'", "point 1", "belongs to gpu entities"]),
        ({"signal": "cdu.nope"}, ["'bms-1'", "point 1", "not in the signal catalog"]),
        ({"table": "coil"}, ["'bms-1'", "point 1", "table"]),
        ({"loop": {"low": 5, "high": 5}}, ["'bms-1'", "point 1", "range must not be empty"]),
        ({"scale": 0}, ["'bms-1'", "point 1", "scale"]),
    ],
)
def test_bad_points_are_refused_naming_device_and_point(point: dict[str, Any], expected: list[str]) -> None:
    good = {"entity": "cdu/c1", "signal": "cdu.flow_lpm", "address": 0, "type": "float32"}
    bad = {"entity": "cdu/c1", "signal": "cdu.supply_temp_c", "address": 10, **point}
    with pytest.raises(InputError) as err:
        load_register_map({"devices": [device("bms-1", 502, [good, bad])]}, "site.yaml")
    msg = str(err.value)
    assert msg.startswith("site.yaml: ")
    for part in expected:
        assert part in msg


def test_overlapping_points_are_refused_naming_both() -> None:
    pts = [{"entity": "cdu/c1", "signal": "cdu.flow_lpm", "address": 10, "type": "float32"},
           {"entity": "cdu/c1", "signal": "cdu.supply_temp_c", "address": 11}]  # fmt: skip
    with pytest.raises(InputError, match=r"device 'bms' point 1 \(cdu/c1 cdu.supply_temp_c\) at holding register "
                                         r"11 overlaps point 0 \(cdu/c1 cdu.flow_lpm\) at 10..11"):  # fmt: skip
        load_register_map({"devices": [device("bms", 502, pts)]})
    pts[1]["table"] = "input"  # the same address in the other table is another register
    assert len(load_register_map({"devices": [device("bms", 502, pts)]}).devices[0].points) == 2


def test_device_level_errors() -> None:
    p = [{"entity": "cdu/c1", "signal": "cdu.flow_lpm", "address": 0}]
    with pytest.raises(InputError, match="unit"):
        load_register_map({"devices": [device("bms", 502, p, unit=300)]})
    with pytest.raises(InputError, match="'bms' is named twice"):
        load_register_map({"devices": [device("bms", 502, p), device("bms", 503, p, unit=2)]})
    with pytest.raises(
        InputError, match=r"device 'b' point cdu/c1 cdu.flow_lpm: already read from device 'a'"
    ):
        load_register_map({"devices": [device("a", 502, p), device("b", 503, p)]})
    with pytest.raises(InputError, match="timeout_s"):
        load_register_map({"devices": [device("bms", 502, p, timeout_s=0)]})
    with pytest.raises(InputError, match="points"):
        load_register_map({"devices": [device("bms", 502, [])]})
    assert isinstance(load_register_map({"devices": [device("bms", 502, p)]}), ModbusConfig)


def test_twin_server_on_a_busy_port_fails_to_start_with_the_address(topo: Topology) -> None:
    busy = socket.socket()
    busy.bind((HOST, 0))
    busy.listen(1)
    port = int(busy.getsockname()[1])
    try:
        with pytest.raises(RuntimeError, match=f"{HOST}:{port}"):
            TwinModbusServer(twin_register_map(topo), HOST, port).start()
    finally:
        busy.close()
    with pytest.raises(ValueError, match=r"unit id\(s\) \[1\]"):
        cfg = twin_register_map(topo)
        TwinModbusServer(
            cfg.model_copy(
                update={"devices": (cfg.devices[0], cfg.devices[0].model_copy(update={"name": "x"}))}
            )
        )
