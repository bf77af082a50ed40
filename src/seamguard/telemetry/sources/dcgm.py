"""DCGM exporter series -> the engine's catalog: the mapping (``data/dcgm.yaml``), entity
resolution from labels, and the per-target state that turns XID counters into events.

Everything per series is decided once, when its key is first seen (``DcgmTarget.resolve``):
the entity (``gpu/<node>/<gpu>`` from the ``Hostname`` and ``gpu`` labels, matched without
regard to case, or a UUID override), the signal, the scale and what is wrong with it. Each
scrape is then whole-array numpy work over slots. DCGM's blank sentinels (values near 2^63)
are dropped here and counted, never passed on as measurements.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cache
from importlib import resources
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import yaml
from pydantic import Field, field_validator, model_validator

from seamguard.model.catalog import SignalKind, signal_catalog
from seamguard.model.topology import Topology
from seamguard.strict_model import StrictModel
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.base import SourceNotice
from seamguard.telemetry.sources.openmetrics import SeriesCache
from seamguard.telemetry.store import SENTINEL_THRESHOLD

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class Role(IntEnum):
    VALUE = 0
    SUM = 1
    XID_COUNTER = 2
    XID_GAUGE = 3


_ROLES = {"value": Role.VALUE, "sum": Role.SUM, "xid_counter": Role.XID_COUNTER, "xid_gauge": Role.XID_GAUGE}


@dataclass(frozen=True)
class FieldMap:
    field: str  # the exporter's metric name
    signal: str
    signal_index: int
    role: Role
    scale: float = 1.0
    offset: float = 0.0
    default: bool = True  # exported by dcgm-exporter's stock counters CSV
    render: bool = False  # the field the twin's exporter writes for the signal


@dataclass(frozen=True)
class DcgmMapping:
    fields: dict[str, FieldMap]
    not_default: tuple[str, ...]  # known fields seamguard reads no signal from

    def rendered(self) -> dict[str, list[FieldMap]]:
        """signal -> the fields the twin's exporter writes for it."""
        out: dict[str, list[FieldMap]] = {}
        for f in self.fields.values():
            if f.render:
                out.setdefault(f.signal, []).append(f)
        return out


@cache
def dcgm_mapping() -> DcgmMapping:
    """The packaged mapping, checked against the signal catalog."""
    text = resources.files("seamguard.data").joinpath("dcgm.yaml").read_text(encoding="utf-8")
    return parse_mapping(yaml.safe_load(text), "seamguard/data/dcgm.yaml")


def parse_mapping(data: Any, where: str) -> DcgmMapping:
    from seamguard.errors import InputError

    catalog = signal_catalog()
    if not isinstance(data, dict) or not isinstance(data.get("fields"), dict):
        raise InputError(where, "expected a mapping with a 'fields' table")
    fields: dict[str, FieldMap] = {}
    for name, row in data["fields"].items():
        at = f"{where}: fields.{name}"
        if not isinstance(row, dict) or "signal" not in row:
            raise InputError(at, "expected {signal: ..., role?, scale?, offset?, default?}")
        sig = catalog.get(str(row["signal"]))
        if sig is None:
            raise InputError(at, f"unknown signal {row['signal']!r}")
        role = _ROLES.get(str(row.get("role", "value")))
        if role is None:
            raise InputError(at, f"role must be one of {', '.join(_ROLES)}, got {row.get('role')!r}")
        if (role in (Role.XID_COUNTER, Role.XID_GAUGE)) != (sig.kind is SignalKind.EVENT):
            raise InputError(at, f"role {row.get('role', 'value')} does not fit {sig.kind} signal {sig.name}")
        if role is Role.SUM and sig.kind is not SignalKind.COUNTER:
            raise InputError(at, f"role sum needs a counter signal, {sig.name} is a {sig.kind}")
        fields[str(name)] = FieldMap(
            field=str(name),
            signal=sig.name,
            signal_index=sig.index,
            role=role,
            scale=float(row.get("scale", 1.0)),
            offset=float(row.get("offset", 0.0)),
            default=bool(row.get("default", True)),
            render=bool(row.get("render", False)),
        )
    return DcgmMapping(fields, tuple(str(x) for x in data.get("not_default", ())))


