"""The twin's BMS: a real pymodbus TCP server serving the plant's facilities values.

The same register map the facilities source reads tells the server what to serve: values per
(entity, signal), taken from the twin's telemetry batches, are encoded into registers (the
inverse of the source's decoding, 4–20 mA points included) and the registers change as the
twin advances. Only the mapped registers exist; reading any other address answers "illegal
data address" as a strict controller does, and the registers are read-only.

The server runs its own asyncio loop in a daemon thread, so a synchronous caller (a test, the
twin's step loop) starts it, updates it and stops it from Python.

``twin_register_map`` derives a map for a twin topology: one device per CDU, all behind one
TCP port as units 1..n (a Modbus gateway in front of the CDU controllers), each with the
CDU's flow, pump pressure, supply and return temperatures and the inlet sensors of the racks
that CDU cools. A CDU controller is where a plant wires the rack sensors of its loop, and one
device per CDU keeps a failure local: a unit that stops answering costs the racks it cools
their facilities readings, nothing more. The point types are mixed on purpose, as in a real
plant: flow as float32, pressure as a 4–20 mA transmitter on an S7-style analog card (int16
counts, 0 at 4 mA and 27648 at 20 mA), temperatures as int16 hundredths of a degree, rack
inlets as 4–20 mA loops read in µA.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Mapping
from types import TracebackType

import numpy as np
import numpy.typing as npt
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from seamguard.model.catalog import SignalCatalog, signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.registers import (
    LoopCurrent,
    ModbusConfig,
    ModbusDevice,
    PointArrays,
    RegisterPoint,
    RegisterType,
    Table,
    encode,
    plan_blocks,
    point_arrays,
)

MAX_UNITS = 247  # Modbus unit ids 1..247 behind one port
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
_READ_FC = {3: 0, 4: 1}  # function code -> table (0 holding, 1 input)


def twin_register_map(
    topology: Topology, host: str = "127.0.0.1", port: int = 502, timeout_s: float = 1.0
) -> ModbusConfig:
    """One device per CDU (unit = CDU's local index + 1), racks on the CDU that cools them."""
    cdus = topology.names[EntityKind.CDU]
    if len(cdus) > MAX_UNITS:
        raise ValueError(f"{len(cdus)} CDUs: one port serves at most {MAX_UNITS} unit ids")
    racks = topology.names[EntityKind.RACK]
    devices = []
    for c, cdu in enumerate(cdus):
        eid = f"cdu/{cdu}"
        points = [
            RegisterPoint(entity=eid, signal="cdu.flow_lpm", address=0, type=RegisterType.FLOAT32),
            RegisterPoint(
                entity=eid,
                signal="cdu.pressure_kpa",
                address=2,
                type=RegisterType.INT16,
                loop=LoopCurrent(low=0.0, high=400.0, at_4ma=0.0, at_20ma=27648.0),
            ),
            RegisterPoint(
                entity=eid, signal="cdu.supply_temp_c", address=3, type=RegisterType.INT16, scale=0.01
            ),
            RegisterPoint(
                entity=eid, signal="cdu.return_temp_c", address=4, type=RegisterType.INT16, scale=0.01
            ),
        ]
        mine = np.flatnonzero(topology.rack_cdu == c).tolist()
        points.extend(
            RegisterPoint(
                entity=f"rack/{racks[r]}",
                signal="rack.inlet_temp_c",
                table=Table.INPUT,
                address=k,
                type=RegisterType.UINT16,
                scale=0.001,
                loop=LoopCurrent(low=0.0, high=100.0),
            )
            for k, r in enumerate(mine)
        )
        devices.append(
            ModbusDevice(
                name=f"cdu-{cdu}", host=host, port=port, unit=c + 1, timeout_s=timeout_s, points=tuple(points)
            )
        )
    return ModbusConfig(devices=tuple(devices))


def retarget(config: ModbusConfig, host: str, port: int) -> ModbusConfig:
    """The same map pointed at another endpoint (e.g. a twin server bound to a free port)."""
    devices = tuple(d.model_copy(update={"host": host, "port": port}) for d in config.devices)
    return config.model_copy(update={"devices": devices})


def _sim_table(points: list[RegisterPoint]) -> list[SimData]:
    if not points:
        return [SimData(address=0, datatype=DataType.INVALID)]
    return [
        SimData(address=p.address, values=[0] * p.width, datatype=DataType.REGISTERS, readonly=True)
        for p in points
    ]


class TwinModbusServer:
    """Serves the devices of a register map (distinct unit ids) on one loopback TCP port."""

    def __init__(self, config: ModbusConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        units = [d.unit for d in config.devices]
        dup = sorted({u for u in units if units.count(u) > 1})
        if dup:
            raise ValueError(f"unit id(s) {dup} used by more than one device; one port serves each unit once")
        if not config.devices:
            raise ValueError("register map has no devices to serve")
        self.config = config
        self.host = host
        self._want_port = port
        self._port: int | None = None
        self._lock = threading.Lock()
        self._images = {d.unit: np.zeros((2, 65536), np.uint16) for d in config.devices}
        self._arrays: dict[int, PointArrays] = {
            d.unit: point_arrays(d, plan_blocks(d)) for d in config.devices
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        for d in config.devices:  # until a value arrives: NaN floats, the NE 43 failure current on loops
            pa = self._arrays[d.unit]
            self._write(d.unit, pa, np.full(pa.index.size, np.nan), np.ones(pa.index.size, bool))

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("twin Modbus server is not running")
        return self._port

    # -- values ---------------------------------------------------------------------------------

    def set_values(self, values: Mapping[tuple[str, str], float]) -> int:
        """Serve ``values`` keyed by (entity id, signal); other points keep their registers."""
        written = 0
        for dev in self.config.devices:
            pa = self._arrays[dev.unit]
            pts = [dev.points[i] for i in pa.index.tolist()]
            vals = np.array([values.get((p.entity, p.signal), np.nan) for p in pts], dtype=np.float64)
            have = np.array([(p.entity, p.signal) in values for p in pts], dtype=bool)
            written += self._write(dev.unit, pa, vals, have)
        return written

    def update_from_batch(
        self, batch: TelemetryBatch, topology: Topology, catalog: SignalCatalog | None = None
    ) -> int:
        """Serve each mapped point's latest sample in ``batch``; returns how many points changed."""
        if len(batch) == 0:
            return 0
        cat = catalog if catalog is not None else signal_catalog()
        nsig = len(cat)
        key = batch.entity * nsig + batch.signal
        order = np.lexsort((batch.timestamp, key))
        ks = key[order]
        last = np.append(ks[1:] != ks[:-1], True)
        uk, uv = ks[last], batch.value[order][last]
        written = 0
        for dev in self.config.devices:
            pa = self._arrays[dev.unit]
            pts = [dev.points[i] for i in pa.index.tolist()]
            ent = np.array([(-1 if (g := topology.lookup(p.entity)) is None else g) for p in pts], np.int64)
            sig = np.array([cat[p.signal].index for p in pts], np.int64)
            want = ent * nsig + sig
            pos = np.clip(np.searchsorted(uk, want), 0, max(uk.size - 1, 0))
            have = (ent >= 0) & (uk[pos] == want)
            written += self._write(dev.unit, pa, np.where(have, uv[pos], np.nan), have)
        return written

    def _write(self, unit: int, pa: PointArrays, values: FloatArray, have: npt.NDArray[np.bool_]) -> int:
        enc = encode(pa, values, have)
        with self._lock:
            self._images[unit][enc.table, enc.address] = enc.word
        return int(np.count_nonzero(have))

    def registers(self, unit: int, table: Table, address: int, count: int) -> list[int]:
        """What the server would answer (for tests and debugging)."""
        t = 0 if table is Table.HOLDING else 1
        with self._lock:
            return [int(w) for w in self._images[unit][t, address : address + count]]

    async def _action(
        self,
        unit: int,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> None:
        """pymodbus calls this on every access: refresh the requested registers from the image."""
        table = _READ_FC.get(function_code)
        if table is None or set_values is not None:
            return None
        with self._lock:
            words = self._images[unit][table, address : address + count].tolist()
        current_registers[address - start_address : address - start_address + count] = words
        return None

    # -- lifecycle ------------------------------------------------------------------------------

    def _devices(self) -> list[SimDevice]:
        out = []
        for d in self.config.devices:
            holding = [p for p in d.points if p.table is Table.HOLDING]
            inputs = [p for p in d.points if p.table is Table.INPUT]
            bits = [SimData(address=0, values=False, datatype=DataType.BITS, readonly=True)]
            out.append(
                SimDevice(
                    id=d.unit,
                    simdata=(bits, list(bits), _sim_table(holding), _sim_table(inputs)),
                    action=functools.partial(self._action, d.unit),
                )
            )
        return out

    def start(self, timeout_s: float = 10.0) -> TwinModbusServer:
        if self._thread is not None:
            raise RuntimeError("twin Modbus server already started")
        self._thread = threading.Thread(target=self._run, name="twin-modbus", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError(f"twin Modbus server on {self.host} did not start within {timeout_s:g} s")
        if self._error is not None:
            raise RuntimeError(f"twin Modbus server on {self.host}:{self._want_port}: {self._error}")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    async def _serve(self) -> None:
        try:
            server = ModbusTcpServer(self._devices(), address=(self.host, self._want_port))
            await server.serve_forever(background=True)
            listener = server.transport
            sockets = getattr(listener, "sockets", None)
            self._port = int(sockets[0].getsockname()[1]) if sockets else self._want_port
            self._server = server
        except BaseException as exc:  # reported to start(), which raises it in the caller's thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await server.serving
        await asyncio.sleep(0)

    def stop(self, timeout_s: float = 10.0) -> None:
        loop, server, thread = self._loop, self._server, self._thread
        if loop is not None and server is not None and not loop.is_closed():
            fut = asyncio.run_coroutine_threadsafe(server.shutdown(), loop)  # type: ignore[no-untyped-call]
            fut.result(timeout_s)
        if thread is not None:
            thread.join(timeout_s)
        self._server, self._thread, self._port = None, None, None

    def __enter__(self) -> TwinModbusServer:
        return self.start() if self._thread is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
