"""Telemetry pushed over HTTP, for fleets whose exporters push rather than being scraped.

``PushSource`` is both ends: ``router()`` is a FastAPI ``APIRouter`` with ``POST /v1/push``
that validates a batch and queues it, and ``collect(now)`` drains the queue for the engine.
The queue is bounded in rows: a batch that does not fit is refused whole with 503 and a
``Retry-After`` (the engine drains it every tick), never dropped in part or in silence; a
batch larger than the whole queue is refused with 413, as is a body over ``max_body_bytes``
(checked as it streams in, and again after gzip decompression).

Payloads (``Content-Encoding: gzip`` accepted for each):

* JSON columns: ``{"entity": [...], "signal": [...], "timestamp": [...], "value": [...]}``;
  the efficient form (names are looked up once per distinct name, values go straight to numpy);
* JSON rows: ``{"rows": [{"entity": ..., "signal": ..., "timestamp": ..., "value": ...}, ...]}``;
* NDJSON (``Content-Type: application/x-ndjson``): one row object per line.

A value may be ``null`` (missing data, passed on as NaN); a timestamp must be a finite number
of unix seconds. Names outside the topology or the signal catalog are counted and reported
back (202 with the counts), and the batch's other rows are kept; a wrong type or a column of
the wrong length refuses the batch with 422 naming the field and the index.
"""

from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, StrictStr, TypeAdapter, ValidationError
from pydantic_core import from_json

from seamguard.model.catalog import SignalCatalog, signal_catalog
from seamguard.model.topology import Topology
from seamguard.model.world import WorldChange
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.replay import MAX_UNKNOWN_KEYS
from seamguard.telemetry.sources.base import Collected, SourceNotice
from seamguard.telemetry.sources.sections import DEFAULT_CAPACITY_ROWS, DEFAULT_MAX_BODY_BYTES

SOURCE_NAME = "push"
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/ndjson")
MAX_ERRORS = 10  # validation errors listed in one 422
REASONS = {
    400: "malformed body",
    413: "too large",
    415: "unsupported encoding",
    422: "invalid fields",
    503: "queue full",
}

Timestamp = Annotated[float, Field(allow_inf_nan=False)]


