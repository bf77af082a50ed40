"""The operator's API: standing controls and approvals (``POST /v1/ops/{verb}``, role
``operator``), and what the console reads (``/v1/fleet``, ``/v1/entities/…``, ``/v1/ops``,
``/v1/events``, ``/v1/whoami``, role ``viewer``).

A control is handed to the daemon's thread (``ops.desk``) and answered once it is journaled and in
force: 200 with the journal record, 404 when there is nothing to act on, 422 for a request that
cannot be right, 503 when this replica may not apply it now (it follows, or its journal is away).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field, ValidationError

from seamguard.model.states import STATE_LABELS
from seamguard.ops.controls import FLEET, MAX_FOR_S, MAX_REASON, STANDING, Verb
from seamguard.ops.desk import OperatorDesk
from seamguard.ops.desk import Request as OpsRequest
from seamguard.ops.fleet import MAX_CHILDREN, FleetView
from seamguard.ops.jobs import JobWatch
from seamguard.strict_model import StrictModel, format_validation

APPLY_TIMEOUT_S = 30.0  # how long a control waits for the daemon's thread (a tick in progress)
EVENT_POLL_S = 0.2  # how often a live stream looks for a new tick
KEEPALIVE_S = 15.0  # a comment line this often keeps proxies from closing an idle stream
MAX_STREAMS = 64  # live streams at once; past it a new one gets 503
LOCAL = "local"  # the principal of a request on a daemon with no credential configured (loopback only)
TARGET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,255}$"


class OperatorBody(StrictModel):
    """A control: ``target`` is ``fleet`` or an entity id (pause, maintenance), an entity id (pin),
    or an action key (approve, reject, as ``/v1/ops`` lists them)."""

    target: str = Field(default=FLEET, pattern=TARGET_PATTERN)
    reason: str = Field(min_length=3, max_length=MAX_REASON)
    for_s: float | None = Field(default=None, ge=60.0, le=MAX_FOR_S, allow_inf_nan=False)
    state: Literal["healthy", "quarantined"] | None = None


class OpsHost(Protocol):
    """What the routes read of the daemon (``Daemon``): kept a protocol so that the service does
    not import the daemon, which imports the service."""

    desk: OperatorDesk
    fleet: FleetView
    version: int
    jobs: JobWatch

    def status_json(self) -> dict[str, object]: ...

    def entity_json(self, eid: str) -> dict[str, object] | None: ...


@dataclass
class _Streams:
    open: int = 0


def ops_router(host: OpsHost) -> APIRouter:
    router = APIRouter()
    streams = _Streams()
    summary_cache: dict[int, dict[str, object]] = {}  # id(fleet view) -> its summary, one per tick

    # The body is read raw (bounded before it is parsed); its schema is declared for /docs all the same.
    body_schema = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": OperatorBody.model_json_schema()}},
        }
    }

    @router.post(
        "/v1/ops/{verb}", responses={404: {}, 413: {}, 422: {}, 429: {}, 503: {}}, openapi_extra=body_schema
    )
    async def operate(verb: str, request: Request) -> JSONResponse:
        try:
            v = Verb(verb)
        except ValueError:
            raise HTTPException(
                404, f"unknown control {verb!r}; known: {', '.join(x.value for x in Verb)}"
            ) from None
        raw = await request.body()
        if len(raw) > 4096:
            raise HTTPException(413, "a control's body is at most 4096 bytes")
        try:
            body = OperatorBody.model_validate_json(raw or b"{}")
        except ValidationError as exc:
            raise HTTPException(422, str(format_validation("body", exc))) from None
        if v in STANDING and body.for_s is None:
            raise HTTPException(
                422, f"body.for_s: how long the {v.value} stands is required (60 s to {MAX_FOR_S:.0f} s)"
            )
        if v is Verb.PIN and body.state is None:
            raise HTTPException(422, "body.state: a pin needs the state it holds: healthy or quarantined")
        who = getattr(request.state, "principal", LOCAL)
        req = OpsRequest(who, v, body.target, body.reason, body.for_s if body.for_s is not None else math.nan,
                         body.state or "")  # fmt: skip
        reply = await asyncio.to_thread(host.desk.submit, req, APPLY_TIMEOUT_S)
        return JSONResponse(reply.to_json(), status_code=reply.status)

    @router.get("/v1/ops")
    def ops() -> dict[str, object]:
        st = host.status_json()
        return {k: st.get(k) for k in ("mode", "controls", "awaiting", "queued", "storm_brake", "leadership")}

    @router.get("/v1/whoami")
    def whoami(request: Request) -> dict[str, object]:
        roles = getattr(request.state, "roles", None)
        return {"name": getattr(request.state, "principal", LOCAL),
                "roles": roles if roles is not None else ["admin"]}  # fmt: skip

    @router.get("/v1/fleet")
    def fleet() -> JSONResponse:
        view = host.fleet
        summary = summary_cache.get(id(view))
        if summary is None:
            summary_cache.clear()
            summary = summary_cache[id(view)] = view.summary()
        return JSONResponse(
            {
                **summary,
                "version": host.version,
                "status": host.status_json(),
                "economics": host.jobs.rows,
                "diagnosis": [f.to_json() for f in host.jobs.findings],
            }
        )

    @router.get("/v1/diagnosis")
    def diagnosis(job: str = "") -> dict[str, object]:
        """The failure mode costing each running job throughput now (``docs/diagnosis.md``)."""
        found = host.jobs.view.to_json(job)
        if job and not found["jobs"]:
            raise HTTPException(404, f"no running job {job!r}")
        return {"now": _finite(host.fleet.now), **found}

    @router.get("/v1/nodes", responses={422: {}})
    def nodes(state: str = "", limit: int = 1000) -> dict[str, object]:
        """Nodes by their one state: ``state`` a comma-separated list (default: every unwell one,
        neither healthy nor unknown)."""
        wanted = frozenset(s.strip() for s in state.split(",") if s.strip())
        unknown = sorted(wanted - set(STATE_LABELS))
        if unknown:
            raise HTTPException(422, f"state {unknown[0]!r}: expected one of {', '.join(STATE_LABELS)}")
        if not 1 <= limit <= MAX_CHILDREN:
            raise HTTPException(422, f"limit: 1 to {MAX_CHILDREN}, got {limit}")
        return host.fleet.nodes(wanted or None, limit)

    @router.get("/v1/fleet/{entity:path}", responses={404: {}})
    def drill(entity: str) -> dict[str, object]:
        got = host.fleet.children(entity)
        if got is None:
            raise HTTPException(404, f"unknown entity {entity!r}")
        return got

    @router.get("/v1/entities/{entity:path}", responses={404: {}})
    def entity(entity: str) -> dict[str, object]:
        got = host.entity_json(entity)
        if got is None:
            raise HTTPException(404, f"unknown entity {entity!r}")
        return got

    @router.get("/v1/events")
    async def events() -> StreamingResponse:
        if streams.open >= MAX_STREAMS:
            raise HTTPException(503, f"{MAX_STREAMS} live streams are open already; try again later")
        return StreamingResponse(_stream(host, streams), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})  # fmt: skip

    return router


async def _stream(host: OpsHost, streams: _Streams) -> AsyncIterator[bytes]:
    """Server-sent events: ``tick`` with the fleet's version whenever it changes (the console then
    reads ``/v1/fleet``), and a keep-alive comment while nothing happens."""
    streams.open += 1
    try:
        seen, quiet = -1, 0.0
        while not host.desk.closing.is_set():
            version = host.version
            if version != seen:
                seen, quiet = version, 0.0
                data = json.dumps({"version": version, "now": _finite(host.fleet.now)})
                yield f"event: tick\ndata: {data}\n\n".encode()
            elif quiet >= KEEPALIVE_S:
                quiet = 0.0
                yield b": keep-alive\n\n"
            await asyncio.sleep(EVENT_POLL_S)
            quiet += EVENT_POLL_S
    finally:
        streams.open -= 1


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
