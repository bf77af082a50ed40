"""The ``prometheus`` source: instant queries against a Prometheus server's HTTP API.

For fleets where Prometheus already scrapes every DCGM exporter: one ``/api/v1/query`` for
the mapped DCGM fields (the same mapping, labels and XID handling as the direct scrape), plus
any PromQL query with a target signal and an entity template such as ``node/{Hostname}``.
A failed query is a notice; the other queries' samples still arrive.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any
from urllib.parse import urlencode

import numpy as np

from seamguard.model.catalog import signal_catalog
from seamguard.model.topology import Topology
from seamguard.model.world import WorldChange
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.base import Collected, SourceNotice, bug_text, read_json
from seamguard.telemetry.sources.dcgm import DcgmTarget
from seamguard.telemetry.sources.dcgm_mapping import dcgm_mapping
from seamguard.telemetry.sources.http_auth import client_auth
from seamguard.telemetry.sources.openmetrics import MAX_TIMESTAMP_S
from seamguard.telemetry.sources.prometheus_config import PrometheusApiConfig, PromQuery
from seamguard.telemetry.sources.scrape import Fetched, fetch_all
from seamguard.telemetry.sources.serving_mapping import ServingReader, serving_query
from seamguard.telemetry.store import SENTINEL_THRESHOLD

SERVING = "serving"  # the serving query's tag among the asks


def dcgm_query(selector: str = "") -> str:
    """One instant query for every mapped DCGM field."""
    names = "|".join(sorted(dcgm_mapping().fields))
    extra = f",{selector}" if selector else ""
    return f'{{__name__=~"{names}"{extra}}}'


class PrometheusApiSource:
    def __init__(self, config: PrometheusApiConfig, topology: Topology) -> None:
        self.name = config.name
        self.config = config
        self.topology = topology
        self.target = DcgmTarget(topology, config)  # each series' target is its instance label
        self.serving = ServingReader(topology, config.replica_from) if config.serving else None

    def follow(self, change: WorldChange) -> None:
        """Series resolve in the new world from the next query (``SlotTable.follow``)."""
        self.topology = change.new
        self.target.table.follow(change)
        if self.serving is not None:
            self.serving.follow_topology(change.new)

    def _url(self, query: str, now: float) -> str:
        return f"{self.config.url}/api/v1/query?{urlencode({'query': query, 'time': f'{now:.3f}'})}"

    def collect(self, now: float) -> Collected:
        cfg = self.config
        asks: dict[str, PromQuery | str | None] = {}
        if cfg.dcgm:
            asks[self._url(dcgm_query(cfg.dcgm_selector), now)] = None
        if self.serving is not None:
            asks[self._url(serving_query(cfg.serving_selector), now)] = SERVING
        for extra in cfg.queries:
            asks[self._url(extra.query, now)] = extra
        got: dict[str, Fetched] = {}
        try:
            auth = client_auth(cfg)
        except ValueError as exc:  # a credential file gone: nothing asked, and says why
            return Collected(TelemetryBatch.empty(), (SourceNotice(self.name, "credentials", str(exc)),), {})
        fetch_all(list(asks), timeout_s=cfg.timeout_s, concurrency=len(asks), max_bytes=cfg.max_bytes,
                  on_result=lambda f: got.__setitem__(f.url, f), auth=auth)  # fmt: skip
        batches: list[TelemetryBatch] = []
        notices: list[SourceNotice] = []
        unknown: Counter[str] = Counter()
        for url, q in asks.items():  # in configuration order: the batch is the same whatever answers first
            label = (
                "dcgm query" if q is None else "serving query" if isinstance(q, str) else f"query {q.query!r}"
            )
            try:
                result = _vector(got[url])
                if isinstance(q, str):
                    assert self.serving is not None
                    batch, problems = self.serving.read(
                        ((r["metric"].get("__name__", ""), r["metric"], _num(r["value"][1])) for r in result),
                        now,
                    )
                    found = [
                        SourceNotice(self.name, label, f"{n} series skipped: {why}")
                        for why, n in problems.items()
                    ]
                elif q is None:
                    batch, tally = self._dcgm(result, now)
                    found = tally.notices(self.name, label)
                else:
                    batch, problems = self._query(q, result, now)
                    found = [
                        SourceNotice(self.name, label, f"{n} series skipped: {why}")
                        for why, n in problems.items()
                    ]
            except ValueError as exc:
                notices.append(SourceNotice(self.name, label, str(exc)))
                continue
            except (TypeError, AttributeError, KeyError) as exc:  # an answer of the wrong shape deeper down
                notices.append(
                    SourceNotice(self.name, label, f"answer not usable: {type(exc).__name__}: {exc}")
                )
                continue
            except Exception as exc:
                # The last line of defence, at the source boundary (base.py: a source never raises
                # for its input): an answer no check above foresaw costs this query its samples,
                # not the poll, the other queries' samples, or the engine's loop.
                notices.append(
                    SourceNotice(self.name, label, bug_text("reading the answer, its samples dropped", exc))
                )
                continue
            if q is None:
                unknown.update(tally.unknown)
            notices.extend(found)
            batches.append(batch)
        return Collected(TelemetryBatch.concat(batches), tuple(notices), dict(unknown))

    def _dcgm(self, result: list[dict[str, Any]], now: float) -> tuple[TelemetryBatch, Any]:
        slots = np.empty(len(result), dtype=np.int64)
        for i, r in enumerate(result):
            labels = dict(r["metric"])
            name = labels.pop("__name__", "")
            slots[i] = self.target.slot_for(name, labels)
        ts, val = _columns(result)
        return self.target.convert(slots, val, ts, now)

    def _query(
        self, q: PromQuery, result: list[dict[str, Any]], now: float
    ) -> tuple[TelemetryBatch, Counter[str]]:
        problems: Counter[str] = Counter()
        ents: list[int] = []
        keep: list[int] = []
        for i, r in enumerate(result):
            labels = {k: (self.config.hostname.node_name(v) if k.lower() == "hostname" else v)
                      for k, v in r["metric"].items()}  # fmt: skip
            try:
                eid = q.entity.format(**labels)
            except KeyError as exc:
                problems[f"result has no label {exc.args[0]!r} for entity {q.entity!r}"] += 1
                continue
            gidx = self.topology.lookup(eid)
            if gidx is None:
                problems[f"{eid} is not in the inventory"] += 1
                continue
            ents.append(gidx)
            keep.append(i)
        ts, val = _columns([result[i] for i in keep])
        good = np.isfinite(val) & (np.abs(val) < SENTINEL_THRESHOLD)
        if not good.all():
            problems[f"{int(np.count_nonzero(~good))} NaN, Inf or blank-sentinel values read as missing"] += 1
        sig = signal_catalog()[q.signal].index
        ent = np.asarray(ents, dtype=np.int64)[good]
        batch = TelemetryBatch(
            ent, np.full(ent.size, sig, np.int64), ts[good], val[good] * q.scale + q.offset
        )
        return batch, problems


def _vector(f: Fetched) -> list[dict[str, Any]]:
    """The result of an instant query, or a ValueError saying what the server answered instead."""
    if f.body is None:
        raise ValueError(f.error)
    try:
        doc = read_json(f.body)
    except ValueError as exc:
        raise ValueError(f"answer is {exc}") from None
    if not isinstance(doc, dict) or doc.get("status") != "success":
        err = doc.get("error", "") if isinstance(doc, dict) else ""
        raise ValueError(f"query failed: {str(err)[:300] or 'status is not success'}")
    data = doc.get("data", {})
    if not isinstance(data, dict):
        raise ValueError(f"expected an instant vector, got data {json.dumps(data)[:120]}")
    if data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
        raise ValueError(f"expected an instant vector, got resultType {str(data.get('resultType'))[:80]!r}")
    result: list[dict[str, Any]] = data["result"]
    for r in result:
        if (
            not isinstance(r, dict)
            or not isinstance(r.get("metric"), dict)
            or not isinstance(r.get("value"), list)
            or len(r["value"]) != 2
        ):
            raise ValueError(f"malformed result entry {json.dumps(r)[:120]}")
    return result


def _columns(
    result: list[dict[str, Any]],
) -> tuple[np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.float64]]]:
    """Timestamps and values of ``_vector``'s entries. A value that is not a number is NaN (read
    as missing); a timestamp that is not a time refuses the answer (ValueError): Prometheus
    stamps every entry with the query's time, so one bad stamp means a broken answer."""
    ts = np.asarray([_time(r["value"][0]) for r in result], dtype=np.float64)
    raw = [r["value"][1] for r in result]
    try:
        val = np.asarray(raw, dtype=np.float64)
        if val.shape != (len(raw),):  # values that are lists made a 2-D array
            raise ValueError("not one number per entry")
    except (ValueError, TypeError, OverflowError):  # OverflowError: an integer past 1.8e308
        val = np.asarray([_num(v) for v in raw], dtype=np.float64)
    return ts, val


def _time(v: object) -> float:
    """Unix seconds (a JSON number, or a numeric string), bounded as the scrape parser bounds them."""
    try:
        t = float(v) if isinstance(v, int | float | str) and not isinstance(v, bool) else math.nan
    except (ValueError, OverflowError):
        t = math.nan
    if not math.isfinite(t) or abs(t) > MAX_TIMESTAMP_S:
        shown = repr(v)
        shown = shown if len(shown) <= 40 else f"{shown[:30]}... ({len(shown)} characters)"
        raise ValueError(f"timestamp {shown} of a result entry is not a time in seconds")
    return t


def _num(v: object) -> float:
    """A sample value (Prometheus sends "50", "NaN", "+Inf"); NaN for anything else, an integer
    too large for a float included."""
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        return math.nan
    try:
        return float(v)
    except (ValueError, OverflowError):
        return math.nan
