"""Telemetry pushed over HTTP, for fleets whose exporters push rather than being scraped.

``PushSource`` is both ends: ``router()`` is a FastAPI ``APIRouter`` with ``POST /v1/push``
that validates a batch and queues it, and ``collect(now)`` drains the queue for the engine.
The queue is bounded in rows: a batch that does not fit is refused whole with 503 and a
``Retry-After`` (the engine drains it every tick), never dropped in part or in silence; a
batch larger than the whole queue is refused with 413, as is a body over ``max_body_bytes``
(checked as it streams in, and again after gzip decompression).

Payloads: JSON columns, JSON rows or NDJSON, gzip accepted (``push_payload``: the forms, strict
types, a 422 naming the row and field). A timestamp must fall inside a window around the
daemon's clock (``push_checks.TimeWindow``); a batch with a stamp outside it is refused whole
with 422 naming the rows. Values that are not
measurements (past the float range, a DCGM sentinel, outside the signal's physical range) are
queued as sent, read as missing by the engine, and counted in the response and in notices.
Names outside the topology or the signal catalog are counted and reported back (202 with the
counts, at most ``MAX_LISTED_UNKNOWN`` names each), and the batch's other rows are kept.

Each principal (the authenticated caller, else the client's address) has a token bucket in
rows per second and may hold at most a share of the queue; past either, 429 with
``Retry-After``, so one client flooding cannot starve the others (``push_limits``).
"""

from __future__ import annotations

import asyncio
import heapq
import math
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from seamguard.model.catalog import SignalCatalog, signal_catalog
from seamguard.model.topology import Topology
from seamguard.model.world import WorldChange, by_id
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.replay_report import MAX_UNKNOWN_KEYS
from seamguard.telemetry.sources.base import Collected, SourceNotice
from seamguard.telemetry.sources.push_checks import TimeWindow, ValueScreen
from seamguard.telemetry.sources.push_limits import RateLimit, RowBuckets
from seamguard.telemetry.sources.push_payload import (
    JSON_TYPES,
    MAX_ERRORS,
    NDJSON_TYPES,
    Parsed,
    PayloadError,
    PushResult,
    parse_payload,
    row_loc,
)
from seamguard.telemetry.sources.sections import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_BURST_ROWS,
    DEFAULT_CAPACITY_ROWS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_QUEUE_SHARE,
    DEFAULT_RATE_ROWS_PER_S,
)

SOURCE_NAME = "push"
MAX_LISTED_UNKNOWN = 20  # unknown names listed per map in one response (most rows first)
MAX_NAME_CHARS = 200  # an unknown name is kept and echoed cut to this: a pushed name can be megabytes
MAX_PARSING = 2  # payloads parsed at once; more gain nothing under the GIL and multiply the memory
INFLIGHT_BODIES = 4  # body bytes received and not yet parsed, all requests: this many max_body_bytes
MIN_ROW_BYTES = 16  # no row is shorter: a body that does not parse is billed a row for each 16 bytes
REASONS = {
    400: "malformed body",
    408: "body too slow",
    413: "too large",
    415: "unsupported media type or encoding",
    422: "invalid fields",
    429: "rate limited",
    503: "queue full",
}
# Stable texts: a notice is journaled when it appears and when it clears (daemon.NoticeLatch), so
# nothing in them changes from tick to tick while the same problem lasts: no per-tick counts.
NON_FINITE_NOTICE = "values past the float range (1e999 and the like) queued as missing data"
IMPLAUSIBLE_NOTICE = (
    "values outside their signal's physical range or DCGM blank sentinels (near 2^63) queued as missing data"
)
OVERFLOW_NOTICE = f"more than {MAX_UNKNOWN_KEYS:,} distinct unknown names since the last tick; the rest are counted, not named"


@dataclass
class _Queue:
    """The bounded queue between the HTTP handlers and the engine; every access holds ``lock``."""

    capacity: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    parts: list[TelemetryBatch] = field(default_factory=list)
    rows: int = 0
    by_principal: dict[str, int] = field(default_factory=dict)  # rows each principal has queued
    unknown: dict[str, int] = field(default_factory=dict)
    unknown_overflow: int = 0  # rows of unknown names past the MAX_UNKNOWN_KEYS tally
    non_finite: int = 0
    implausible: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # reason -> requests since the last drain


