"""DCGM exporter series -> the engine's catalog: entity resolution from labels, and the
per-poll conversion (copies of one value read once, XID counts and gauges turned into events).

Everything per series is decided once, when its key is first seen (``SlotTable.resolve``):
the entity, the signal, the scale, and what is wrong with it. Each scrape is then whole-array
numpy work over slots. DCGM's blank sentinels (values near 2^63) are dropped here and counted,
never passed on as measurements.

Where a series lives: a GPU ``UUID`` listed in ``uuid_entities`` wins; otherwise its node comes
from the places ``node_from`` lists, in order (the scrape target, the ``Hostname`` label, any
label such as ``kubernetes_node``), and the first that names a node of the inventory wins. A
series carrying ``GPU_I_ID`` comes from a MIG GPU instance: a field measured per instance goes
to ``gpu/<node>/<gpu>/mig/<GPU_I_ID>``, every other field is the GPU's own value repeated on
each of its instances and is read once per GPU.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from seamguard.model.entities import mig_id
from seamguard.model.topology import Topology
from seamguard.model.xid import unknown_xid_notice_text, xid_catalog
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.base import SourceNotice
from seamguard.telemetry.sources.dcgm_config import TARGET, DcgmReading, host_of
from seamguard.telemetry.sources.dcgm_mapping import DcgmMapping, FieldMap, Role, dcgm_mapping
from seamguard.telemetry.sources.openmetrics import UNWANTED, SeriesCache
from seamguard.telemetry.sources.xid_window import XidWindows
from seamguard.telemetry.store import SENTINEL_THRESHOLD

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

_NO_ENTITY = -1
_MAX_CODE = 4096  # XID codes are below 256 today; the dedup key reserves room for more
_EXAMPLE_LABELS = frozenset(
    {"gpu", "uuid", "gpu_i_id", "xid", "hostname"}
)  # shown in a skipped series' example


@dataclass(frozen=True)
class ScrapeTarget:
    """Where a series was read: a name for notices, and the host ``node_from: [target]`` means."""

    name: str
    host: str = ""

    @staticmethod
    def of_instance(labels: dict[str, str]) -> ScrapeTarget:
        """A series read through Prometheus: its target is its ``instance`` label."""
        inst = next((v for k, v in labels.items() if k.lower() == "instance"), "")
        return ScrapeTarget(
            f"instance {inst!r}" if inst else "a series without an instance label", host_of(inst)
        )


def _number(text: str, digits: int = 6) -> int | None:
    """A label's small decimal number, or None. Bounded before ``int``: Python refuses (raises on)
    a string of more than 4,300 digits, and an exporter's label is not to be trusted that far."""
    if 0 < len(text) <= digits and text.isascii() and text.isdecimal():
        return int(text)
    return None


