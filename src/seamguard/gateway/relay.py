"""Relaying a stream as it comes, charging it as it flows, and settling every request once.

A stream's prompt estimate is charged with its first chunk (the upstream has read the prompt by
then) and each chunk's text as it is relayed, so a stream cut off (by the upstream, or by a
client that goes away) is charged for what it streamed; the upstream's final usage chunk, when it
comes, settles it exactly. ``Relay.__call__`` settles in ``finally`` too: a client that leaves
before the first chunk would otherwise leave its reservation held for ever (an async generator
that never started never runs its ``finally``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from seamguard.gateway.client import UpstreamError
from seamguard.gateway.sse import read_event, split_events

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from seamguard.gateway.app import Admitted, Gateway
    from seamguard.gateway.upstreams import Answer


class Settle:
    """Ends one admitted request's reservation exactly once, and counts it."""

    def __init__(self, gateway: Gateway, admitted: Admitted) -> None:
        self.gw = gateway
        self.admitted = admitted
        self.finished = False

    def charge(self, tokens: int) -> None:
        self.gw.ledger.charge(self.admitted.reservation, tokens)

    def done(self, actual: int | None, outcome: str, *, ok: bool) -> None:
        """Settle to ``actual`` (None: what was charged stands) and count the outcome."""
        if self.finished:
            return
        self.finished = True
        gw, key, r = self.gw, self.admitted.key, self.admitted.reservation
        gw.ledger.settle(r, actual)
        gw.store.add(key.name, key.tenant, r.period, r.charged)
        gw.metrics.settled.labels(key.name, key.tenant).inc(max(0, r.charged))
        gw.metrics.remaining.labels(key.name).set(gw.ledger.account(key.name, gw.clock()).remaining())
        gw._count(key, outcome, ok=ok)


class Relay(StreamingResponse):
    """The upstream's SSE events relayed one by one as they arrive.

    Its stream slot was taken at admission (``Gateway._take_stream``) and is given back when it
    settles. Cut (charged what streamed, outcome ``cut``): a client that takes no chunk for
    ``limits.client_stall_s`` (it stopped reading: the gateway stops reading the upstream too,
    TCP's backpressure, so memory stays bounded, but the slot and the upstream's work would be held
    for ever); a stream older than ``limits.max_stream_s``; one charged past ``limits.overrun``
    times its reservation (an upstream ignoring ``max_tokens``); an event over
    ``limits.max_event_bytes`` without its blank line."""

    def __init__(self, gateway: Gateway, answer: Answer, settle: Settle, wants_usage: bool) -> None:
        self.gw = gateway
        self.answer = answer
        self.settle = settle
        self.wants_usage = wants_usage
        self.complete = False  # data: [DONE] seen
        self.usage: int | None = None
        self.cut_by_upstream = False
        self.cut_why: str | None = None  # why the gateway cut it
        super().__init__(self._events(), media_type="text/event-stream",
                         headers={"cache-control": "no-cache", "x-accel-buffering": "no"})  # fmt: skip

    async def _events(self) -> AsyncIterator[bytes]:
        estimate, limits = self.gw.config.estimate, self.gw.config.limits
        reservation = self.settle.admitted.reservation
        ceiling = limits.overrun * max(1, reservation.held + reservation.charged)
        prompt_charged = False
        buf = b""
        deadline = time.monotonic() + limits.max_stream_s
        try:
            # an upstream that goes quiet is cut by its read timeout (between two bytes), one that
            # streams on by this deadline, checked as chunks come (a timer per read costs more
            # CPU than the rest of the relay)
            async for chunk in self.answer.response.aiter_raw():
                if time.monotonic() > deadline:
                    self.cut_why = f"streaming for {limits.max_stream_s:g} s"
                    return
                events, buf = split_events(buf + chunk)
                if len(buf) > limits.max_event_bytes:
                    self.cut_why = f"an event over {limits.max_event_bytes:,} bytes"
                    return
                out: list[bytes] = []  # the events of one read, relayed at once (one write, not one each)
                for raw in events:
                    ev = read_event(raw, estimate)
                    if not prompt_charged and (ev.tokens or ev.usage is not None):
                        self.settle.charge(self.settle.admitted.prompt)
                        prompt_charged = True
                    self.settle.charge(ev.tokens)
                    if ev.usage is not None:
                        self.usage = ev.usage
                    if ev.done:
                        self.complete = True
                        self._finish()  # settled before the client reads the end
                    if ev.usage_only and not self.wants_usage:
                        continue  # asked for by the gateway, not by the client
                    out.append(raw)
                    if reservation.charged > ceiling and not self.complete:
                        self.cut_why = f"charged {reservation.charged:,} tokens, past {limits.overrun:g}× its reservation"
                        yield b"".join(out)
                        return
                if out:
                    yield b"".join(out)
            if buf:
                yield buf
        except UpstreamError:
            self.cut_by_upstream = True  # the stream broke off: what streamed is charged
        finally:
            self._finish()

    def _finish(self) -> None:
        if self.settle.finished:
            return
        self.gw.release_stream(self.settle.admitted.key.name)
        if self.cut_by_upstream:
            self.gw.upstreams.failed(self.answer.pool, self.answer.ticket)
        if self.cut_why is not None:
            log.warning("stream of key %s cut: %s", self.settle.admitted.key.name, self.cut_why)
        ok = self.complete and not self.cut_by_upstream
        self.settle.done(self.usage, "ok" if ok else "cut", ok=ok)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stall = self.gw.config.limits.client_stall_s

        async def bounded(message: Message) -> None:
            async with asyncio.timeout(stall):  # uvicorn's send waits while the client does not read
                await send(message)

        try:
            await super().__call__(scope, receive, bounded)
        except TimeoutError:
            # the client stopped reading: the response stays incomplete, so the server closes the
            # connection (it logs one line, not a traceback)
            if self.cut_why is None:
                self.cut_why = f"its client took nothing for {stall:g} s"
        finally:
            self._finish()  # before any await: a cancelled task still settles
            with anyio.CancelScope(shield=True):
                await self.answer.response.aclose()
