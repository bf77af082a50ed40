"""Bounds on the connections the API holds: how many, how many from one address, and how long a
request's line and headers may take to arrive.

uvicorn holds a connection whose request head never completes for ever (its keep-alive timer
starts only after a first response, and any byte received cancels it), and accepts connections
until the process runs out of file descriptors. One anonymous client dripping a header byte now
and then on thousands of sockets (slowloris) would then leave the daemon unable to open its
journal, reach its actuators or accept a pusher. uvicorn has no setting for either bound
(``limit_concurrency`` answers 503 only once a request's head has arrived, the socket still held),
so they are added here in a subclass of its h11 protocol: a few lines on its connection hooks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import resource
from collections import Counter
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from seamguard.service.sections import ConnectionLimits

log = logging.getLogger(__name__)

FD_RESERVE = 256  # descriptors left to the rest of the daemon (journal, sources, actuators)


def usable_max_open(limits: ConnectionLimits, soft_nofile: int | None = None) -> int:
    """``limits.max_open``, lowered to leave ``FD_RESERVE`` descriptors of the process's limit."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0] if soft_nofile is None else soft_nofile
    if soft == resource.RLIM_INFINITY:
        return limits.max_open
    usable = max(1, soft - FD_RESERVE)
    if limits.max_open > usable:
        log.warning(
            "service.connections.max_open %d lowered to %d: the process may open %d files (ulimit -n)",
            limits.max_open, usable, soft,
        )  # fmt: skip
        return usable
    return limits.max_open


def _answer(status: str, detail: str, retry_after_s: int | None = None) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    head += f"retry-after: {retry_after_s}\r\n" if retry_after_s is not None else ""
    return (head + "connection: close\r\n\r\n").encode() + body


def bounded_protocol(limits: ConnectionLimits, max_open: int) -> type[H11Protocol]:
    """uvicorn's h11 protocol with ``limits`` (``max_open`` from ``usable_max_open``); one class
    per server, holding that server's count per address."""
    per_address: Counter[str] = Counter()
    too_many = _answer("503 Service Unavailable", "too many connections: retry shortly", 1)
    too_many_here = _answer(
        "503 Service Unavailable", "too many connections from this address: retry shortly", 1
    )
    too_slow = _answer(
        "408 Request Timeout",
        f"the request line and headers did not arrive within {limits.head_timeout_s:g} s",
    )

    class BoundedH11Protocol(H11Protocol):
        _admitted: str | None = None  # the address counted for this connection
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            address = client_key(self.client[0]) if self.client else ""
            if len(self.connections) > max_open:
                self._refuse(too_many)
            elif per_address[address] >= limits.per_client:
                self._refuse(too_many_here)
            else:
                per_address[address] += 1
                self._admitted = address
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._admitted is not None:
                per_address[self._admitted] -= 1
                if per_address[self._admitted] <= 0:
                    del per_address[self._admitted]
                self._admitted = None
            super().connection_lost(exc)

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()  # a request's head arrived: the app and its own deadlines take over

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's head gets the same time (a drip resets no timer)

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(limits.head_timeout_s, self._head_late)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_late(self) -> None:
            self._head_timer = None
            busy = self.cycle is not None and not self.cycle.response_complete
            if not busy and not self.transport.is_closing():
                self._refuse(too_slow)

        def _refuse(self, answer: bytes) -> None:
            self.transport.write(answer)
            self.transport.close()

    return BoundedH11Protocol


def handshake_bounded_loop(timeout_s: float) -> Callable[[], asyncio.AbstractEventLoop]:
    """An event loop factory whose TLS servers give up on a handshake after ``timeout_s``.

    A TLS connection reaches the protocol (and its bounds above) only once its handshake is
    done; until then asyncio holds it for its default 60 s, so a client that opens sockets and
    never says hello would hold descriptors uncounted. uvicorn passes no handshake timeout to
    ``create_server``, so the loop adds one."""

    class HandshakeBoundedLoop(asyncio.SelectorEventLoop):
        async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:
            if kwargs.get("ssl") is not None:
                kwargs.setdefault("ssl_handshake_timeout", timeout_s)
            return await super().create_server(*args, **kwargs)

    return HandshakeBoundedLoop


def protocol_kwargs(limits: ConnectionLimits) -> dict[str, Any]:
    """The ``uvicorn.Config`` arguments that apply ``limits``."""
    return {"http": bounded_protocol(limits, usable_max_open(limits))}


def client_key(address: str) -> str:
    """What ``per_client`` counts: an IPv4 address, or an IPv6 address's /64 (one host is handed a
    whole /64 and can pick a new address in it for every connection)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is an IPv4 client on a dual-stack socket
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