def _clip(text: str, limit: int = 80) -> str:
    """A label value as a notice quotes it: an exporter's text is bounded before it is journaled."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- what one conversion dropped or found --------------------------------------------------------
@dataclass
class Tally:
    samples: int = 0
    sentinel: int = 0
    nonfinite: int = 0
    unknown: Counter[str] = field(default_factory=Counter)  # metric name -> samples
    rejected: Counter[str] = field(default_factory=Counter)  # reason -> samples
    examples: dict[str, str] = field(default_factory=dict)  # reason -> one series it was given for
    unknown_xids: dict[int, str] = field(default_factory=dict)  # XID code not in the catalog -> a GPU

    def notices(self, source: str, where: str) -> list[SourceNotice]:
        out = [
            SourceNotice(source, where, f"{n} series skipped: {why} (e.g. {self.examples.get(why, '?')})")
            for why, n in self.rejected.items()
        ]
        if self.sentinel:
            out.append(
                SourceNotice(
                    source, where, f"{self.sentinel} blank-sentinel values (near 2^63) read as missing"
                )
            )
        if self.nonfinite:
            out.append(SourceNotice(source, where, f"{self.nonfinite} NaN/Inf values read as missing"))
        for code, gpu in sorted(self.unknown_xids.items()):
            out.append(SourceNotice(source, where, f"on {gpu}: {unknown_xid_notice_text(code)}"))
        return out


# ---- the slot table ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Columns:
    """Per slot, as arrays: what a sample of that series means."""

    entity: IntArray  # -1: skipped (unknown name or rejected series)
    signal: IntArray  # -1: unknown name
    role: IntArray
    code: IntArray  # the XID code of a windowed-count series
    note: IntArray  # index into the table's notes: the unknown name or why the series is skipped
    field: IntArray  # FieldMap.index: copies of one field on one GPU share it
    copy: BoolArray  # a MIG instance's copy of its GPU's own value
    scale: FloatArray
    offset: FloatArray
    window: FloatArray  # the XID window (s) of a windowed-count series

    @staticmethod
    def of(cols: dict[str, list[float]]) -> _Columns:
        def ints(k: str) -> IntArray:
            return np.asarray(cols[k], dtype=np.int64)

        def floats(k: str) -> FloatArray:
            return np.asarray(cols[k], dtype=np.float64)

        return _Columns(
            entity=ints("entity"), signal=ints("signal"), role=ints("role"), code=ints("code"),
            note=ints("note"), field=ints("field"), copy=np.asarray(cols["copy"], dtype=bool),
            scale=floats("scale"), offset=floats("offset"), window=floats("window"),
        )  # fmt: skip


class SlotTable:
    """What each series slot means, and the XID memory, shared by every endpoint of a source so
    that one poll converts in one numpy pass."""

    def __init__(self, topology: Topology, config: DcgmReading, mapping: DcgmMapping | None = None) -> None:
        self.topology = topology
        self.config = config
        self.mapping = mapping or dcgm_mapping()
        self._cols: dict[str, list[float]] = {
            k: [] for k in ("entity", "signal", "role", "scale", "offset", "code", "note", "field", "copy", "window")
        }  # fmt: skip
        self._arrays: _Columns | None = None
        self._notes: list[str] = []  # unknown metric names and reasons for skipping a series
        self._note_ix: dict[str, int] = {}
        self._examples: dict[str, str] = {}
        n = topology.n_entities
        self._has_window = np.zeros(n, dtype=bool)  # GPUs with an XID count series: the gauge is ignored
        self._gauge_prev = np.full(n, np.nan)  # per GPU: the XID gauge's last value
        self._sum_fields: dict[
            int, IntArray
        ] = {}  # summed signal -> per entity, the most fields seen at once
        self.windows = XidWindows(n)

    @property
    def n_slots(self) -> int:
        return len(self._cols["entity"])

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
        fm: FieldMap | None,
        *,
        code: int = 0,
        note: str = "",
        copy: bool = False,
        window_s: float = 0.0,
    ) -> int:
        values = {
            "entity": entity, "signal": signal, "role": int(fm.role) if fm else 0,
            "scale": fm.scale if fm else 1.0, "offset": fm.offset if fm else 0.0, "code": code,
            "note": self._note_id(note) if note else -1, "field": fm.index if fm else 0,
            "copy": copy, "window": window_s,
        }  # fmt: skip
        for k, v in values.items():
            self._cols[k].append(float(v))
        self._arrays = None
        return self.n_slots - 1

    def resolve(self, name: str, labels: dict[str, str], target: ScrapeTarget | None = None) -> int:
        """A new series key: decide its slot once (unknown name, skipped with a reason, or mapped).
        ``target`` None: the series names its own (its ``instance`` label, through Prometheus)."""
        fm = self.mapping.fields.get(name)
        if fm is None:
            if name in self.mapping.known_unmapped:
                return UNWANTED
            return self._add(_NO_ENTITY, -1, None, note=name)
        lab = {k.lower(): v for k, v in labels.items()}
        code, window_s = 0, 0.0
        if fm.role is Role.XID_WINDOW:
            raw = lab.get("xid", "")  # absent on the one 0-valued series of a GPU without XIDs
            xid = _number(raw, 4)
            if raw and (xid is None or xid >= _MAX_CODE):
                return self._reject(fm, f"label xid={_clip(raw)!r} is not an XID code", name, labels)
            code = xid or 0
            ms = _number(lab.get("window_size_in_ms", ""), 12)
            window_s = ms / 1000.0 if ms else self.config.xid_window_s
        raw_gi = lab.get("gpu_i_id", "")
        gi = _number(raw_gi)
        if raw_gi and gi is None:
            return self._reject(
                fm, f"label GPU_I_ID={_clip(raw_gi)!r} is not a GPU instance id", name, labels
            )
        uuid = lab.get("uuid", "")
        eid = self.config.uuid_entities.get(uuid) if uuid else None
        if eid is None:
            raw_gpu = lab.get("gpu", "")
            gpu = _number(raw_gpu)
            if gpu is None:
                return self._reject(fm, f"label gpu={_clip(raw_gpu)!r} is not a GPU index", name, labels)
            node, why = self._node(lab, target or ScrapeTarget.of_instance(labels))
            if node is None:
                return self._reject(fm, why, name, labels)
            eid = f"gpu/{node}/{gpu}"
        gidx = self.topology.lookup(eid)
        if gidx is None:
            return self._reject(fm, f"{eid} is not in the inventory", name, labels)
        if gi is not None and fm.instance_signal:  # measured per MIG instance: the instance's own entity
            node_part, _, index = eid[len("gpu/") :].rpartition("/")
            mig = self.topology.lookup(mig_id(node_part, int(index), gi))
            if mig is None:
                why = (
                    "a MIG instance the inventory does not list (name the node's instances in its mig column)"
                )
                return self._reject(fm, why, name, labels)
            return self._add(mig, fm.instance_signal_index, fm)
        if fm.role is Role.XID_WINDOW:
            self._has_window[gidx] = True
        return self._add(gidx, fm.signal_index, fm, code=code, copy=gi is not None, window_s=window_s)

    def _node(self, lab: dict[str, str], target: ScrapeTarget) -> tuple[str | None, str]:
        """The first place of ``node_from`` that names a node of the inventory, or why none did."""
        tried: list[str] = []
        for place in self.config.node_from:
            raw = target.host if place == TARGET else lab.get(place.lower(), "")
            what = "target" if place == TARGET else f"label {place}"
            if not raw:
                tried.append(f"{what} absent")
                continue
            node = self.config.hostname.node_name(raw)
            if self.topology.lookup(f"node/{node}") is not None:
                return node, ""
            tried.append(f"{what} {_clip(raw)!r}" + (f" (as {_clip(node)!r})" if node != raw else ""))
        return None, f"no node of the inventory named for {target.name}: {'; '.join(tried)}"

    def _reject(self, fm: FieldMap, why: str, name: str, labels: dict[str, str]) -> int:
        if why not in self._examples:  # the labels seamguard reads, not the exporter's dozen
            wanted = _EXAMPLE_LABELS | {p.lower() for p in self.config.node_from}
            shown = [f'{k}="{_clip(v)}"' for k, v in labels.items() if k.lower() in wanted]
            more = ",..." if len(shown) < len(labels) else ""
            self._examples[why] = f"{name}{{{','.join(shown)}{more}}}"
        return self._add(_NO_ENTITY, fm.signal_index, fm, note=why)

    def _tables(self) -> _Columns:
        if self._arrays is None:
            self._arrays = _Columns.of(self._cols)
        return self._arrays

    def convert(
        self, slot: IntArray, value: FloatArray, ts: FloatArray, now: float
    ) -> tuple[TelemetryBatch, Tally]:
        """Samples (by slot) of one poll -> a batch in the engine's catalog, and what was dropped."""
        tally = Tally()
        t = self._tables()
        keep = slot >= 0
        slot, value, ts = slot[keep], value[keep], ts[keep]
        ts = np.where(np.isnan(ts), now, ts)
        ent, sig = t.entity[slot], t.signal[slot]
        unknown = sig < 0
        if unknown.any():
            for ix, n in self._note_counts(t.note[slot[unknown]]):
                tally.unknown[self._notes[ix]] += n
        rejected = ~unknown & (ent < 0)
        if rejected.any():
            for ix, n in self._note_counts(t.note[slot[rejected]]):
                why = self._notes[ix]
                tally.rejected[why] += n
                tally.examples[why] = self._examples.get(why, "?")
        ok = ~unknown & ~rejected
        finite = np.isfinite(value)
        sentinel = finite & (np.abs(value) >= SENTINEL_THRESHOLD)
        tally.sentinel = int(np.count_nonzero(ok & sentinel))
        tally.nonfinite = int(np.count_nonzero(ok & ~finite))
        ok &= finite & ~sentinel
        ok &= self._first_copies(slot, ent, ok)
        slot, ent, sig, value, ts = slot[ok], ent[ok], sig[ok], value[ok], ts[ok]
        role = t.role[slot]
        value = value * t.scale[slot] + t.offset[slot]
        parts = [
            TelemetryBatch(*(a[role == Role.VALUE] for a in (ent, sig, ts, value))),
            self._summed(role == Role.SUM, ent, sig, ts, value),
            self._window_events(role == Role.XID_WINDOW, slot, ent, sig, ts, value, tally),
            self._gauge_events(role == Role.XID_GAUGE, ent, sig, ts, value, tally),
        ]
        batch = TelemetryBatch.concat(parts)
        tally.samples = len(batch)
        return batch, tally

    def _note_counts(self, notes: IntArray) -> list[tuple[int, int]]:
        counts = np.bincount(notes, minlength=len(self._notes))
        return [(ix, int(counts[ix])) for ix in np.flatnonzero(counts).tolist()]

    def _first_copies(self, slot: IntArray, ent: IntArray, ok: BoolArray) -> BoolArray:
        """Keep one sample per (GPU, field, XID code) among the copies MIG instance series carry
        of their GPU's own value; a series of the whole GPU, when there is one, wins. Without
        this a GPU of four instances would send four NVLink sums and count one XID four times."""
        t = self._arrays
        assert t is not None
        copy = t.copy[slot] & ok
        if not copy.any():
            return np.ones(slot.size, dtype=bool)
        n_fields = len(self.mapping.fields)
        key = (ent * n_fields + t.field[slot]) * _MAX_CODE + t.code[slot]
        cand = np.flatnonzero(ok)
        order = cand[np.lexsort((cand, copy[cand]))]  # whole-GPU series first, then scrape order
        _, first = np.unique(key[order], return_index=True)
        winner = np.zeros(slot.size, dtype=bool)
        winner[order[first]] = True
        keep: BoolArray = ~copy | winner
        return keep

    def _summed(
        self, pick: BoolArray, ent: IntArray, sig: IntArray, ts: FloatArray, val: FloatArray
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

    def _window_events(self, pick: BoolArray, slot: IntArray, ent: IntArray, sig: IntArray, ts: FloatArray,
                       value: FloatArray, tally: Tally) -> TelemetryBatch:  # fmt: skip
        """``DCGM_EXP_XID_ERRORS_COUNT`` rows -> XID events (``xid_window.XidWindows``)."""
        if not pick.any():
            return TelemetryBatch.empty()
        t = self._arrays
        assert t is not None
        e, c, v, when, w = ent[pick], t.code[slot[pick]], value[pick], ts[pick], t.window[slot[pick]]
        key = e * _MAX_CODE + c
        uniq, inv = np.unique(key, return_inverse=True)  # one row per (GPU, code): the largest count
        count = np.full(uniq.size, -np.inf)
        np.maximum.at(count, inv, v)
        last = np.full(uniq.size, -np.inf)
        np.maximum.at(last, inv, when)
        window = np.zeros(uniq.size)
        np.maximum.at(window, inv, w)
        got_e, got_c, got_t = self.windows.update(uniq // _MAX_CODE, uniq % _MAX_CODE, count, last, window)
        return self._events(got_e, int(sig[pick][0]), got_t, got_c, tally)

    def _gauge_events(self, pick: BoolArray, ent: IntArray, sig: IntArray, ts: FloatArray, value: FloatArray,
                      tally: Tally) -> TelemetryBatch:  # fmt: skip
        """``DCGM_FI_DEV_XID_ERRORS`` (the last XID's code), for GPUs without the windowed count:
        a change to a new non-zero code is an event. The first read of a GPU is its baseline."""
        pick = pick & ~self._has_window[np.maximum(ent, 0)]
        if not pick.any():
            return TelemetryBatch.empty()
        e, v, when = ent[pick], value[pick], ts[pick]
        prev = self._gauge_prev[e]
        fired = np.isfinite(prev) & (v > 0) & (v != prev)
        self._gauge_prev[e] = v
        return self._events(e[fired], int(sig[pick][0]), when[fired], v[fired].astype(np.int64), tally)

    def _events(
        self, ent: IntArray, sig: int, ts: FloatArray, code: IntArray, tally: Tally
    ) -> TelemetryBatch:
        known = xid_catalog()
        for e, c in zip(ent.tolist(), code.tolist(), strict=True):
            if c not in known and c not in tally.unknown_xids:
                tally.unknown_xids[c] = self.topology.ids[e]
        return TelemetryBatch(ent, np.full(ent.size, sig, np.int64), ts, code.astype(np.float64))


class DcgmTarget:
    """One exporter (or one Prometheus server): its key cache and the table its slots live in."""

    def __init__(
        self, topology: Topology, config: DcgmReading, *, target: ScrapeTarget | None = None,
        mapping: DcgmMapping | None = None, table: SlotTable | None = None,
    ) -> None:  # fmt: skip
        self.table = table or SlotTable(topology, config, mapping)
        self.target = target
        self.cache = SeriesCache(self.resolve)

    def resolve(self, name: str, labels: dict[str, str]) -> int:
        return self.table.resolve(name, labels, self.target)

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
        return self.table.convert(slot, value, ts, now)
