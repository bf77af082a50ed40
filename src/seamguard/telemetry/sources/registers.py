"""Modbus register maps: where a BMS keeps each facilities signal, and how its words become values.

A map lists devices (host, port, unit id, timeout) and their points: entity, catalog signal,
register table, address, type (16/32-bit integers or float32, word order for 32-bit types),
``scale``/``offset``, and optionally a 4–20 mA loop conversion. The words a poll reads are
decoded for all points of a device at once with numpy (one gather per word, one view per
type), and encoded the same way by the twin's server, so a value survives the round trip
within the register type's resolution.

A 4–20 mA point's reading (``raw * scale + offset``) is a loop current, by default in mA; with
``at_4ma``/``at_20ma`` it may be an ADC count (e.g. 0 and 27648 on a Siemens S7 analog card).
Per NAMUR NE 43 a current below 3.8 mA or above 20.5 mA is a failed transmitter or a broken
loop, not a measurement: the value is missing and the source says so.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, ValidationError, model_validator

from seamguard.model.catalog import signal_catalog
from seamguard.model.entities import KIND_BY_PREFIX
from seamguard.strict_model import StrictModel, format_validation

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
WordArray = npt.NDArray[np.uint16]

MAX_READ_REGISTERS = 125  # Modbus application protocol: at most 125 registers per read (FC 3/4)
MAX_ADDRESS = 65535
NE43_UNDER_MA = 3.8  # below: failure (broken loop, failed transmitter)
NE43_OVER_MA = 20.5  # above: failure (short circuit, transmitter fault)
NE43_FAILURE_MA = 3.6  # what a transmitter drives on failure (the twin encodes a missing value so)


class Table(StrEnum):
    HOLDING = "holding"  # function code 3
    INPUT = "input"  # function code 4


class RegisterType(StrEnum):
    UINT16 = "uint16"
    INT16 = "int16"
    UINT32 = "uint32"
    INT32 = "int32"
    FLOAT32 = "float32"


WIDTH: dict[RegisterType, int] = {
    RegisterType.UINT16: 1,
    RegisterType.INT16: 1,
    RegisterType.UINT32: 2,
    RegisterType.INT32: 2,
    RegisterType.FLOAT32: 2,
}
_TYPE_CODE: dict[RegisterType, int] = {t: i for i, t in enumerate(RegisterType)}
_U16, _I16, _U32, _I32, _F32 = range(5)
_INT_RANGE: dict[int, tuple[float, float]] = {
    _U16: (0.0, 65535.0),
    _I16: (-32768.0, 32767.0),
    _U32: (0.0, 4294967295.0),
    _I32: (-2147483648.0, 2147483647.0),
}


class LoopCurrent(StrictModel):
    """A 4–20 mA transmitter: the engineering range it spans and what the register reads at 4 and 20 mA."""

    low: float  # engineering value at 4 mA
    high: float  # engineering value at 20 mA
    at_4ma: float = 4.0  # the point's reading (raw * scale + offset) at 4 mA: mA by default, or ADC counts
    at_20ma: float = 20.0

    @model_validator(mode="after")
    def _spans(self) -> LoopCurrent:
        if self.high == self.low:
            raise ValueError(f"loop: low and high are both {self.low}; the range must not be empty")
        if self.at_20ma == self.at_4ma:
            raise ValueError(f"loop: at_4ma and at_20ma are both {self.at_4ma}; they must differ")
        return self


class RegisterPoint(StrictModel):
    """One signal of one entity held in one or two registers."""

    entity: str  # cdu/cdu1, rack/r07
    signal: str  # a catalog signal whose entity kind is the entity's
    table: Table = Table.HOLDING
    address: int = Field(ge=0, le=MAX_ADDRESS)  # 0-based protocol address (register 40001 is 0)
    type: RegisterType = RegisterType.UINT16
    word_order: Literal["big", "little"] = "big"  # 32-bit types: big = high word first
    scale: float = 1.0
    offset: float = 0.0
    loop: LoopCurrent | None = None

    @property
    def width(self) -> int:
        return WIDTH[self.type]

    @property
    def label(self) -> str:
        return f"{self.entity} {self.signal}"

    @model_validator(mode="after")
    def _consistent(self) -> RegisterPoint:
        if not (np.isfinite(self.scale) and self.scale != 0.0):
            raise ValueError(f"scale must be a finite non-zero number, got {self.scale}")
        if not np.isfinite(self.offset):
            raise ValueError(f"offset must be finite, got {self.offset}")
        end = self.address + self.width - 1
        if end > MAX_ADDRESS:
            raise ValueError(
                f"address {self.address}: a {self.type.value} needs registers {self.address}..{end}, "
                f"beyond the last address {MAX_ADDRESS}"
            )
        kind_name, sep, rest = self.entity.partition("/")
        kind = KIND_BY_PREFIX.get(kind_name)
        if not sep or not rest or kind is None:
            raise ValueError(f"entity {self.entity!r} is not an entity id like cdu/cdu1 or rack/r07")
        sig = signal_catalog().get(self.signal)
        if sig is None:
            raise ValueError(f"signal {self.signal!r} is not in the signal catalog")
        if sig.entity is not kind:
            raise ValueError(
                f"signal {self.signal} belongs to {sig.entity.value} entities, not to {self.entity}"
            )
        return self


def _point_name(i: int, raw: Any) -> str:
    if isinstance(raw, Mapping):
        return f"point {i} ({raw.get('entity', '?')} {raw.get('signal', '?')})"
    return f"point {i}"


class ModbusDevice(StrictModel):
    """A BMS controller or gateway unit polled over Modbus/TCP."""

    name: str = Field(min_length=1)
    host: str = Field(min_length=1)
    port: int = Field(default=502, ge=1, le=65535)
    unit: int = Field(default=1, ge=0, le=255)  # unit id (slave id); 255 or 1 for most TCP devices
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    max_gap: int = Field(default=0, ge=0, le=MAX_READ_REGISTERS - 2)  # unused registers one read may span
    points: tuple[RegisterPoint, ...] = Field(min_length=1)

    @model_validator(mode="wrap")
    @classmethod
    def _named(cls, data: Any, handler: Callable[[Any], ModbusDevice]) -> ModbusDevice:
        """Re-word errors so that they name the device and the point, not list indices."""
        try:
            return handler(data)
        except ValidationError as exc:
            if not isinstance(data, Mapping):
                raise
            device = data.get("name", "?")
            points = data.get("points")
            parts = []
            for err in exc.errors()[:5]:
                loc = list(err["loc"])
                at = ""
                if len(loc) >= 2 and loc[0] == "points" and isinstance(loc[1], int):
                    i = loc[1]
                    raw = points[i] if isinstance(points, Sequence) and i < len(points) else None
                    at = " " + _point_name(i, raw)
                    loc = loc[2:]
                key = ".".join(str(p) for p in loc)
                got = err.get("input")
                shown = "" if isinstance(got, (Mapping, list, tuple)) or not key else f" (got {got!r})"
                msg = str(err["msg"]).removeprefix("Value error, ")
                parts.append(f"device {device!r}{at}{': ' + key if key else ''}: {msg}{shown}")
            raise ValueError("; ".join(parts)) from None

    @model_validator(mode="after")
    def _no_overlap(self) -> ModbusDevice:
        seen: dict[tuple[str, str], int] = {}
        for i, p in enumerate(self.points):
            key = (p.entity, p.signal)
            if key in seen:
                raise ValueError(
                    f"device {self.name!r} point {i} ({p.label}): the same entity and signal as point {seen[key]}"
                )
            seen[key] = i
        order = sorted(range(len(self.points)), key=lambda i: (self.points[i].table, self.points[i].address))
        for a, b in itertools.pairwise(order):
            pa, pb = self.points[a], self.points[b]
            if pa.table == pb.table and pb.address < pa.address + pa.width:
                raise ValueError(
                    f"device {self.name!r} point {b} ({pb.label}) at {pb.table.value} register {pb.address} "
                    f"overlaps point {a} ({pa.label}) at {pa.address}..{pa.address + pa.width - 1}"
                )
        return self


class ModbusConfig(StrictModel):
    """The facilities source's register map: every device and point it polls."""

    devices: tuple[ModbusDevice, ...] = ()
    max_workers: int = Field(
        default=8, ge=1, le=256
    )  # devices polled at once (each waits on its own timeout)

    @model_validator(mode="after")
    def _unique(self) -> ModbusConfig:
        names: set[str] = set()
        owner: dict[tuple[str, str], str] = {}
        for d in self.devices:
            if d.name in names:
                raise ValueError(f"device {d.name!r} is named twice")
            names.add(d.name)
            for p in d.points:
                key = (p.entity, p.signal)
                if key in owner:
                    raise ValueError(
                        f"device {d.name!r} point {p.label}: already read from device {owner[key]!r}"
                    )
                owner[key] = d.name
        return self


