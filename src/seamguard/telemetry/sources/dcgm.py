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
from seamguard.model.world import WorldChange, carry
from seamguard.model.xid import MAX_XID_CODE, unknown_xid_notice_text, xid_catalog
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.base import SourceNotice
from seamguard.telemetry.sources.dcgm_config import TARGET, DcgmReading, host_of, is_address
from seamguard.telemetry.sources.dcgm_mapping import DcgmMapping, FieldMap, Role, dcgm_mapping
from seamguard.telemetry.sources.dcgm_slots import SlotColumns, SlotView
from seamguard.telemetry.sources.openmetrics import UNWANTED, SeriesCache
from seamguard.telemetry.sources.xid_events import GAUGE, TOTAL, WINDOW, Detections, XidEvents
from seamguard.telemetry.store import SENTINEL_THRESHOLD

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

_NO_ENTITY = -1
_EXAMPLE_LABELS = frozenset(
    {"gpu", "uuid", "gpu_i_id", "xid", "hostname"}
)  # quoted in a skipped series' example
AHEAD_S = 60.0  # a sample stamped further ahead of the poll is read at the poll's time
MAX_REASONS = 8  # reasons for skipping series named per poll; the rest are summed in one notice
_NOT_TEXT = "a label whose name or value is not text (a malformed answer)"
RESET_FACTOR = 4  # slots past this many times a poll's samples: churned keys, forgotten together


@dataclass(frozen=True)
class ScrapeTarget:
    """Where a series was read: a name for notices, the host ``node_from: [target]`` means, and
    whether the config named that node (then it is taken as written, no hostname rule)."""

    name: str
    host: str = ""
    named: bool = False

    @staticmethod
    def of_instance(labels: dict[str, str]) -> ScrapeTarget:
        """A series read through Prometheus: its target is its ``instance`` label."""
        inst = next((v for k, v in labels.items() if k.lower() == "instance"), "")
        where = f"instance {_clip(inst)!r}" if inst else "a series without an instance label"
        return ScrapeTarget(where, host_of(inst))


def _number(text: str, digits: int = 6) -> int | None:
    """A label's small decimal number, or None. Bounded before ``int``: Python refuses (raises on)
    a string of more than 4,300 digits, and an exporter's label is not to be trusted that far."""
    if 0 < len(text) <= digits and text.isascii() and text.isdecimal():
        return int(text)
    return None


