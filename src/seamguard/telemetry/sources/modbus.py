"""The facilities source: BMS devices polled over Modbus/TCP (pymodbus), decoded by the register map.

Each device keeps one TCP connection (BMS controllers accept few) and is polled in its own
worker thread, so a device that hangs costs its own timeout, not everyone's. Within a device
the blocks are read one after another; after a timeout or a lost connection the device's
remaining blocks are skipped (they would each wait the timeout again) and the connection is
dropped, to be opened afresh at the next poll. A block that answers with a Modbus exception
(illegal data address, device busy, gateway path unavailable...) is reported with its code and
the device's other blocks still arrive. Failed blocks contribute no samples: their series go
stale, never zero. A 4–20 mA point outside NE 43's measuring range is a NaN sample (missing
data, explicitly) with a notice.

Samples are stamped with the poll's ``now``: the engine's clock, not the wall clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType

import numpy as np
import numpy.typing as npt
from pymodbus.client import ModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from seamguard.model.catalog import SignalCatalog, signal_catalog
from seamguard.model.topology import Topology
from seamguard.model.world import WorldChange
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.base import Collected, SourceNotice
from seamguard.telemetry.sources.registers import (
    NE43_OVER_MA,
    NE43_UNDER_MA,
    Block,
    ModbusConfig,
    ModbusDevice,
    PointArrays,
    RegisterPoint,
    Table,
    decode,
    plan_blocks,
    point_arrays,
)

IntArray = npt.NDArray[np.int64]
SOURCE_NAME = "modbus"
_EXC_NAMES = {int(c): c.name.lower().replace("_", " ") for c in ExcCodes}
_EXC_NAMES[int(ExcCodes.ILLEGAL_ADDRESS)] = "illegal data address"
_EXC_NAMES[int(ExcCodes.ILLEGAL_VALUE)] = "illegal data value"
_EXC_NAMES[int(ExcCodes.GATEWAY_PATH_UNAVIABLE)] = "gateway path unavailable"
_EXC_NAMES[int(ExcCodes.GATEWAY_NO_RESPONSE)] = "gateway target device failed to respond"


def exception_name(code: int) -> str:
    return _EXC_NAMES.get(code, "unknown exception")


@dataclass
class _Device:
    config: ModbusDevice
    blocks: tuple[Block, ...]
    arrays: PointArrays
    entity: IntArray  # per point (arrays order): global entity index, -1 when not in the topology
    signal: IntArray
    offsets: IntArray  # first word of each block in the concatenated words
    client: ModbusTcpClient | None = None

    @property
    def where(self) -> str:
        c = self.config
        return f"{c.name} ({c.host}:{c.port} unit {c.unit})"


@dataclass
class _Poll:
    words: npt.NDArray[np.uint16]
    ok: npt.NDArray[np.bool_]  # per block
    notices: list[SourceNotice] = field(default_factory=list)


class ModbusSource:
    """Polls every device of a register map; a ``Source`` for the engine."""

    name: str

    def __init__(
        self,
        config: ModbusConfig,
        topology: Topology,
        catalog: SignalCatalog | None = None,
        *,
        name: str = SOURCE_NAME,
    ) -> None:
        self.name = name
        self.config = config
        cat = catalog if catalog is not None else signal_catalog()
        self._devices: list[_Device] = []
        for dev in config.devices:
            blocks = plan_blocks(dev)
            pa = point_arrays(dev, blocks)
            pts = [dev.points[i] for i in pa.index.tolist()]
            entity = _entities(topology, pts)
            signal = np.array([cat[p.signal].index for p in pts], dtype=np.int64)
            counts = np.array([b.count for b in blocks], dtype=np.int64)
            offsets = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
            self._devices.append(_Device(dev, blocks, pa, entity, signal, offsets))
        self._closed = False
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, min(config.max_workers, len(self._devices))), thread_name_prefix="modbus-poll"
        )

    def follow(self, change: WorldChange) -> None:
        """Each point's entity looked up in the new world (a point whose entity joined is read from now on)."""
        for d in self._devices:
            d.entity = _entities(change.new, [d.config.points[i] for i in d.arrays.index.tolist()])

    @property
    def blocks(self) -> dict[str, tuple[Block, ...]]:
        """The reads each device gets per poll."""
        return {d.config.name: d.blocks for d in self._devices}

    def collect(self, now: float) -> Collected:
        if self._closed:
            return Collected(TelemetryBatch.empty(), (SourceNotice(self.name, "collect", "source closed"),))
        polls = list(self._pool.map(_poll_guarded, self._devices))
        batches: list[TelemetryBatch] = []
        notices: list[SourceNotice] = []
        unknown: dict[str, int] = {}
        for dev, poll in zip(self._devices, polls, strict=True):
            notices.extend(poll.notices)
            pa = dev.arrays
            answered = poll.ok[pa.block]
            if not answered.any():
                continue
            dec = decode(pa, poll.words)
            for k in np.flatnonzero(answered & (dec.under | dec.over)).tolist():
                p = dev.config.points[int(pa.index[k])]
                side = f"below {NE43_UNDER_MA}" if dec.under[k] else f"above {NE43_OVER_MA}"
                notices.append(
                    SourceNotice(
                        self.name,
                        f"{dev.where} {p.table.value} {p.address} ({p.label})",
                        f"loop current {dec.loop_ma[k]:.2f} mA is {side} mA (NAMUR NE 43): transmitter "
                        "or wiring fault; value missing",
                    )
                )
            for k in np.flatnonzero(answered & (dev.entity < 0)).tolist():
                eid = dev.config.points[int(pa.index[k])].entity
                unknown[eid] = unknown.get(eid, 0) + 1
            keep = answered & (dev.entity >= 0)
            n = int(np.count_nonzero(keep))
            batches.append(
                TelemetryBatch(dev.entity[keep], dev.signal[keep], np.full(n, float(now)), dec.value[keep])
            )
        return Collected(TelemetryBatch.concat(batches), tuple(notices), unknown)

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=True)
        for dev in self._devices:
            _drop(dev)

    def __enter__(self) -> ModbusSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _drop(dev: _Device) -> None:
    if dev.client is not None:
        dev.client.close()  # type: ignore[no-untyped-call]
        dev.client = None