def load_register_map(data: Mapping[str, Any], where: str = "modbus") -> ModbusConfig:
    """Validate a register map read from YAML/JSON; errors name ``where``, the device and the point."""
    try:
        return ModbusConfig.model_validate(data)
    except ValidationError as exc:
        raise format_validation(where, exc) from None


# ---------------------------------------------------------------------------------------------
# Reads: points coalesced into blocks


@dataclass(frozen=True)
class Block:
    """One read request: ``count`` registers of ``table`` from ``start``."""

    table: Table
    start: int
    count: int
    points: tuple[int, ...]  # indices into the device's points

    @property
    def label(self) -> str:
        return f"{self.table.value} {self.start}..{self.start + self.count - 1}"


def plan_blocks(device: ModbusDevice) -> tuple[Block, ...]:
    """Contiguous points (gaps up to ``max_gap``) in as few reads as the 125-register limit allows."""
    order = sorted(
        range(len(device.points)), key=lambda i: (device.points[i].table, device.points[i].address)
    )
    blocks: list[Block] = []
    cur: list[int] = []
    table, start, end = Table.HOLDING, 0, 0  # end: one past the current block's last register
    for i in order:
        p = device.points[i]
        p_end = p.address + p.width
        if (
            cur
            and p.table == table
            and p.address <= end + device.max_gap
            and p_end - start <= MAX_READ_REGISTERS
        ):
            cur.append(i)
            end = max(end, p_end)
            continue
        if cur:
            blocks.append(Block(table, start, end - start, tuple(cur)))
        cur, table, start, end = [i], p.table, p.address, p_end
    if cur:
        blocks.append(Block(table, start, end - start, tuple(cur)))
    return tuple(blocks)