# ---- configuration ------------------------------------------------------------------------------
class HostnameRule(StrictModel):
    """How an exporter's Hostname label becomes the inventory's node name."""

    strip_suffixes: tuple[str, ...] = ()  # e.g. [".cluster.local"]: removed when the host ends with one
    strip_domain: bool = False  # keep the text before the first dot
    lowercase: bool = False
    prefix: str = ""  # prepended after the rest, e.g. "n" when hosts are bare numbers

    def node_name(self, host: str) -> str:
        for suffix in self.strip_suffixes:
            if suffix and host.endswith(suffix):
                host = host[: -len(suffix)]
                break
        if self.strip_domain:
            host = host.split(".", 1)[0]
        if self.lowercase:
            host = host.lower()
        return self.prefix + host


class DcgmEndpoint(StrictModel):
    url: str
    node: str | None = None  # the node's name when its exporter sets no Hostname label

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"endpoint url must start with http:// or https://, got {v!r}")
        return v


class DcgmSourceConfig(StrictModel):
    """Like one Prometheus scrape job: the exporter endpoints and how to read them."""

    name: str = "dcgm"
    endpoints: tuple[DcgmEndpoint, ...] = ()
    timeout_s: float = Field(default=3.0, gt=0, le=120)  # per request, whole body included
    concurrency: int = Field(default=256, ge=1, le=8192)  # requests in flight at once
    max_bytes: int = Field(default=16 * 2**20, ge=1024)  # a body past this is refused
    max_malformed_fraction: float = Field(default=0.2, ge=0, le=1)
    hostname: HostnameRule = HostnameRule()
    uuid_entities: dict[str, str] = Field(default_factory=dict)  # GPU UUID -> entity id

    @field_validator("endpoints", mode="before")
    @classmethod
    def _plain_urls(cls, v: Any) -> Any:
        if isinstance(v, list | tuple):
            return [{"url": x} if isinstance(x, str) else x for x in v]
        return v

    @model_validator(mode="after")
    def _checks(self) -> Self:
        urls = [e.url for e in self.endpoints]
        dup = [u for u, n in Counter(urls).items() if n > 1]
        if dup:
            raise ValueError(f"endpoint listed twice: {dup[0]}")
        for uuid, eid in self.uuid_entities.items():
            if not eid.startswith("gpu/") or eid.count("/") != 2:
                raise ValueError(f"uuid_entities[{uuid}]: expected gpu/<node>/<index>, got {eid!r}")
        return self


# ---- one target's series and state --------------------------------------------------------------
@dataclass
class Tally:
    """What one conversion dropped or found, for notices and counts."""

    samples: int = 0
    sentinel: int = 0
    nonfinite: int = 0
    xid_events: int = 0
    unknown: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)

    def merge(self, other: Tally) -> None:
        self.samples += other.samples
        self.sentinel += other.sentinel
        self.nonfinite += other.nonfinite
        self.xid_events += other.xid_events
        self.unknown.update(other.unknown)
        self.rejected.update(other.rejected)

    def notices(self, source: str, where: str) -> list[SourceNotice]:
        out = [SourceNotice(source, where, f"{n} series skipped: {why}") for why, n in self.rejected.items()]
        if self.sentinel:
            out.append(
                SourceNotice(
                    source, where, f"{self.sentinel} blank-sentinel values (near 2^63) read as missing"
                )
            )
        if self.nonfinite:
            out.append(SourceNotice(source, where, f"{self.nonfinite} NaN/Inf values read as missing"))
        return out


_NO_ENTITY = -1