def _poll_guarded(dev: _Device) -> _Poll:
    """``_poll``, with whatever else a client library may raise turned into a notice for this
    device alone: one device's surprise must not cost the others their samples."""
    try:
        return _poll(dev)
    except Exception as exc:
        _drop(dev)
        failed = _Poll(np.zeros(0, np.uint16), np.zeros(len(dev.blocks), bool))
        failed.notices.append(
            SourceNotice(SOURCE_NAME, dev.where, f"poll failed: {type(exc).__name__}: {exc}")
        )
        return failed


def _poll(dev: _Device) -> _Poll:
    """Read every block of one device; never raises for what the device does."""
    c = dev.config
    total = int(sum(b.count for b in dev.blocks))
    out = _Poll(np.zeros(total, np.uint16), np.zeros(len(dev.blocks), bool))

    def notice(where: str, message: str) -> None:
        out.notices.append(SourceNotice(SOURCE_NAME, where, message))

    if dev.client is None:
        # retries=0: the next poll is the retry; a retry here would only multiply the timeout.
        dev.client = ModbusTcpClient(c.host, port=c.port, timeout=c.timeout_s, retries=0)
    client = dev.client
    if not client.connected and not client.connect():  # type: ignore[no-untyped-call]
        _drop(dev)
        notice(dev.where, f"cannot connect within {c.timeout_s:g} s; {len(dev.blocks)} block(s) not read")
        return out
    for b, block in enumerate(dev.blocks):
        where = f"{dev.where} {block.label}"
        try:
            read = (
                client.read_holding_registers if block.table is Table.HOLDING else client.read_input_registers
            )
            rr = read(block.start, count=block.count, device_id=c.unit)
        except (ModbusIOException, ConnectionException, OSError) as exc:
            _drop(dev)
            rest = len(dev.blocks) - b - 1
            skipped = f"; {rest} more block(s) of this device skipped" if rest else ""
            what = "no response" if isinstance(exc, ModbusIOException) else f"connection lost ({exc})"
            notice(where, f"{what} within {c.timeout_s:g} s{skipped}")
            return out
        except ModbusException as exc:  # a malformed frame: the stream is no longer trustworthy
            _drop(dev)
            notice(where, f"bad response: {exc}")
            return out
        if rr.isError():
            code = int(getattr(rr, "exception_code", 0))
            notice(
                where, f"Modbus exception code {code} ({exception_name(code)}); no samples from this block"
            )
            continue
        regs = getattr(rr, "registers", None) or []
        if len(regs) != block.count:
            notice(where, f"answered {len(regs)} register(s) for {block.count} asked; block ignored")
            continue
        o = int(dev.offsets[b])
        out.words[o : o + block.count] = np.asarray(regs, dtype=np.uint16)
        out.ok[b] = True
    return out


def _entities(topology: Topology, points: Sequence[RegisterPoint]) -> IntArray:
    """Per point: its entity's global index, -1 when the topology lacks it."""
    return np.array([(-1 if (g := topology.lookup(p.entity)) is None else g) for p in points], dtype=np.int64)