# ---------------------------------------------------------------------------------------------
# Decoding and encoding, vectorised over the points of a device


@dataclass(frozen=True)
class PointArrays:
    """A device's points as parallel arrays, in block order (the order of ``Block.points``)."""

    index: IntArray  # position in device.points
    block: IntArray  # which block each point is read in
    first: IntArray  # index of the point's first word in the concatenated words of all blocks
    second: IntArray  # of its second word (the first again for 16-bit types)
    type_code: IntArray
    little: BoolArray  # 32-bit word order: low word first
    scale: FloatArray
    offset: FloatArray
    has_loop: BoolArray
    at_4ma: FloatArray
    at_20ma: FloatArray
    low: FloatArray
    high: FloatArray
    table: IntArray  # 0 holding, 1 input
    address: IntArray


@dataclass(frozen=True)
class Decoded:
    value: FloatArray  # engineering value, NaN where missing (loop out of range, float NaN)
    under: BoolArray  # loop current below 3.8 mA
    over: BoolArray  # loop current above 20.5 mA
    loop_ma: FloatArray  # the loop current (NaN for points without a loop)


def point_arrays(device: ModbusDevice, blocks: Sequence[Block]) -> PointArrays:
    idx: list[int] = []
    blk: list[int] = []
    first: list[int] = []
    second: list[int] = []
    base = 0
    for b, block in enumerate(blocks):
        for i in block.points:
            p = device.points[i]
            w0 = base + p.address - block.start
            idx.append(i)
            blk.append(b)
            first.append(w0)
            second.append(w0 + 1 if p.width == 2 else w0)
        base += block.count
    pts = [device.points[i] for i in idx]
    loops = [p.loop for p in pts]

    def floats(get: Callable[[RegisterPoint], float]) -> FloatArray:
        return np.array([get(p) for p in pts], dtype=np.float64)

    return PointArrays(
        index=np.array(idx, dtype=np.int64),
        block=np.array(blk, dtype=np.int64),
        first=np.array(first, dtype=np.int64),
        second=np.array(second, dtype=np.int64),
        type_code=np.array([_TYPE_CODE[p.type] for p in pts], dtype=np.int64),
        little=np.array([p.word_order == "little" for p in pts], dtype=bool),
        scale=floats(lambda p: p.scale),
        offset=floats(lambda p: p.offset),
        has_loop=np.array([lp is not None for lp in loops], dtype=bool),
        at_4ma=np.array([lp.at_4ma if lp else 4.0 for lp in loops], dtype=np.float64),
        at_20ma=np.array([lp.at_20ma if lp else 20.0 for lp in loops], dtype=np.float64),
        low=np.array([lp.low if lp else 0.0 for lp in loops], dtype=np.float64),
        high=np.array([lp.high if lp else 1.0 for lp in loops], dtype=np.float64),
        table=np.array([0 if p.table is Table.HOLDING else 1 for p in pts], dtype=np.int64),
        address=np.array([p.address for p in pts], dtype=np.int64),
    )


