"""The gateway's HTTP app: authenticate the key, admit (zombie, rate, body, budget), relay, settle.

Every route but ``/healthz`` is authenticated: the OpenAI routes by a gateway key (``Authorization:
Bearer``, looked up by its SHA-256 digest: a dict lookup on the hash of a 256-bit secret tells a
prober nothing about the secret), ``/metrics`` by a seamguard token with the viewer or admin role
(``service.auth``). Refusals are OpenAI-style errors (``{"error": {"message", "type", "code"}}``),
sent before anything reaches an upstream. The ledger, limiter, breakers and retry budget are touched
from the event loop's thread only, never across an ``await`` between a check and its update.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Message, Receive, Scope, Send

from seamguard.actuators.guard import Breaker
from seamguard.gateway.budgets import (
    Ledger,
    Reservation,
    completion_cap,
    loads,
    need_of,
    token_ids,
    usage_of_body,
)
from seamguard.gateway.client import Client, UpstreamError
from seamguard.gateway.config import GatewayConfig, KeyEntry
from seamguard.gateway.metrics import GatewayMetrics
from seamguard.gateway.ratelimit import Limiter
from seamguard.gateway.relay import Relay, Settle
from seamguard.gateway.store import SpendStore
from seamguard.gateway.upstreams import Answer, Failure, Pool, Upstreams
from seamguard.gateway.zombie import Flag, ZombieWatch
from seamguard.service.auth import TokenTable, digest_of
from seamguard.service.sections import Role

log = logging.getLogger(__name__)
ROUTES = {"/v1/chat/completions": True, "/v1/completions": True, "/v1/embeddings": False}  # path: generates?
MODELS_S = 10.0  # GET /v1/models answered from what the upstreams said this recently
REFUSAL_NOTICE_S = 60.0  # a key's budget refusals are journaled at most once a minute, with a count


def error(status: int, message: str, kind: str, code: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


class Whole(Response):
    """A whole answer, written in pieces each of which its client must take within ``stall_s``.
    Written at once, an answer of up to ``limits.max_response_bytes`` that its client never reads
    would sit in the server's buffer, and hold the connection, for ever; in pieces, the server
    waits at the next piece (its flow control) and the wait is bounded."""

    PIECE = 64 * 1024

    def __init__(self, content: bytes, status_code: int, media_type: str, stall_s: float) -> None:
        super().__init__(content, status_code=status_code, media_type=media_type)
        self.stall_s = stall_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = bytes(self.body)
        messages: list[Message] = [{"type": "http.response.start", "status": self.status_code,
                                    "headers": self.raw_headers}]  # fmt: skip
        for i in range(0, max(1, len(body)), self.PIECE):
            end = i + self.PIECE
            messages.append({"type": "http.response.body", "body": body[i:end], "more_body": end < len(body)})
        try:
            for m in messages:
                async with asyncio.timeout(self.stall_s):
                    await send(m)
        except TimeoutError:  # the response stays incomplete: the server closes the connection
            log.info("a client took nothing of its answer for %g s: cut", self.stall_s)


@dataclass
class Admitted:
    key: KeyEntry
    reservation: Reservation
    prompt: int


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        store: SpendStore,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.monotonic = monotonic
        self.metrics = GatewayMetrics()
        self.ledger = Ledger(config.keys)
        self.limiter = Limiter(config)
        self.upstreams = Upstreams(config, self.metrics, self._breaker_moved, monotonic)
        self.keys = {bytes.fromhex(k.digest.removeprefix("sha256:")): k for k in config.keys}
        self.tokens = TokenTable(config.auth) if config.auth.configured() else None
        self.streams = 0
        self._key_streams: dict[str, int] = {}  # streams per key (only keys with one)
        self.client = Client()  # the upstreams' keep-alive connections, used from the serving loop
        self._models: tuple[float, list[dict[str, Any]]] | None = None  # GET /v1/models, when asked
        self._refusals: dict[str, tuple[float, int]] = {}  # key -> (last journaled, refused since)
        last_seen: dict[str, float] = {}
        for row in store.start():
            self.ledger.restore(row.key, row.period, row.tokens)
            last_seen[row.key] = max(last_seen.get(row.key, 0.0), row.ts)
        self.zombies = ZombieWatch(config.zombie, last_seen)
        now = clock()
        for k in config.keys:
            self.metrics.remaining.labels(k.name).set(self.ledger.account(k.name, now).remaining())

    # -- the app ------------------------------------------------------------------------------
    def app(self) -> FastAPI:
        routes: list[BaseRoute] = [Route(p, self._route(p), methods=["POST"]) for p in ROUTES]
        routes += [
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET", "HEAD"]),
            Route("/metrics", self.metrics_page, methods=["GET"]),
        ]
        # FastAPI for the daemon's server (``serve_in_thread``); plain routes, no schema pages
        return FastAPI(routes=routes, openapi_url=None, docs_url=None, redoc_url=None)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def metrics_page(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if self.tokens is None:
            return error(
                403, "no seamguard token may read /metrics: set gateway.auth", "permission_error", "forbidden"
            )
        principal, why = self.tokens.lookup(_bearer(request) or "", self.clock())
        if principal is None:
            return error(401, why, "invalid_request_error", "invalid_api_key", {"www-authenticate": "Bearer"})
        if not principal.roles & {Role.VIEWER, Role.ADMIN}:
            return error(403, f"{principal.name!r} needs the viewer role", "permission_error", "forbidden")
        for f in self.zombies.flagged(self.clock()):
            self.metrics.zombie.labels(f, "flagged").set(1.0)
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- admission --------------------------------------------------------------------------------
    def _authenticate(self, request: Request) -> KeyEntry | Response:
        secret = _bearer(request)
        key = self.keys.get(bytes.fromhex(digest_of(secret).removeprefix("sha256:"))) if secret else None
        if key is None:
            self.metrics.requests.labels("", "", "unauthenticated").inc()
            why = "no API key (Authorization: Bearer KEY)" if not secret else "unknown API key"
            return error(401, why, "invalid_request_error", "invalid_api_key", {"www-authenticate": "Bearer"})
        now = self.clock()
        if key.expires is not None and now >= key.expires.timestamp():
            self._count(key, "unauthenticated", ok=False)
            return error(401, f"API key {key.name!r} expired", "invalid_request_error", "invalid_api_key")
        flag = self.zombies.flag(key.name, now)
        if flag is not None and self.config.zombie.refuse:
            self._count(key, "refused_zombie", ok=False)
            return error(403, f"API key {key.name!r} is flagged ({flag.detail}); ask the gateway's operator",
                         "permission_error", "key_flagged")  # fmt: skip
        refusal = self.limiter.admit(key.name, key.tenant, self.monotonic())
        if refusal is not None:
            self._count(key, "refused_rate", ok=False)
            wait = max(1, int(refusal.wait_s + 0.999))
            return error(429, f"rate limit of the {refusal.scope} reached: retry in {wait} s", "requests",
                         "rate_limit_exceeded", {"retry-after": str(wait)})  # fmt: skip
        return key

    async def _body(self, request: Request) -> bytes | Response:
        limit = self.config.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return error(413, f"body over {limit:,} bytes", "invalid_request_error", "request_too_large")
        out = bytearray()
        within = self.config.limits.body_timeout_s
        try:
            # the whole body within body_timeout_s: the server's head timeout ends with the head,
            # and a body dripped a byte at a time would hold the connection for ever
            async with asyncio.timeout(within):
                async for chunk in request.stream():
                    out += chunk
                    if len(out) > limit:
                        return error(
                            413, f"body over {limit:,} bytes", "invalid_request_error", "request_too_large"
                        )
        except ClientDisconnect:
            return error(400, "the client went away", "invalid_request_error", "client_disconnected")
        except TimeoutError:
            return error(408, f"the request's body did not arrive within {within:g} s", "invalid_request_error",
                         "request_timeout", {"connection": "close"})  # fmt: skip
        return bytes(out)

    def _count(self, key: KeyEntry, outcome: str, *, ok: bool) -> None:
        self.metrics.requests.labels(key.name, key.tenant, outcome).inc()
        self._flagged(self.zombies.result(key.name, ok, self.clock()))

    def _flagged(self, flag: Flag | None) -> None:
        if flag is None:
            return
        self.metrics.zombie.labels(flag.key, flag.kind).set(1.0)
        message = f"key {flag.key} flagged as a zombie ({flag.kind}): {flag.detail}"
        log.warning("%s", message)
        self.store.notice(
            "warning", message + ("; refused while flagged" if self.config.zombie.refuse else "")
        )

    def _breaker_moved(self, pool: Pool, state: Breaker) -> None:
        b = pool.breaker
        message = (f"upstream {pool.name}: breaker {state.value}"
                   + (f" after {b.failures} consecutive failure(s)" if state is Breaker.OPEN else ""))  # fmt: skip
        log.warning("%s", message)
        self.store.notice("warning" if state is Breaker.OPEN else "info", message)

    def _refused_budget(self, key: KeyEntry, need: int, left: int) -> Response:
        self._count(key, "refused_budget", ok=False)
        now = self.clock()
        last, count = self._refusals.get(key.name, (-REFUSAL_NOTICE_S, 0))
        count += 1
        if now - last >= REFUSAL_NOTICE_S:
            self.store.notice("info", f"key {key.name}: {count} request(s) refused for its budget "
                                      f"(last needed {need:,} tokens, {left:,} left of {key.budget.tokens:,} a {key.budget.period.value})")  # fmt: skip
            last, count = now, 0
        self._refusals[key.name] = (last, count)
        return error(429, f"token budget of key {key.name!r} exhausted: the request may take {need:,} tokens, "
                          f"{left:,} are left this {key.budget.period.value}", "insufficient_quota",
                     "insufficient_quota")  # fmt: skip

    # -- the OpenAI routes ----------------------------------------------------------------------
    async def models(self, request: Request) -> Response:
        key = self._authenticate(request)
        if isinstance(key, Response):
            return key
        self._count(key, "ok", ok=True)
        return JSONResponse({"object": "list", "data": await self._model_list()})

    async def _model_list(self) -> list[dict[str, Any]]:
        """What the upstreams list (``GET /v1/models`` passed through), of the models the gateway
        routes; a model no upstream could be asked about is listed from the config. Asked again
        at most every ``MODELS_S``: a key's GET would otherwise cost a call to every upstream."""
        now = self.monotonic()
        if self._models is not None and now - self._models[0] < MODELS_S:
            return self._models[1]
        found: dict[str, dict[str, Any]] = {}
        for pool in self.upstreams.pools.values():
            if pool.breaker.state(self.monotonic()) is Breaker.OPEN or set(pool.upstream.models) <= set(
                found
            ):
                continue
            headers = {"authorization": f"Bearer {pool.api_key}"} if pool.api_key else {}
            try:
                r = await self.client.request("GET", pool.upstream.url.rstrip("/") + "/v1/models", headers=headers,
                                              connect_timeout=5.0, read_timeout=5.0)  # fmt: skip
                try:
                    raw = bytearray()
                    async for chunk in r.aiter_raw():
                        raw += chunk
                        if len(raw) > self.config.limits.max_response_bytes:
                            raise ValueError("too large")
                finally:
                    await r.aclose()
                doc = loads(bytes(raw)) if r.status_code == 200 else {}
                data = doc.get("data", []) if isinstance(doc, dict) else []
            except (UpstreamError, ValueError):
                continue
            for m in data if isinstance(data, list) else []:
                if isinstance(m, dict) and m.get("id") in pool.upstream.models:
                    found.setdefault(str(m["id"]), m)
        for name in self.upstreams.models():
            found.setdefault(name, {"id": name, "object": "model", "owned_by": "seamguard-gateway"})
        listed = [found[n] for n in sorted(found)]
        self._models = (now, listed)
        return listed

    def _route(self, path: str) -> Callable[[Request], Awaitable[Response]]:
        """The endpoint of one OpenAI route: the upstream is called on ``path``, this constant,
        never on what the client's URL said (its encoding, dot segments, query)."""

        async def endpoint(request: Request) -> Response:
            return await self.generate(request, path)

        return endpoint

    def _take_stream(self, key: str) -> str | None:
        """A slot among ``limits.max_streams`` (and the key's ``max_streams_per_key``), taken at
        admission (no await between the check and the count: concurrent requests cannot all pass
        a check made before their upstream answered); None, or why none is free."""
        limits = self.config.limits
        if self.streams >= limits.max_streams:
            return f"{self.streams} streams relayed already"
        mine = self._key_streams.get(key, 0)
        if limits.max_streams_per_key is not None and mine >= limits.max_streams_per_key:
            return f"{mine} streams of key {key!r} relayed already"
        self.streams += 1
        self._key_streams[key] = mine + 1
        self.metrics.streams.set(self.streams)
        return None

    def release_stream(self, key: str) -> None:
        self.streams -= 1
        left = self._key_streams.get(key, 1) - 1
        if left > 0:
            self._key_streams[key] = left
        else:
            self._key_streams.pop(key, None)
        self.metrics.streams.set(self.streams)

    async def generate(self, request: Request, path: str) -> Response:
        t0 = time.perf_counter()
        key = self._authenticate(request)
        if isinstance(key, Response):
            return key
        raw = await self._body(request)
        if isinstance(raw, Response):
            self._count(key, "bad_request", ok=False)
            return raw
        try:
            body = loads(raw)
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            model = body.get("model")
            if not isinstance(model, str) or model not in self.upstreams.by_model:
                self._count(key, "bad_request", ok=False)
                return error(404, f"model {model!r} is not served here (GET /v1/models lists them)",
                             "invalid_request_error", "model_not_found")  # fmt: skip
            stream = body.get("stream", False)
            if not isinstance(stream, bool):
                raise ValueError(f"stream: expected true or false, got {stream!r}")
            completions = path == "/v1/completions"
            default = self.config.estimate.default_max_tokens
            cap, fields = completion_cap(body, default, completions=completions) if ROUTES[path] else (0, {})
        except ValueError as exc:
            self._count(key, "bad_request", ok=False)
            return error(400, f"invalid request body: {exc}", "invalid_request_error", "invalid_request")
        busy = self._take_stream(key.name) if stream else None
        if busy is not None:
            self._count(key, "refused_streams", ok=False)
            return error(503, f"{busy}; retry shortly", "server_error", "overloaded", {"retry-after": "1"})
        relayed = False  # the stream's slot handed to its Relay
        try:
            wants_usage = True
            body.update(fields)  # the cap the reservation assumed, enforced upstream
            if stream:
                opts = body.get("stream_options")
                wants_usage = isinstance(opts, dict) and opts.get("include_usage") is True
                body["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
            # sent as the gateway read it, never the client's bytes: a key given twice, which
            # parsers resolve differently, reaches the upstream once, with the value reserved for
            content = json.dumps(body, separators=(",", ":")).encode()
            need = need_of(len(raw), cap, self.config.estimate, token_ids(body))
            now = self.clock()
            held = self.ledger.reserve(key.name, need, now)
            if isinstance(held, int):
                return self._refused_budget(key, need.total, held)
            self._flagged(self.zombies.used(key.name, now))
            self.metrics.reserved.labels(key.name, key.tenant).inc(need.total)
            admitted = Admitted(key, held, need.prompt)
            settle = Settle(self, admitted)
            added = time.perf_counter() - t0
            try:
                headers = {"content-type": "application/json", "accept-encoding": "identity",
                           "accept": "text/event-stream" if stream else "application/json"}  # fmt: skip
                answer = await self.upstreams.call(self.client, model, path, content, headers)
                t1 = time.perf_counter()
                if isinstance(answer, Failure):
                    settle.done(0, "no_upstream" if answer.status == 503 else "upstream_error", ok=False)
                    return self._failure(answer)
                ctype = answer.response.headers.get("content-type", "")
                if stream and answer.response.status_code == 200 and ctype.startswith("text/event-stream"):
                    self.upstreams.succeeded(answer)
                    self.metrics.added.observe(added + time.perf_counter() - t1)
                    relayed = True
                    return Relay(self, answer, settle, wants_usage)
                # an error, or an upstream that answered whole what was asked as a stream (an
                # endpoint that does not stream): read whole and settled from its usage
                return await self._whole(answer, settle, added, t1)
            except BaseException:
                settle.done(None, "cut", ok=False)  # cancelled (the client went away): charged what ran
                raise
        finally:
            if stream and not relayed:
                self.release_stream(key.name)

    async def _whole(self, answer: Answer, settle: Settle, added: float, t1: float) -> Response:
        """A non-streamed answer (or a stream request's error): read whole, settled from its usage."""
        r = answer.response
        limit = self.config.limits.max_response_bytes
        try:
            out = bytearray()
            async for chunk in r.aiter_raw():
                out += chunk
                if len(out) > limit:
                    settle.done(None, "upstream_error", ok=False)
                    self.upstreams.succeeded(answer)
                    return error(502, f"upstream {answer.pool.name}'s answer is over {limit:,} bytes",
                                 "server_error", "upstream_too_large")  # fmt: skip
        except UpstreamError as exc:
            self.upstreams.failed(answer.pool, answer.ticket)
            settle.done(None, "upstream_error", ok=False)
            log.info("upstream %s broke off its answer: %s", answer.pool.name, exc)
            return error(502, f"upstream {answer.pool.name} broke off its answer", "server_error",
                         "upstream_error")  # fmt: skip
        finally:
            await r.aclose()
        self.upstreams.succeeded(answer)
        t2 = time.perf_counter()
        ok = 200 <= r.status_code < 300
        used = usage_of_body(bytes(out)) if ok else 0
        if used is None:  # an answer with no usage, or a malformed one: charged its worst case
            held = settle.admitted.reservation
            used = held.held + held.charged
        settle.done(used, "ok" if ok else "upstream_error", ok=ok)
        self.metrics.added.observe(added + time.perf_counter() - t2)
        ctype = r.headers.get("content-type", "application/json")
        return Whole(bytes(out), r.status_code, ctype, self.config.limits.client_stall_s)

    def _failure(self, f: Failure) -> Response:
        if f.body is not None:
            return Response(f.body, status_code=f.status, media_type=f.content_type)
        kind = "server_error"
        return error(f.status, f.message, kind, "no_healthy_upstream" if f.status == 503 else "upstream_error",
                     {"retry-after": "1"} if f.status == 503 else None)  # fmt: skip


def _bearer(request: Request) -> str | None:
    values = request.headers.getlist("authorization")
    if len(values) != 1:
        return None
    scheme, _, secret = values[0].strip().partition(" ")
    return secret.strip() or None if scheme.lower() == "bearer" else None