class PushColumns(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entity: list[StrictStr]
    signal: list[StrictStr]
    timestamp: list[Timestamp]
    value: list[float | None]


class PushRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entity: StrictStr
    signal: StrictStr
    timestamp: Timestamp
    value: float | None


class PushRows(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: list[PushRow]


_NDJSON = TypeAdapter(list[PushRow])
_ROW = TypeAdapter(PushRow)


class PushResult(BaseModel):
    """The response to an accepted batch."""

    accepted: int  # rows queued for the engine
    rows: int  # rows in the payload
    missing_values: int  # accepted rows whose value was null or NaN
    unknown_entities: dict[str, int]  # name -> rows dropped
    unknown_signals: dict[str, int]


@dataclass
class _Queue:
    """The bounded queue between the HTTP handlers and the engine; every access holds ``lock``."""

    capacity: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    parts: list[TelemetryBatch] = field(default_factory=list)
    rows: int = 0
    unknown: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)  # reason -> requests since the last drain


class PayloadError(Exception):
    """A refused payload: its HTTP status and what was wrong, for the client."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail


def _loc(loc: tuple[int | str, ...], line_base: list[int] | None = None) -> str:
    """``value[17]``, ``rows[3].timestamp``, ``line 8: value``."""
    parts = list(loc)
    if line_base is not None and parts and isinstance(parts[0], int):
        head = f"line {line_base[parts[0]]}"
        rest = ".".join(str(p) for p in parts[1:])
        return f"{head}: {rest}" if rest else head
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(body)"


def _invalid(exc: ValidationError, line_base: list[int] | None = None) -> PayloadError:
    errs = exc.errors()
    detail = [
        {"loc": list(e["loc"]), "field": _loc(tuple(e["loc"]), line_base), "msg": e["msg"]}
        for e in errs[:MAX_ERRORS]
    ]
    if len(errs) > MAX_ERRORS:
        detail.append({"loc": [], "field": "(body)", "msg": f"... and {len(errs) - MAX_ERRORS} more errors"})
    return PayloadError(422, detail)


def _one(field_name: str, msg: str) -> PayloadError:
    return PayloadError(422, [{"loc": [field_name], "field": field_name, "msg": msg}])


class PushSource:
    """Queued pushed telemetry as a ``Source``; ``router()`` serves the endpoint that fills it."""

    name: str

    def __init__(
        self,
        topology: Topology,
        catalog: SignalCatalog | None = None,
        *,
        capacity_rows: int = DEFAULT_CAPACITY_ROWS,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        retry_after_s: float = 30.0,
        name: str = SOURCE_NAME,
    ) -> None:
        if capacity_rows < 1 or max_body_bytes < 1:
            raise ValueError("capacity_rows and max_body_bytes must be positive")
        self.name = name
        self.max_body_bytes = max_body_bytes
        self.retry_after_s = retry_after_s
        cat = catalog if catalog is not None else signal_catalog()
        self._entities = topology.index
        self._signals = {s.name: s.index for s in cat.signals}
        self._queue = _Queue(capacity_rows)
        self._path = "/v1/push"  # where router() serves it, for notices

    @property
    def capacity_rows(self) -> int:
        return self._queue.capacity

    @property
    def queued_rows(self) -> int:
        with self._queue.lock:
            return self._queue.rows

    # -- the engine's side ----------------------------------------------------------------------

    def collect(self, now: float) -> Collected:
        """Everything pushed since the last call (``now`` is not needed: pushed rows carry their time)."""
        q = self._queue
        with q.lock:
            parts, unknown, refused = q.parts, q.unknown, q.refused
            q.parts, q.rows, q.unknown, q.refused = [], 0, {}, {}
        notices = tuple(
            SourceNotice(
                self.name, f"POST {self._path}", f"{n} payload(s) refused since the last tick: {reason}"
            )
            for reason, n in sorted(refused.items())
        )
        return Collected(TelemetryBatch.concat(parts), notices, unknown)

    def follow(self, change: WorldChange) -> None:
        """Entity names resolve in the new world from now on; rows queued under the old one are
        re-indexed (rows of entities that left are dropped)."""
        back = change.back()
        with self._queue.lock:
            self._entities = change.new.index
            parts = [b.reindexed(back) for b in self._queue.parts]
            self._queue.parts = [b for b in parts if len(b)]
            self._queue.rows = sum(len(b) for b in self._queue.parts)

    # -- the HTTP side --------------------------------------------------------------------------

    def ingest(self, body: bytes, content_type: str = "application/json") -> PushResult:
        """Validate, map and queue one payload (already decompressed); raises ``PayloadError``."""
        entity, signal, ts, value = self._parse(body, content_type)
        n = len(entity)
        entities = self._entities
        ent, unknown_e = self._codes(entity, entities)
        sig, unknown_s = self._codes(signal, self._signals)
        keep = (ent >= 0) & (sig >= 0)
        batch = TelemetryBatch(ent[keep], sig[keep], ts[keep], value[keep])
        result = PushResult(
            accepted=len(batch),
            rows=n,
            missing_values=int(np.count_nonzero(np.isnan(batch.value))),
            unknown_entities=unknown_e,
            unknown_signals=unknown_s,
        )
        q = self._queue
        if len(batch) > q.capacity:
            raise PayloadError(
                413,
                f"a batch of {len(batch):,} rows exceeds the push queue's capacity of {q.capacity:,}; split it",
            )
        with q.lock:
            if entities is not self._entities:  # the world changed while this payload was resolved
                batch = batch.reindexed(np.array([self._entities.get(e, -1) for e in
                                                    sorted(entities, key=entities.__getitem__)], dtype=np.int64))  # fmt: skip
            if q.rows + len(batch) > q.capacity:
                raise PayloadError(
                    503,
                    f"push queue full: {q.rows:,} of {q.capacity:,} rows wait for the engine and this batch "
                    f"has {len(batch):,}; nothing was kept, retry after the next tick",
                )
            if len(batch):
                q.parts.append(batch)
                q.rows += len(batch)
            for name, k in (*unknown_e.items(), *unknown_s.items()):
                if name in q.unknown or len(q.unknown) < MAX_UNKNOWN_KEYS:  # bounded while no tick drains it
                    q.unknown[name] = q.unknown.get(name, 0) + k
        return result

    def _count_refused(self, reason: str) -> None:
        with self._queue.lock:
            self._queue.refused[reason] = self._queue.refused.get(reason, 0) + 1

    @staticmethod
    def _codes(names: list[str], index: dict[str, int]) -> tuple[npt.NDArray[np.int64], dict[str, int]]:
        """Indices per row, -1 for unknown names; each distinct name is looked up once."""
        if not names:
            return np.zeros(0, np.int64), {}
        distinct, inverse = np.unique(np.asarray(names, dtype=object), return_inverse=True)
        looked = np.array([index.get(str(d), -1) for d in distinct.tolist()], dtype=np.int64)
        codes = looked[inverse.reshape(-1)]
        counts = np.bincount(inverse.reshape(-1), minlength=distinct.size)
        unknown = {str(distinct[k]): int(counts[k]) for k in np.flatnonzero(looked < 0).tolist()}
        return codes, unknown

    def _parse(
        self, body: bytes, content_type: str
    ) -> tuple[list[str], list[str], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        if content_type.split(";")[0].strip().lower() in NDJSON_TYPES:
            lines = body.split(b"\n")
            numbered = [(i + 1, ln) for i, ln in enumerate(lines) if ln.strip()]
            # One validation of the lines joined as an array; a line holding anything but one
            # row ("{...}, {...}" joins into two) makes the counts differ, and then each line is
            # checked on its own to name the first bad one.
            try:
                rows: list[PushRow] | None = _NDJSON.validate_json(
                    b"[" + b",".join(ln for _, ln in numbered) + b"]"
                )
            except ValidationError:
                rows = None
            if rows is None or len(rows) != len(numbered):
                raise self._bad_ndjson_line(numbered)
            return self._from_rows(rows)
        try:
            data = from_json(body, allow_inf_nan=False)
        except ValueError as exc:
            raise PayloadError(400, f"body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise PayloadError(
                422, "expected a JSON object: columns (entity, signal, timestamp, value) or {'rows': [...]}"
            )
        try:
            if "rows" in data:
                return self._from_rows(PushRows.model_validate(data).rows)
            cols = PushColumns.model_validate(data)
        except ValidationError as exc:
            raise _invalid(exc) from None
        lengths = {k: len(getattr(cols, k)) for k in ("entity", "signal", "timestamp", "value")}
        if len(set(lengths.values())) > 1:
            n = lengths["entity"]
            worst = next(k for k, v in lengths.items() if v != n)
            shown = ", ".join(f"{k} {v}" for k, v in lengths.items())
            raise _one(
                worst, f"columns differ in length ({shown}): {worst} has {lengths[worst]}, entity has {n}"
            )
        ts = np.asarray(cols.timestamp, dtype=np.float64)
        value = np.array(cols.value, dtype=np.float64)  # None (a missing value) becomes NaN
        return cols.entity, cols.signal, ts, value

    @staticmethod
    def _from_rows(
        rows: list[PushRow],
    ) -> tuple[list[str], list[str], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        return (
            [r.entity for r in rows],
            [r.signal for r in rows],
            np.array([r.timestamp for r in rows], dtype=np.float64),
            np.array([np.nan if r.value is None else r.value for r in rows], dtype=np.float64),
        )

    @staticmethod
    def _bad_ndjson_line(numbered: list[tuple[int, bytes]]) -> PayloadError:
        for line_no, line in numbered:
            try:
                _ROW.validate_json(line)
            except ValidationError as exc:
                if any(e["type"] == "json_invalid" for e in exc.errors()):
                    return PayloadError(
                        400, f"line {line_no} is not valid JSON (one row per line): {exc.errors()[0]['msg']}"
                    )
                return PayloadError(422, [
                    {"loc": [line_no - 1, *e["loc"]], "field": f"line {line_no}: " + ".".join(str(x) for x in e["loc"]),
                     "msg": e["msg"]}
                    for e in exc.errors()[:MAX_ERRORS]
                ])  # fmt: skip
        return PayloadError(400, "body is not valid NDJSON")

    async def _read_body(self, request: Request) -> bytes:
        limit = self.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isascii() and declared.isdecimal() and int(declared) > limit:
            raise PayloadError(
                413, f"payload of {int(declared):,} bytes exceeds the limit of {limit:,} bytes"
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadError(413, f"payload exceeds the limit of {limit:,} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("", "identity"):
            return body
        if encoding != "gzip":
            raise PayloadError(415, f"content-encoding {encoding!r} is not supported; use gzip or none")
        # Bounded decompression: a small gzip body must not expand past the limit (a zip bomb).
        inflater = zlib.decompressobj(wbits=31)
        try:
            out = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise PayloadError(400, f"body is not valid gzip: {exc}") from None
        if len(out) > limit:
            raise PayloadError(413, f"decompressed payload exceeds the limit of {limit:,} bytes")
        if not inflater.eof:
            raise PayloadError(400, "gzip body is truncated")
        return out

    def router(self, path: str = "/v1/push") -> APIRouter:
        self._path = path
        """``POST path``: 202 with a ``PushResult``; 400/413/415/422/503 with a ``detail`` saying why."""
        router = APIRouter()

        @router.post(
            path,
            status_code=202,
            response_model=PushResult,
            responses={
                400: {"description": "not JSON, NDJSON or gzip"},
                413: {"description": "body over the size limit, or a batch larger than the queue"},
                415: {"description": "unsupported content-encoding"},
                422: {"description": "a field of the wrong type or length, named with its index"},
                503: {"description": "the queue is full; retry after the next tick (Retry-After)"},
            },
        )
        async def push(request: Request) -> PushResult:
            try:
                body = await self._read_body(request)
                ctype = request.headers.get("content-type", "application/json")
                return await run_in_threadpool(self.ingest, body, ctype)
            except PayloadError as exc:
                self._count_refused(f"{exc.status} {REASONS.get(exc.status, 'refused')}")
                headers = (
                    {"Retry-After": f"{max(1, round(self.retry_after_s))}"} if exc.status == 503 else None
                )
                raise HTTPException(status_code=exc.status, detail=exc.detail, headers=headers) from None

        return router