def _clip(text: str, limit: int = 80) -> str:
    """A label value as a notice quotes it: an exporter's text is bounded before it is journaled."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- what one conversion dropped or found -------------------------------------------------------
@dataclass
class Tally:
    samples: int = 0
    sentinel: int = 0
    nonfinite: int = 0
    ahead: int = 0  # samples stamped more than AHEAD_S past the poll
    unknown: Counter[str] = field(default_factory=Counter)  # metric name -> samples
    rejected: Counter[str] = field(default_factory=Counter)  # reason -> samples
    examples: dict[str, str] = field(default_factory=dict)  # reason -> one series it was given for
    unknown_xids: dict[int, str] = field(default_factory=dict)  # XID code not in the catalog -> a GPU

    def notices(self, source: str, where: str) -> list[SourceNotice]:
        ranked = self.rejected.most_common()
        out = [
            SourceNotice(source, where, f"{n} series skipped: {why} (e.g. {self.examples.get(why, '?')})")
            for why, n in ranked[:MAX_REASONS]
        ]
        if len(ranked) > MAX_REASONS:
            rest = ranked[MAX_REASONS:]
            out.append(
                SourceNotice(source, where, f"{sum(n for _, n in rest)} more series skipped for "
                             f"{len(rest)} more reasons (the {MAX_REASONS} commonest are named)")
            )  # fmt: skip
        if self.sentinel:
            out.append(
                SourceNotice(
                    source, where, f"{self.sentinel} blank-sentinel values (near 2^63) read as missing"
                )
            )
        if self.nonfinite:
            out.append(SourceNotice(source, where, f"{self.nonfinite} NaN/Inf values read as missing"))
        if self.ahead:
            out.append(
                SourceNotice(source, where, f"{self.ahead} samples stamped more than {AHEAD_S:g} s ahead "
                             "of this poll: read at the poll's time (an exporter's clock is ahead)")
            )  # fmt: skip
        for code, gpu in sorted(self.unknown_xids.items()):
            out.append(SourceNotice(source, where, f"on {gpu}: {unknown_xid_notice_text(code)}"))
        return out


# ---- the slot table ---------------------------------------------------------------------------------
class SlotTable:
    """What each series slot means, and the XID state, shared by every endpoint of a source so
    that one poll converts in one numpy pass. The key caches that map series text to slots are
    registered here: when churned keys (Kubernetes pod labels of finished jobs) have grown the
    slots far past what a poll uses, slots and caches are forgotten together and the next poll
    resolves afresh; nothing that outlives a poll (XID state, NVLink sums) is kept by slot."""

    def __init__(self, topology: Topology, config: DcgmReading, mapping: DcgmMapping | None = None) -> None:
        self.topology = topology
        self.config = config
        self.mapping = mapping or dcgm_mapping()
        self.caches: list[SeriesCache] = []
        self._slots = SlotColumns()
        self._view: SlotView | None = None
        self._notes: list[str] = []  # unknown metric names and reasons for skipping a series
        self._note_ix: dict[str, int] = {}
        self._examples: dict[str, str] = {}
        self._node_of: dict[str, str] = {}  # target -> the node it speaks for (one_node_per_target)
        self._node_memo: dict[tuple[ScrapeTarget, tuple[str, ...]], tuple[str | None, str]] = {}
        n = topology.n_entities
        self._seen = np.zeros(n, dtype=bool)  # entities read in an earlier poll
        self._sum_fields: dict[
            int, IntArray
        ] = {}  # summed signal -> per entity, the most fields seen at once
        self._max_window_s = config.xid_window_s
        self.xids = XidEvents(n, config.xid_window_slack_s)

    def follow(self, change: WorldChange) -> None:
        """Resolve series in ``change.new`` from the next poll (every key cache is forgotten and
        filled again); what outlives a poll (XID state, fields seen, entities read) is re-indexed."""
        self.topology = change.new
        self._reset()
        self._seen = carry(self._seen, change.entities, False)
        self._sum_fields = {s: carry(v, change.entities, 0) for s, v in self._sum_fields.items()}
        self.xids = self.xids.carried(change)

    @property
    def n_slots(self) -> int:
        return self._slots.n

    def register(self, cache: SeriesCache) -> None:
        self.caches.append(cache)

    def _reset(self) -> None:
        for cache in self.caches:
            cache.keys.clear()
            cache.labelsets.clear()
        self._slots = SlotColumns()
        self._view = None
        self._notes.clear()
        self._note_ix.clear()
        self._examples.clear()
        self._node_memo.clear()  # not _node_of: churning keys must not free an exporter to name another node

    def _note_id(self, text: str) -> int:
        ix = self._note_ix.get(text)
        if ix is None:
            ix = self._note_ix[text] = len(self._notes)
            self._notes.append(text)
        return ix

    def _add(self, entity: int, signal: int, fm: FieldMap | None, *, code: int = 0, note: str = "",
             copy: bool = False, window_s: float = 0.0) -> int:  # fmt: skip
        self._view = None
        return self._slots.append(
            entity=entity, signal=signal, role=int(fm.role) if fm else 0, code=code,
            note=self._note_id(note) if note else -1, field=fm.index if fm else 0, copy=copy,
            scale=fm.scale if fm else 1.0, offset=fm.offset if fm else 0.0, window=window_s,
        )  # fmt: skip

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
        if fm.role in (Role.XID_WINDOW, Role.XID_TOTAL):
            raw = lab.get("xid", "")  # absent on the one 0-valued window series of a GPU without XIDs
            xid = _number(raw, 4)
            if (raw or fm.role is Role.XID_TOTAL) and (xid is None or xid >= MAX_XID_CODE):
                return self._reject(fm, f"label xid={_clip(raw)!r} is not an XID code", name, labels)
            code = xid or 0
            if fm.role is Role.XID_WINDOW:
                ms = _number(lab.get("window_size_in_ms", ""), 12)
                window_s = ms / 1000.0 if ms else self.config.xid_window_s
                self._max_window_s = max(self._max_window_s, window_s)
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
        return self._add(gidx, fm.signal_index, fm, code=code, copy=gi is not None, window_s=window_s)

    def _node(self, lab: dict[str, str], target: ScrapeTarget) -> tuple[str | None, str]:
        """The first place of ``node_from`` that names a node of the inventory, or why none did;
        and, with ``one_node_per_target``, never a node other than the one the target first named.
        A target's GPUs share their candidates, so each combination is worked out once."""
        places = tuple(lab.get(p.lower(), "") for p in self.config.node_from if p != TARGET)
        key = (target, places)
        found = self._node_memo.get(key)
        if found is None:
            found = self._node_memo[key] = self._first_node(lab, target)
        node, why = found
        if node is not None and self.config.one_node_per_target:
            first = self._node_of.setdefault(target.name, node)
            if first != node:
                return None, (f"{target.name} speaks for node {first}; a series of it naming node "
                              f"{_clip(node)} is refused (one_node_per_target)")  # fmt: skip
        return node, why

    def _first_node(self, lab: dict[str, str], target: ScrapeTarget) -> tuple[str | None, str]:
        tried: list[str] = []
        for place in self.config.node_from:
            raw = target.host if place == TARGET else lab.get(place.lower(), "")
            what = "target" if place == TARGET else f"label {place}"
            if not raw:
                tried.append(f"{what} absent")
                continue
            as_is = (place == TARGET and target.named) or is_address(raw)
            node = raw if as_is else self.config.hostname.node_name(raw)
            if self.topology.lookup(f"node/{node}") is not None:
                return node, ""
            tried.append(f"{what} {_clip(raw)!r}" + (f" (as {_clip(node)!r})" if node != raw else ""))
        return None, f"no node of the inventory named for {target.name}: {'; '.join(tried)}"

    def refuse(self, name: str, why: str) -> int:
        """A slot that skips its series for ``why`` (a mapped name) or counts it as unknown."""
        fm = self.mapping.fields.get(name)
        return (
            self._reject(fm, why, name, {}) if fm is not None else self._add(_NO_ENTITY, -1, None, note=name)
        )

    def _reject(self, fm: FieldMap, why: str, name: str, labels: dict[str, str]) -> int:
        if why not in self._examples:  # the labels seamguard reads, not the exporter's dozen
            wanted = _EXAMPLE_LABELS | {p.lower() for p in self.config.node_from}
            shown = [f'{k}="{_clip(v)}"' for k, v in labels.items() if k.lower() in wanted]
            more = ",..." if len(shown) < len(labels) else ""
            self._examples[why] = f"{name}{{{','.join(shown)}{more}}}"
        return self._add(_NO_ENTITY, fm.signal_index, fm, note=why)

    def _columns(self) -> SlotView:
        if self._view is None:
            self._view = self._slots.view()
        return self._view

    def convert(
        self, slot: IntArray, value: FloatArray, ts: FloatArray, now: float
    ) -> tuple[TelemetryBatch, Tally]:
        """Samples (by slot) of one poll -> a batch in the engine's catalog, and what was dropped."""
        tally = Tally()
        t = self._columns()
        keep = slot >= 0
        slot, value, ts = slot[keep], value[keep], ts[keep]
        ts = np.where(np.isnan(ts), now, ts)
        ahead = ts > now + AHEAD_S
        if ahead.any():  # a future stamp would keep a silent series fresh and win every collapse
            tally.ahead = int(np.count_nonzero(ahead))
            ts = np.where(ahead, now, ts)
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
            self._xid_events(role, slot, ent, sig, ts, value, now, tally),
        ]
        self._seen[ent] = True
        batch = TelemetryBatch.concat(parts)
        tally.samples = len(batch)
        held = max(self._slots.n, sum(len(c.keys) for c in self.caches))
        if held > RESET_FACTOR * max(int(keep.size), 4096):
            self._reset()
        return batch, tally

    def _note_counts(self, notes: IntArray) -> list[tuple[int, int]]:
        counts = np.bincount(notes, minlength=len(self._notes))
        return [(ix, int(counts[ix])) for ix in np.flatnonzero(counts).tolist()]

    def _first_copies(self, slot: IntArray, ent: IntArray, ok: BoolArray) -> BoolArray:
        """Keep one sample per (GPU, field, XID code) among the copies MIG instance series carry
        of their GPU's own value; a series of the whole GPU, when there is one, wins. Without
        this a GPU of four instances would send four NVLink sums and count one XID four times."""
        t = self._columns()
        copy = t.copy[slot] & ok
        if not copy.any():
            return np.ones(slot.size, dtype=bool)
        n_fields = len(self.mapping.fields)
        key = (ent * n_fields + t.field[slot]) * MAX_XID_CODE + t.code[slot]
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

    def _xid_events(self, role: IntArray, slot: IntArray, ent: IntArray, sig: IntArray, ts: FloatArray,
                    value: FloatArray, now: float, tally: Tally) -> TelemetryBatch:  # fmt: skip
        """The three XID ways (``xid_events``), each read per (GPU, code), then merged. Several
        rows of one GPU and code (copies on MIG instances) count as their largest."""
        t = self._columns()
        found: dict[int, Detections] = {}
        signal = -1
        for way, r in ((TOTAL, Role.XID_TOTAL), (WINDOW, Role.XID_WINDOW), (GAUGE, Role.XID_GAUGE)):
            pick = role == r
            if not pick.any():
                continue
            signal = int(sig[pick][0])
            code = t.code[slot[pick]]
            key = ent[pick] * MAX_XID_CODE + code
            uniq, inv = np.unique(key, return_inverse=True)
            gpu, per_code = uniq // MAX_XID_CODE, uniq % MAX_XID_CODE
            top, last = _largest(inv, uniq.size, value[pick]), _largest(inv, uniq.size, ts[pick])
            if r is Role.XID_TOTAL:
                found[way] = self.xids.read_totals(gpu, per_code, top, last, self._seen[gpu])
            elif r is Role.XID_WINDOW:
                window = _largest(inv, uniq.size, t.window[slot[pick]])
                found[way] = self.xids.read_window(gpu, per_code, top, last, window)
            else:
                found[way] = self.xids.read_gauge(gpu, top, last)
        if not found:
            return TelemetryBatch.empty()
        horizon = 2 * (self._max_window_s + self.xids.slack_s)
        g, c, when = self.xids.merge(found, now, horizon)
        known = xid_catalog()
        for e, code_ in zip(g.tolist(), c.tolist(), strict=True):
            if code_ not in known and code_ not in tally.unknown_xids:
                tally.unknown_xids[code_] = self.topology.ids[e]
        return TelemetryBatch(g, np.full(g.size, signal, np.int64), when, c.astype(np.float64))