def _listed(names: list[str], counts: list[int]) -> dict[str, int]:
    """The ``MAX_LISTED_UNKNOWN`` names with the most rows (then by name), for a response."""
    order = heapq.nsmallest(MAX_LISTED_UNKNOWN, range(len(names)), key=lambda k: (-counts[k], names[k]))
    return {names[k]: counts[k] for k in order}


def principal_of(request: Request) -> str:
    """Who pushes: the authenticated principal when the auth layer set one, else the client's address."""
    who = getattr(request.state, "principal", None)
    if who is not None:
        return f"principal {who}"
    return f"address {request.client.host}" if request.client is not None else "address unknown"


class PushSource:
    """Queued pushed telemetry as a ``Source``; ``router()`` serves the endpoint that fills it.

    ``clock`` is the daemon's (unix seconds) and bounds the stamps; ``rate_clock`` is a
    monotonic one for the token buckets. Tests pin either."""

    name: str

    def __init__(
        self,
        topology: Topology,
        catalog: SignalCatalog | None = None,
        *,
        capacity_rows: int = DEFAULT_CAPACITY_ROWS,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
        retry_after_s: float = 30.0,
        max_inflight_bytes: int | None = None,
        window: TimeWindow | None = None,
        rate_limit: RateLimit | None = None,
        max_queue_share: float = DEFAULT_MAX_QUEUE_SHARE,
        clock: Callable[[], float] = time.time,
        rate_clock: Callable[[], float] = time.monotonic,
        name: str = SOURCE_NAME,
    ) -> None:
        if capacity_rows < 1 or max_body_bytes < 1:
            raise ValueError("capacity_rows and max_body_bytes must be positive")
        if not 0 < max_queue_share <= 1:
            raise ValueError(f"max_queue_share must be in (0, 1], got {max_queue_share}")
        self.name = name
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.retry_after_s = retry_after_s
        self.window = window if window is not None else TimeWindow()
        self.clock = clock
        self.rate_clock = rate_clock
        limit = (
            rate_limit if rate_limit is not None else RateLimit(DEFAULT_RATE_ROWS_PER_S, DEFAULT_BURST_ROWS)
        )
        self.buckets = RowBuckets(limit)
        self.share_rows = max(1, math.floor(max_queue_share * capacity_rows))
        cat = catalog if catalog is not None else signal_catalog()
        self._entities = topology.index
        self._signals = {s.name: s.index for s in cat.signals}
        self._screen = ValueScreen(cat)
        self._queue = _Queue(capacity_rows)
        self.totals: Counter[str] = Counter()  # since start: refusals by reason, values read as missing
        self._path = "/v1/push"  # where router() serves it, for notices
        # A thread semaphore, not an asyncio one: that would bind to the first server's loop.
        self._parsing = threading.BoundedSemaphore(MAX_PARSING)
        # Bodies held at once, all requests: 256 connections each uploading 16 MiB would hold 4 GiB.
        # Read and changed on the server's event loop only.
        self.max_inflight_bytes = max_inflight_bytes or INFLIGHT_BODIES * max_body_bytes
        self._inflight = 0

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
            overflow, non_finite, implausible = q.unknown_overflow, q.non_finite, q.implausible
            q.parts, q.rows, q.unknown, q.refused, q.by_principal = [], 0, {}, {}, {}
            q.unknown_overflow = q.non_finite = q.implausible = 0
        where = f"POST {self._path}"
        texts = [f"payloads refused since the last tick: {reason}" for reason in sorted(refused)]
        texts += [NON_FINITE_NOTICE] if non_finite else []
        texts += [IMPLAUSIBLE_NOTICE] if implausible else []
        texts += [OVERFLOW_NOTICE] if overflow else []
        notices = tuple(SourceNotice(self.name, where, text) for text in texts)
        return Collected(TelemetryBatch.concat(parts), notices, unknown)

    def follow(self, change: WorldChange) -> None:
        """Entity names resolve in the new world from now on; rows queued under the old one are
        re-indexed (rows of entities that left are dropped)."""
        back = change.back() if change.jobs_only else by_id(change.old, change.new)  # rows name entities
        with self._queue.lock:
            self._entities = change.new.index
            parts = [b.reindexed(back) for b in self._queue.parts]
            self._queue.parts = [b for b in parts if len(b)]
            # per-principal tallies may count a dropped row until the next drain resets them
            self._queue.rows = sum(len(b) for b in self._queue.parts)

    # -- the HTTP side --------------------------------------------------------------------------

    def ingest(
        self, body: bytes, content_type: str = "application/json", principal: str = "local"
    ) -> PushResult:
        """Validate, map and queue one payload (already decompressed); raises ``PayloadError``.

        A refused payload is billed to the principal's bucket as an accepted one is (by its rows,
        or by its size when it does not parse): parsing it cost the same, and a refusal that cost
        nothing could be sent in a loop to keep the daemon busy parsing."""
        try:
            parsed = parse_payload(body, content_type, int(self.buckets.limit.burst_rows))
        except PayloadError:
            self.buckets.charge(principal, len(body) // MIN_ROW_BYTES, self.rate_clock())
            raise
        try:
            return self._queue_parsed(parsed, principal)
        except PayloadError as exc:
            if not exc.charged:
                self.buckets.charge(principal, len(parsed.entity), self.rate_clock())
            raise

    def _ingest_in_turn(self, body: bytes, content_type: str, principal: str) -> PushResult:
        """``ingest``, at most ``MAX_PARSING`` at once: each parse may take hundreds of MB while it runs."""
        with self._parsing:
            return self.ingest(body, content_type, principal)

    def _queue_parsed(self, parsed: Parsed, principal: str) -> PushResult:
        self._check_window(parsed)
        n = len(parsed.entity)
        entities = self._entities
        ent, unknown_e = self._codes(parsed.entity, entities)
        sig, unknown_s = self._codes(parsed.signal, self._signals)
        keep = (ent >= 0) & (sig >= 0)
        batch = TelemetryBatch(ent[keep], sig[keep], parsed.timestamp[keep], parsed.value[keep])
        counts = self._screen.count(batch.signal, batch.value)
        listed_e = _listed(*unknown_e)
        listed_s = _listed(*unknown_s)
        result = PushResult(
            accepted=len(batch),
            rows=n,
            missing_values=int(np.count_nonzero(np.isnan(batch.value))),
            non_finite=counts.non_finite,
            implausible=counts.implausible,
            unknown_entities=listed_e,
            unknown_signals=listed_s,
            unknown_rows=int(np.count_nonzero(~keep)),
            unknown_names_not_listed=len(unknown_e[0]) + len(unknown_s[0]) - len(listed_e) - len(listed_s),
        )
        self._check_size(len(batch), n)
        q = self._queue
        with q.lock:
            if entities is not self._entities:  # the world changed while this payload was resolved
                batch = batch.reindexed(np.array([self._entities.get(e, -1) for e in
                                                  sorted(entities, key=entities.__getitem__)], dtype=np.int64))  # fmt: skip
            held = q.by_principal.get(principal, 0)
            if q.rows + len(batch) > q.capacity:
                raise PayloadError(
                    503,
                    f"push queue full: {q.rows:,} of {q.capacity:,} rows wait for the engine and this batch "
                    f"has {len(batch):,}; nothing was kept, retry after the next tick",
                    self.retry_after_s,
                )
            if held + len(batch) > self.share_rows:
                raise PayloadError(
                    429,
                    f"{principal} holds {held:,} of the {self.share_rows:,} queued rows one client may hold "
                    f"and this batch has {len(batch):,}; nothing was kept, retry after the next tick",
                    self.retry_after_s,
                )
            if self.buckets.take(principal, n, self.rate_clock()) > 0:
                wait = self.buckets.charge(principal, n, self.rate_clock())
                raise self._rate_limited(principal, n, wait, charged=True)
            if len(batch):
                q.parts.append(batch)
                q.rows += len(batch)
                q.by_principal[principal] = held + len(batch)
            q.non_finite += counts.non_finite
            q.implausible += counts.implausible
            for names, rows in (unknown_e, unknown_s):
                self._tally_unknown(names, rows)
        self.totals.update(non_finite=counts.non_finite, implausible=counts.implausible)
        return result

    def _tally_unknown(self, names: list[str], rows: list[int]) -> None:
        """Into the queue's tally, bounded while no tick drains it; holds the queue's lock."""
        tally = self._queue.unknown
        for name, k in zip(names, rows, strict=True):
            if name in tally or len(tally) < MAX_UNKNOWN_KEYS:
                tally[name] = tally.get(name, 0) + k
            else:
                self._queue.unknown_overflow += k

    def _check_window(self, parsed: Parsed) -> None:
        now = self.clock()
        bad = self.window.outside(now, parsed.timestamp)
        if not bad.size:
            return
        detail: list[dict[str, Any]] = []
        for i in bad[:MAX_ERRORS].tolist():
            loc, where = row_loc(parsed, i, "timestamp")
            detail.append(
                {"loc": loc, "field": where, "msg": self.window.why(now, float(parsed.timestamp[i]))}
            )
        if bad.size > MAX_ERRORS:
            detail.append({
                "loc": [], "field": "(body)",
                "msg": f"... and {bad.size - MAX_ERRORS} more rows outside the window; "
                       f"{bad.size} of {parsed.timestamp.size} in all, nothing was kept",
            })  # fmt: skip
        raise PayloadError(422, detail)

    def _check_size(self, accepted: int, rows: int) -> None:
        """Batches that could never be taken, whatever the others push: 413, split them."""
        q, burst = self._queue, self.buckets.limit.burst_rows
        if accepted > q.capacity:
            raise PayloadError(
                413,
                f"a batch of {accepted:,} rows exceeds the push queue's capacity of {q.capacity:,}; split it",
            )
        if accepted > self.share_rows:
            raise PayloadError(
                413,
                f"a batch of {accepted:,} rows exceeds the {self.share_rows:,} queued rows one client may hold; split it",
            )
        if rows > burst:
            raise PayloadError(
                413,
                f"a batch of {rows:,} rows exceeds the burst of {burst:,.0f} rows one client may push at once; split it",
            )

    def _rate_limited(
        self, principal: str, rows: int | None, wait: float, charged: bool = False
    ) -> PayloadError:
        """``rows`` None: refused before the body was read, its bucket being empty."""
        limit = self.buckets.limit
        what = "its bucket is empty" if rows is None else f"this batch of {rows:,} rows fits in {wait:.1f} s"
        return PayloadError(
            429,
            f"{principal} is over its rate of {limit.rows_per_s:,.0f} rows/s (burst {limit.burst_rows:,.0f}); "
            f"{what}; nothing was kept",
            wait,
            charged,
        )

    def _count_refused(self, reason: str) -> None:
        with self._queue.lock:
            self._queue.refused[reason] = self._queue.refused.get(reason, 0) + 1
        self.totals[reason] += 1

    @staticmethod
    def _codes(
        names: list[str], index: dict[str, int]
    ) -> tuple[npt.NDArray[np.int64], tuple[list[str], list[int]]]:
        """Indices per row (-1 for unknown names) and the unknown names (sorted) with their rows.
        One dict lookup per row: at 10^6 rows that is a third of what sorting the names to look
        each distinct one up once costs (``np.unique`` over Python strings)."""
        codes = np.fromiter((index.get(n, -1) for n in names), dtype=np.int64, count=len(names))
        missing = Counter(names[i] for i in np.flatnonzero(codes < 0).tolist())
        cut: dict[str, int] = {}  # names cut to MAX_NAME_CHARS; two that then agree are one
        for d in sorted(missing):
            name = d if len(d) <= MAX_NAME_CHARS else d[: MAX_NAME_CHARS - 3] + "..."
            cut[name] = cut.get(name, 0) + missing[d]
        return codes, (list(cut), list(cut.values()))

    @staticmethod
    def _check_media_type(request: Request) -> str:
        """JSON or NDJSON only: a form or ``text/plain`` body (what a browser may send cross-origin
        without asking first) never reaches the parser, whatever else let it through."""
        ctype = request.headers.get("content-type", "")
        media = ctype.split(";")[0].strip().lower()
        if media not in JSON_TYPES + NDJSON_TYPES:
            sent = repr(ctype) if ctype else "none"
            raise PayloadError(
                415,
                f"content-type {sent} is not accepted; send application/json or application/x-ndjson",
            )
        return ctype

    def _hold(self, held: list[int], n: int) -> None:
        """Count ``n`` more body bytes of this request (``held[0]``) against the shared budget."""
        if self._inflight + n > self.max_inflight_bytes:
            raise PayloadError(
                503,
                f"the daemon already holds {self._inflight:,} bytes of pushed bodies, its limit of "
                f"{self.max_inflight_bytes:,}; nothing was kept, retry shortly",
                1.0,
            )
        self._inflight += n
        held[0] += n

    async def _read_body(self, request: Request, held: list[int]) -> bytes:
        """The body, its bytes counted in ``held`` against the shared budget (released by the caller)."""
        limit = self.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isascii() and declared.isdecimal() and int(declared) > limit:
            raise PayloadError(
                413, f"payload of {int(declared):,} bytes exceeds the limit of {limit:,} bytes"
            )
        chunks: list[bytes] = []
        size = 0
        # A deadline on the whole body, not per chunk: a byte a second would meet any per-chunk
        # timeout and hold the connection (and a share of the process's descriptors) for days.
        try:
            async with asyncio.timeout(self.body_timeout_s):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise PayloadError(413, f"payload exceeds the limit of {limit:,} bytes")
                    self._hold(held, len(chunk))
                    chunks.append(chunk)
        except TimeoutError:
            raise PayloadError(
                408, f"the body did not arrive within {self.body_timeout_s:g} s ({size:,} bytes received)"
            ) from None
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
        self._hold(held, len(out))
        if not inflater.eof:
            raise PayloadError(400, "gzip body is truncated")
        if inflater.unused_data:  # a second gzip member (or junk) would be dropped in silence
            raise PayloadError(
                400,
                f"{len(inflater.unused_data):,} bytes follow the end of the gzip stream; send one gzip member",
            )
        return out

    def router(self, path: str = "/v1/push") -> APIRouter:
        """``POST path``: 202 with a ``PushResult``; 400/413/415/422/429/503 with a ``detail`` saying why."""
        self._path = path
        router = APIRouter()

        @router.post(
            path,
            status_code=202,
            response_model=PushResult,
            responses={
                400: {"description": "not JSON, NDJSON or gzip"},
                408: {"description": "the body did not arrive within body_timeout_s"},
                413: {"description": "body over the size limit, or a batch larger than the queue, a client's share or burst"},
                415: {"description": "a content-type other than JSON or NDJSON, or an unsupported content-encoding"},
                422: {"description": "a field of the wrong type or length, or a stamp outside the window, named with its index"},
                429: {"description": "this client is over its rate or its share of the queue (Retry-After)"},
                503: {"description": "the queue is full; retry after the next tick (Retry-After)"},
            },
        )  # fmt: skip
        async def push(request: Request) -> PushResult:
            principal = principal_of(request)
            held = [0]  # body bytes this request holds of the shared budget
            try:
                ctype = self._check_media_type(request)
                wait = self.buckets.wait_s(principal, 1, self.rate_clock())
                if wait > 0:  # an empty bucket: refused before the body is even read
                    raise self._rate_limited(principal, None, wait)
                body = await self._read_body(request, held)
                return await run_in_threadpool(self._ingest_in_turn, body, ctype, principal)
            except PayloadError as exc:
                self._count_refused(f"{exc.status} {REASONS.get(exc.status, 'refused')}")
                headers = (
                    {"Retry-After": f"{max(1, math.ceil(exc.retry_after_s))}"}
                    if exc.retry_after_s is not None
                    else {"Connection": "close"} if exc.status == 408  # the rest of the body is not awaited
                    else None
                )  # fmt: skip
                raise HTTPException(status_code=exc.status, detail=exc.detail, headers=headers) from None
            finally:
                self._inflight -= held[0]

        return router
