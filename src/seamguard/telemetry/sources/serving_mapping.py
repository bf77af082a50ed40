"""vLLM's and NVIDIA Dynamo's serving metrics, mapped onto the path and replica signals.

The table is ``data/serving.yaml`` (its header names the exporters' files the names come from).
``ServingReader.read`` takes one poll's series (name, labels, value; from a Prometheus instant query
or a scrape, ``series_from_text``) and gives a ``TelemetryBatch``:

- a series belongs to a replica named by the first of ``replica_from`` that names one of the
  inventory's replicas (a label, or ``target``: the host of the scrape target or ``instance``);
- a replica's series of one metric are combined (its engines, its models): gauges by sum or max,
  counters and histogram parts summed;
- a histogram becomes the mean of the observations made within the poll window, the change of
  ``_sum`` over the change of ``_count`` (nothing when no observation was made: a path that moved no
  KV cache says nothing, and goes stale), and its jitter the p90 - p50 spread of the window's bucket
  counts, interpolated within buckets as PromQL's ``histogram_quantile`` does. A fall of ``_count``
  is the exporter's restart: that window gives nothing, the next is measured from it;
- a path signal is read on the decode replica (vLLM's NIXL connector records the transfer there,
  with no label naming the prefill peer) and lands on the one pool path into that replica
  (``ServingTopology.inbound``); a replica fed by several prefill pools, or a prefill replica,
  gives its path series to nobody, counted with the reason.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from seamguard.model.catalog import signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.openmetrics import SeriesCache, parse
from seamguard.yaml_input import parse_yaml

ROLES = ("gauge", "counter", "histogram", "histogram_sum")
DEFAULT_REPLICA_FROM = ("replica", "worker_id", "pod", "target")
SUFFIXES = ("_bucket", "_sum", "_count")


@dataclass(frozen=True)
class ServingMetric:
    name: str
    signal: str
    role: str
    scale: float = 1.0
    combine: str = "sum"
    jitter: str = ""
    count: str = ""
    unless: str = ""  # an older name, read only when the newer one is absent


@dataclass(frozen=True)
class ServingMapping:
    metrics: dict[str, ServingMetric]
    known_unmapped: frozenset[str]

    def family(self, name: str) -> tuple[ServingMetric | None, str]:
        """The mapped metric a sample's name belongs to, and its part ('', _bucket, _sum, _count)."""
        m = self.metrics.get(name)
        if m is not None:
            return m, ""
        for suffix in SUFFIXES:
            if name.endswith(suffix):
                m = self.metrics.get(name[: -len(suffix)])
                if m is not None and m.role.startswith("histogram"):
                    return m, suffix
        return None, ""

    def known(self, name: str) -> bool:
        base = next((name[: -len(s)] for s in SUFFIXES if name.endswith(s)), name)
        return name in self.known_unmapped or base in self.known_unmapped


@cache
def serving_mapping() -> ServingMapping:
    text = resources.files("seamguard.data").joinpath("serving.yaml").read_text(encoding="utf-8")
    raw = parse_yaml(text, "seamguard/data/serving.yaml")
    catalog = signal_catalog()
    metrics: dict[str, ServingMetric] = {}
    for name, row in raw["metrics"].items():
        m = ServingMetric(name=name, **row)
        for sig in (m.signal, m.jitter, m.count):
            if sig and catalog.get(sig) is None:
                raise ValueError(f"serving.yaml: {name}: unknown signal {sig!r}")
        if m.role not in ROLES or m.combine not in ("sum", "max"):
            raise ValueError(f"serving.yaml: {name}: role {m.role!r} / combine {m.combine!r}")
        metrics[name] = m
    return ServingMapping(metrics, frozenset(raw.get("known_unmapped", ())))


Series = tuple[str, Mapping[str, str], float]


def serving_query(selector: str = "") -> str:
    """One instant query for every mapped serving metric, histogram parts included."""
    names = "|".join(
        f"{n}(_bucket|_sum|_count)?" if m.role.startswith("histogram") else n
        for n, m in sorted(serving_mapping().metrics.items())
    )
    extra = f",{selector}" if selector else ""
    return f'{{__name__=~"{names}"{extra}}}'


def series_from_text(text: str, where: str = "scrape") -> list[Series]:
    """Every sample of an exposition payload as (name, labels, value): the scrape path's parser,
    kept whole (for tests and a direct scrape)."""
    found: list[tuple[str, dict[str, str]]] = []

    def resolve(name: str, labels: dict[str, str]) -> int:
        found.append((name, dict(labels)))
        return len(found) - 1

    parsed = parse(text, SeriesCache(resolve), where=where)
    return [
        (found[s][0], found[s][1], v)
        for s, v in zip(parsed.slot.tolist(), parsed.value.tolist(), strict=True)
    ]


def _quantile(q: float, bounds: np.ndarray[Any, Any], counts: np.ndarray[Any, Any]) -> float:
    """``histogram_quantile`` over cumulative ``counts`` at upper ``bounds`` (+Inf last)."""
    total = counts[-1]
    if total <= 0:
        return math.nan
    rank = q * total
    b = int(np.searchsorted(counts, rank, side="left"))
    if b >= len(bounds) - 1:  # in the +Inf bucket: the highest finite bound, as Prometheus does
        return float(bounds[-2]) if len(bounds) > 1 else math.nan
    lo = 0.0 if b == 0 else float(bounds[b - 1])
    below = 0.0 if b == 0 else float(counts[b - 1])
    within = float(counts[b]) - below
    return lo + (float(bounds[b]) - lo) * ((rank - below) / within if within > 0 else 1.0)