def decode(pa: PointArrays, words: WordArray) -> Decoded:
    """Every point's value from the concatenated words of its device's blocks."""
    w0 = words[pa.first].astype(np.uint32)
    w1 = words[pa.second].astype(np.uint32)
    hi = np.where(pa.little, w1, w0)
    lo = np.where(pa.little, w0, w1)
    u32 = (hi << np.uint32(16)) | lo
    u16 = w0.astype(np.uint16)
    code = pa.type_code
    with np.errstate(invalid="ignore"):  # a register pair may hold a signalling NaN
        f32 = u32.view(np.float32).astype(np.float64)
    raw = np.select(
        [code == _U16, code == _I16, code == _U32, code == _I32],
        [
            u16.astype(np.float64),
            u16.view(np.int16).astype(np.float64),
            u32.astype(np.float64),
            u32.view(np.int32).astype(np.float64),
        ],
        default=f32,
    )
    reading = raw * pa.scale + pa.offset
    with np.errstate(invalid="ignore"):
        ma = np.where(pa.has_loop, 4.0 + 16.0 * (reading - pa.at_4ma) / (pa.at_20ma - pa.at_4ma), np.nan)
        under = pa.has_loop & (ma < NE43_UNDER_MA)
        over = pa.has_loop & (ma > NE43_OVER_MA)
    eng = pa.low + (pa.high - pa.low) * (ma - 4.0) / 16.0
    value = np.where(pa.has_loop, np.where(under | over, np.nan, eng), reading)
    return Decoded(value, under, over, ma)


@dataclass(frozen=True)
class Encoded:
    table: IntArray  # 0 holding, 1 input
    address: IntArray
    word: WordArray


def encode(pa: PointArrays, values: FloatArray, write: BoolArray | None = None) -> Encoded:
    """Register words holding ``values`` (the inverse of ``decode``), for the points in ``write``.

    A loop point saturates at 3.8..20.5 mA as a transmitter does, and a missing value drives the
    NE 43 failure current (3.6 mA); a float32 carries NaN; an integer register cannot say
    "missing", so a NaN there is not written (the device holds its last value).
    """
    sel = np.ones(values.size, bool) if write is None else write.copy()
    code = pa.type_code
    nan = np.isnan(values)
    ma = np.clip(4.0 + 16.0 * (values - pa.low) / (pa.high - pa.low), NE43_UNDER_MA, NE43_OVER_MA)
    ma = np.where(nan, NE43_FAILURE_MA, ma)
    reading = np.where(pa.has_loop, pa.at_4ma + (ma - 4.0) * (pa.at_20ma - pa.at_4ma) / 16.0, values)
    raw = (reading - pa.offset) / pa.scale
    sel &= ~(np.isnan(raw) & (code != _F32))
    raw = np.where(np.isnan(raw) & (code != _F32), 0.0, raw)
    ints = np.zeros(raw.size, np.float64)
    for c, (least, most) in _INT_RANGE.items():
        m = code == c
        ints[m] = np.clip(np.rint(raw[m]), least, most)
    u32 = np.where(code == _I32, ints.astype(np.int64) & 0xFFFFFFFF, ints.astype(np.int64)).astype(np.uint32)
    u32 = np.where(code == _I16, (ints.astype(np.int64) & 0xFFFF).astype(np.uint32), u32)
    with np.errstate(over="ignore", invalid="ignore"):
        f32 = raw.astype(np.float32).view(np.uint32)
    u32 = np.where(code == _F32, f32, u32)
    wide = np.isin(code, (_U32, _I32, _F32))
    hi = (u32 >> np.uint32(16)).astype(np.uint16)
    lo = (u32 & np.uint32(0xFFFF)).astype(np.uint16)
    first = np.where(wide, np.where(pa.little, lo, hi), lo)
    second = np.where(pa.little, hi, lo)
    keep_w = sel & wide
    return Encoded(
        table=np.concatenate([pa.table[sel], pa.table[keep_w]]),
        address=np.concatenate([pa.address[sel], pa.address[keep_w] + 1]),
        word=np.concatenate([first[sel], second[keep_w]]).astype(np.uint16),
    )