def _largest(inv: IntArray, size: int, values: FloatArray) -> FloatArray:
    """Per group (``inv`` from ``np.unique``), the largest of ``values``."""
    out = np.full(size, -np.inf)
    np.maximum.at(out, inv, values)
    return out


class DcgmTarget:
    """One exporter (or one Prometheus server): its key cache and the table its slots live in."""

    def __init__(
        self, topology: Topology, config: DcgmReading, *, target: ScrapeTarget | None = None,
        mapping: DcgmMapping | None = None, table: SlotTable | None = None,
    ) -> None:  # fmt: skip
        self.table = table or SlotTable(topology, config, mapping)
        self.target = target
        self.cache = SeriesCache(self.resolve)
        self.table.register(self.cache)

    def resolve(self, name: str, labels: dict[str, str]) -> int:
        return self.table.resolve(name, labels, self.target)

    def slot_for(self, name: str, labels: dict[str, str]) -> int:
        """Slot of a series given as parsed labels (the Prometheus API's JSON), cached by key. The
        key is the sorted pairs' repr: joined text could make two label sets one key."""
        key = name + repr(sorted(labels.items()))
        slot = self.cache.lookup(key)
        if slot is None:
            text = all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
            slot = self.resolve(name, labels) if text else self.table.refuse(name, _NOT_TEXT)
            self.cache.remember(key, slot)
        return slot

    def convert(
        self, slot: IntArray, value: FloatArray, ts: FloatArray, now: float
    ) -> tuple[TelemetryBatch, Tally]:
        """This target's samples of one scrape -> a batch; see ``SlotTable.convert``."""
        return self.table.convert(slot, value, ts, now)