class SlotTable:
    """What each series slot means (entity, signal, role, scale, why it is skipped) and the XID
    memory, shared by every endpoint of a source so one poll converts in one numpy pass."""

    def __init__(
        self, topology: Topology, config: DcgmSourceConfig, mapping: DcgmMapping | None = None
    ) -> None:
        self.topology = topology
        self.config = config
        self.mapping = mapping or dcgm_mapping()
        self._entity: list[int] = []
        self._signal: list[int] = []
        self._role: list[int] = []
        self._scale: list[float] = []
        self._offset: list[float] = []
        self._code: list[int] = []
        self._note: list[int] = []  # index into _notes: the unknown name or why it was rejected
        self._eligible: list[bool] = []  # an XID series born after its endpoint's first scrape
        self._notes: list[str] = []
        self._note_ix: dict[str, int] = {}
        self._arrays: (
            tuple[
                IntArray,
                IntArray,
                IntArray,
                FloatArray,
                FloatArray,
                IntArray,
                IntArray,
                npt.NDArray[np.bool_],
            ]
            | None
        ) = None
        self._has_counter: set[int] = set()  # entities with an XID counter series
        self._prev = np.zeros(0)  # per slot: the XID series' last value
        self._sum_fields: dict[
            int, IntArray
        ] = {}  # summed signal -> per entity, the most fields seen at once

    @property
    def n_slots(self) -> int:
        return len(self._entity)

    def _note_id(self, text: str) -> int:
        ix = self._note_ix.get(text)
        if ix is None:
            ix = self._note_ix[text] = len(self._notes)
            self._notes.append(text)
        return ix

    def _add(
        self,
        entity: int,
        signal: int,
        role: Role,
        fm: FieldMap | None,
        code: int,
        note: str,
        eligible: bool = False,
    ) -> int:
        self._entity.append(entity)
        self._signal.append(signal)
        self._role.append(int(role))
        self._scale.append(fm.scale if fm else 1.0)
        self._offset.append(fm.offset if fm else 0.0)
        self._code.append(code)
        self._note.append(self._note_id(note) if note else -1)
        self._eligible.append(eligible)
        self._arrays = None
        if role is Role.XID_COUNTER and entity >= 0:
            self._has_counter.add(entity)
        return len(self._entity) - 1

    def resolve(
        self, name: str, labels: dict[str, str], node: str | None = None, eligible: bool = False
    ) -> int:
        """A new series key: decide its slot once (unknown name, rejected, or mapped). ``node``
        names the host when the series has no Hostname label; ``eligible``: its endpoint was
        scraped before, so a first XID count is news, not history."""
        fm = self.mapping.fields.get(name)
        if fm is None:
            return self._add(_NO_ENTITY, -1, Role.VALUE, None, 0, name)
        lab = {k.lower(): v for k, v in labels.items()}
        code = 0
        if fm.role is Role.XID_COUNTER:
            raw = lab.get("xid", "")
            if not (raw.isascii() and raw.isdecimal()):
                return self._reject(fm, f"label xid={raw!r} is not an XID code", name, labels)
            code = int(raw)
        uuid = lab.get("uuid", "")
        eid = self.config.uuid_entities.get(uuid) if uuid else None
        if eid is None:
            host = lab.get("hostname") or node
            if not host:
                return self._reject(fm, "no Hostname label and no node set for the endpoint", name, labels)
            gpu = lab.get("gpu", "")
            if not (gpu.isascii() and gpu.isdecimal()):
                return self._reject(fm, f"label gpu={gpu!r} is not a GPU index", name, labels)
            eid = f"gpu/{self.config.hostname.node_name(host)}/{int(gpu)}"
        gidx = self.topology.lookup(eid)
        if gidx is None:
            return self._reject(fm, f"{eid} is not in the inventory", name, labels)
        return self._add(gidx, fm.signal_index, fm.role, fm, code, "", eligible)

    def _reject(self, fm: FieldMap, why: str, name: str, labels: dict[str, str]) -> int:
        shown = ",".join(f'{k}="{v}"' for k, v in list(labels.items())[:4])
        return self._add(_NO_ENTITY, fm.signal_index, fm.role, fm, 0, f"{why} (e.g. {name}{{{shown}}})")

    def _tables(
        self,
    ) -> tuple[
        IntArray, IntArray, IntArray, FloatArray, FloatArray, IntArray, IntArray, npt.NDArray[np.bool_]
    ]:
        if self._arrays is None:
            self._arrays = (
                np.asarray(self._entity, dtype=np.int64),
                np.asarray(self._signal, dtype=np.int64),
                np.asarray(self._role, dtype=np.int64),
                np.asarray(self._scale, dtype=np.float64),
                np.asarray(self._offset, dtype=np.float64),
                np.asarray(self._code, dtype=np.int64),
                np.asarray(self._note, dtype=np.int64),
                np.asarray(self._eligible, dtype=bool),
            )
            grown = np.full(self.n_slots, np.nan)
            grown[: self._prev.size] = self._prev
            self._prev = grown
        return self._arrays

    def convert(
        self, slot: IntArray, value: FloatArray, ts: FloatArray, now: float
    ) -> tuple[TelemetryBatch, Tally]:
        """Samples (by slot) of one scrape -> a batch in the engine's catalog, and what was dropped."""
        tally = Tally()
        ent_t, sig_t, role_t, scale_t, off_t, code_t, note_t, elig_t = self._tables()
        keep = slot >= 0
        slot, value, ts = slot[keep], value[keep], ts[keep]
        ts = np.where(np.isnan(ts), now, ts)
        ent, sig = ent_t[slot], sig_t[slot]
        unknown = sig < 0
        if unknown.any():
            names = np.bincount(note_t[slot[unknown]], minlength=len(self._notes))
            for ix in np.flatnonzero(names).tolist():
                tally.unknown[self._notes[ix]] += int(names[ix])
        rejected = ~unknown & (ent < 0)
        if rejected.any():
            why = np.bincount(note_t[slot[rejected]], minlength=len(self._notes))
            for ix in np.flatnonzero(why).tolist():
                tally.rejected[self._notes[ix]] += int(why[ix])
        ok = ~unknown & ~rejected
        finite = np.isfinite(value)
        sentinel = finite & (np.abs(value) >= SENTINEL_THRESHOLD)
        tally.sentinel = int(np.count_nonzero(ok & sentinel))
        tally.nonfinite = int(np.count_nonzero(ok & ~finite))
        ok &= finite & ~sentinel
        slot, ent, sig, value, ts = slot[ok], ent[ok], sig[ok], value[ok], ts[ok]
        role = role_t[slot]
        value = value * scale_t[slot] + off_t[slot]
        parts = [self._plain(role == Role.VALUE, ent, sig, ts, value)]
        parts.append(self._summed(role == Role.SUM, ent, sig, ts, value))
        xid = self._xids(role, slot, ent, sig, ts, value, code_t, elig_t)
        tally.xid_events = len(xid)
        parts.append(xid)
        batch = TelemetryBatch.concat(parts)
        tally.samples = len(batch)
        return batch, tally

    @staticmethod
    def _plain(
        pick: npt.NDArray[np.bool_], ent: IntArray, sig: IntArray, ts: FloatArray, val: FloatArray
    ) -> TelemetryBatch:
        return TelemetryBatch(ent[pick], sig[pick], ts[pick], val[pick])

    def _summed(
        self, pick: npt.NDArray[np.bool_], ent: IntArray, sig: IntArray, ts: FloatArray, val: FloatArray
    ) -> TelemetryBatch:
        """Fields that add up to one counter (NVLink error kinds): one sum per GPU and signal, and
        only when as many of its fields arrived as ever did for that GPU. A partial sum (one field
        blank this scrape) would fall, which the store reads as a counter reset and the next full
        sum as a burst of errors; skipped, the series just waits for the next whole scrape."""
        if not pick.any():
            return TelemetryBatch.empty()
        e, s, t, v = ent[pick], sig[pick], ts[pick], val[pick]
        n_sig = int(s.max()) + 1
        keys, inv = np.unique(e * n_sig + s, return_inverse=True)
        total = np.bincount(inv, weights=v, minlength=keys.size).astype(np.float64)
        got = np.bincount(inv, minlength=keys.size)
        k_ent, k_sig = keys // n_sig, keys % n_sig
        whole = np.ones(keys.size, dtype=bool)
        for signal in np.unique(k_sig).tolist():
            want = self._sum_fields.setdefault(signal, np.zeros(self.topology.n_entities, dtype=np.int64))
            on = k_sig == signal
            want[k_ent[on]] = np.maximum(want[k_ent[on]], got[on])
            whole[on] = got[on] >= want[k_ent[on]]
        newest = np.full(keys.size, -np.inf)
        np.maximum.at(newest, inv, t)
        return TelemetryBatch(k_ent[whole], k_sig[whole], newest[whole], total[whole])

    def _xids(self, role: IntArray, slot: IntArray, ent: IntArray, sig: IntArray, ts: FloatArray,
              value: FloatArray, code_t: IntArray, elig_t: npt.NDArray[np.bool_]) -> TelemetryBatch:  # fmt: skip
        """XID events: an increment of DCGM_EXP_XID_ERRORS_TOTAL{xid=...}, or, for a GPU without
        that counter, a change of DCGM_FI_DEV_XID_ERRORS to a new non-zero code. The first scrape
        of a target only sets the baseline: an old count is not a new event."""
        counter = role == Role.XID_COUNTER
        gauge = role == Role.XID_GAUGE
        if self._has_counter and gauge.any():
            gauge &= ~np.isin(ent, np.fromiter(self._has_counter, np.int64, len(self._has_counter)))
        pick = counter | gauge
        if not pick.any():
            return TelemetryBatch.empty()
        s, v = slot[pick], value[pick]
        prev = self._prev[s]
        seen = np.isfinite(prev) | elig_t[s]
        base = np.where(np.isfinite(prev), prev, 0.0)
        fired = np.where(counter[pick], seen & (v > base), seen & (v > 0) & (v != prev))
        self._prev[s] = v
        code = np.where(counter[pick], code_t[s], v.astype(np.int64))
        return TelemetryBatch(
            ent[pick][fired], sig[pick][fired], ts[pick][fired], code[fired].astype(np.float64)
        )