class ServingReader:
    """Stateful over polls (the histograms' last totals per entity); one per source."""

    def __init__(self, topology: Topology, replica_from: tuple[str, ...] = DEFAULT_REPLICA_FROM) -> None:
        self.replica_from = replica_from
        self.mapping = serving_mapping()
        self._last: dict[tuple[int, str], tuple[float, float, dict[float, float]]] = {}
        self.follow_topology(topology)

    def follow_topology(self, topology: Topology) -> None:
        self.topology = topology
        self._last.clear()  # indices moved: the next poll sets new baselines
        sv = topology.serving
        self._replica = {name: i for i, name in enumerate(sv.replicas)}

    def _replica_of(self, labels: Mapping[str, str], target: str) -> int | None:
        for where in self.replica_from:
            value = target if where == "target" else labels.get(where, "")
            value = value.rpartition("/")[2]  # a pod's namespace/name
            if where == "target":
                value = value.partition(":")[0]
            found = self._replica.get(value)
            if found is not None:
                return found
        return None

    def read(
        self, series: Iterable[Series], now: float, target: str = ""
    ) -> tuple[TelemetryBatch, Counter[str]]:
        """One poll's series as a batch stamped ``now``, and why series were skipped (counted)."""
        topo, sv, catalog = self.topology, self.topology.serving, signal_catalog()
        skipped: Counter[str] = Counter()
        present = set()
        # (entity, metric) -> part -> value (buckets by bound); gauges: the combined value
        acc: dict[tuple[int, str], dict[str, Any]] = {}
        for name, labels, value in series:
            m, part = self.mapping.family(name)
            if m is None:
                if not self.mapping.known(name):
                    skipped[f"metric {name} is not mapped"] += 1
                continue
            rep = self._replica_of(labels, labels.get("instance", target))
            if rep is None:
                skipped[f"no replica of the serving file named by {', '.join(self.replica_from)}"] += 1
                continue
            present.add(m.name)
            if catalog[m.signal].entity is EntityKind.PATH:
                path = int(sv.inbound[rep]) if sv.inbound.size else -1
                if path < 0:
                    skipped[f"{m.name}: replica {sv.replicas[rep]} has no single pool path into it"] += 1
                    continue
                gidx = int(topo.members[EntityKind.PATH][path])
            else:
                gidx = int(topo.members[EntityKind.REPLICA][rep])
            if not math.isfinite(value):
                continue
            slot = acc.setdefault((gidx, m.name), {"buckets": {}})
            if part == "_bucket":
                try:
                    le = float(labels.get("le", "nan"))
                except ValueError:
                    continue
                slot["buckets"][le] = slot["buckets"].get(le, 0.0) + value
            else:
                key = part or "value"
                old = slot.get(key)
                slot[key] = (
                    value
                    if old is None
                    else (max(old, value) if m.combine == "max" and not part else old + value)
                )
        ents: list[int] = []
        sigs: list[int] = []
        vals: list[float] = []

        def emit(gidx: int, signal: str, value: float) -> None:
            if signal and math.isfinite(value):
                ents.append(gidx)
                sigs.append(catalog[signal].index)
                vals.append(value)

        for (gidx, name), slot in acc.items():
            m = self.mapping.metrics[name]
            if m.unless and m.unless in present:
                continue
            if m.role in ("gauge", "counter"):
                emit(gidx, m.signal, slot.get("value", math.nan) * m.scale)
            elif m.role == "histogram_sum":
                emit(gidx, m.signal, slot.get("_sum", math.nan))
            else:
                self._histogram(gidx, m, slot, emit)
        batch = TelemetryBatch(
            np.asarray(ents, dtype=np.int64), np.asarray(sigs, dtype=np.int64),
            np.full(len(ents), now), np.asarray(vals, dtype=np.float64),
        )  # fmt: skip
        return batch, skipped

    def _histogram(self, gidx: int, m: ServingMetric, slot: dict[str, Any], emit: Any) -> None:
        total, count = slot.get("_sum", math.nan), slot.get("_count", math.nan)
        if not (math.isfinite(total) and math.isfinite(count)):
            return
        if m.count:
            emit(gidx, m.count, count)
        buckets: dict[float, float] = slot["buckets"]
        before = self._last.get((gidx, m.name))
        self._last[(gidx, m.name)] = (total, count, buckets)
        if before is None or count < before[1]:
            return  # a baseline: the first poll, or after the exporter restarted
        d_count, d_sum = count - before[1], total - before[0]
        if d_count <= 0:
            return
        emit(gidx, m.signal, d_sum / d_count * m.scale)
        if m.jitter and buckets and set(buckets) == set(before[2]):
            bounds = np.array(sorted(buckets))
            window = np.array([buckets[b] - before[2][b] for b in bounds])
            if np.isinf(bounds[-1]) and (np.diff(window) >= 0).all():
                spread = _quantile(0.9, bounds, window) - _quantile(0.5, bounds, window)
                emit(gidx, m.jitter, max(spread, 0.0) * m.scale)