class DcgmTarget:
    """One exporter (or one Prometheus server): its key cache and the table its slots live in."""

    def __init__(
        self, topology: Topology, config: DcgmSourceConfig, *, node: str | None = None,
        mapping: DcgmMapping | None = None, table: SlotTable | None = None,
    ) -> None:  # fmt: skip
        self.table = table or SlotTable(topology, config, mapping)
        self.node = node
        self.scraped = 0  # scrapes parsed: XID series first seen in the first one are only a baseline
        self.cache = SeriesCache(self.resolve)

    def resolve(self, name: str, labels: dict[str, str]) -> int:
        return self.table.resolve(name, labels, self.node, self.scraped > 0)

    def slot_for(self, name: str, labels: dict[str, str]) -> int:
        """Slot of a series given as parsed labels (the Prometheus API's JSON), cached by key."""
        key = name + "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"
        slot = self.cache.lookup(key)
        if slot is None:
            slot = self.resolve(name, labels)
            self.cache.remember(key, slot)
        return slot

    def convert(
        self, slot: IntArray, value: FloatArray, ts: FloatArray, now: float
    ) -> tuple[TelemetryBatch, Tally]:
        """This target's samples of one scrape -> a batch; see ``SlotTable.convert``."""
        self.scraped += 1
        return self.table.convert(slot, value, ts, now)
