"""The gateway's HTTP/1.1 client for its upstreams: h11 over asyncio streams, keep-alive per upstream.

Why not httpx, which the rest of seamguard uses: on the gateway's hot path httpx, httpcore and
anyio cost about 1.3 ms of CPU a request on the bench's machine, against 0.25 ms for the same
exchange over h11 directly (a stream: 1.6 against 0.65 ms), and on a machine whose cores are
busy the gateway's throughput is its CPU per request. Only what the gateway needs: a request whose
body is in memory; the answer's head, then its body as it arrives; a deadline to connect and one
for each read (between two bytes, as httpx's read timeout); a connection kept alive when its
answer was read to the end, reused for at most ``KEEPALIVE_S`` (under uvicorn's 5 s, as httpx's
pool does) and dropped if the upstream closed it meanwhile.

Every failure to get or read an answer is an ``UpstreamError``: refused or timed-out
connections, TLS failures, a read that timed out, a connection that closed early, bad HTTP.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import h11

KEEPALIVE_S = 4.0  # an idle connection is reused this long at most
MAX_IDLE = 256  # idle connections kept per upstream
READ_BYTES = 65536
MAX_HEAD_BYTES = 64 * 1024  # an answer's status line and headers


class UpstreamError(Exception):
    """No answer, or an answer broken off."""


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def _split(url: str) -> tuple[Origin, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Origin(parts.scheme, parts.hostname, port), target


class _Conn:
    def __init__(self, origin: Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.origin = origin
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.idle_since = 0.0

    def reusable(self, now: float) -> bool:
        return (
            now - self.idle_since < KEEPALIVE_S
            and not self.writer.is_closing()
            and not self.reader.at_eof()  # the upstream closed it while idle
        )

    async def next_event(self, read_timeout: float) -> object:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise UpstreamError(f"bad HTTP from the upstream: {exc}") from None
            if event is not h11.NEED_DATA:
                return event
            try:
                async with asyncio.timeout(read_timeout):
                    data = await self.reader.read(READ_BYTES)
            except TimeoutError:
                raise UpstreamError(
                    f"no byte from the upstream for {read_timeout:g} s (ReadTimeout)"
                ) from None
            except OSError as exc:
                raise UpstreamError(f"reading from the upstream: {type(exc).__name__}") from None
            try:
                self.h11.receive_data(data)  # b"": the upstream closed the connection
            except h11.RemoteProtocolError as exc:
                raise UpstreamError(f"bad HTTP from the upstream: {exc}") from None

    def close(self) -> None:
        self.writer.close()


class Response:
    """An answer whose head has arrived; its body is read with ``aiter_raw`` (de-chunked, not
    decoded: the gateway asks for ``accept-encoding: identity``)."""

    def __init__(self, client: Client, conn: _Conn, head: h11.Response, read_timeout: float) -> None:
        self._client = client
        self._conn: _Conn | None = conn
        self._read_timeout = read_timeout
        self.status_code: int = head.status_code
        self.headers: dict[str, str] = {}
        for name, value in head.headers:
            k = name.decode("latin-1")
            v = value.decode("latin-1")
            self.headers[k] = f"{self.headers[k]}, {v}" if k in self.headers else v

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        while self._conn is not None:
            event = await self._conn.next_event(self._read_timeout)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                conn, self._conn = self._conn, None
                self._client._release(conn)
                return
            else:
                raise UpstreamError("the upstream closed the connection before the answer's end")

    async def aclose(self) -> None:
        """Done with the answer: a connection whose answer was not read to its end is closed."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()


class Client:
    """Keep-alive connections per upstream, used from the event loop's thread only."""

    def __init__(self) -> None:
        self._idle: dict[Origin, list[_Conn]] = {}
        self._ssl: ssl.SSLContext | None = None

    async def request(
        self, method: str, url: str, *, content: bytes = b"", headers: dict[str, str] | None = None,
        connect_timeout: float, read_timeout: float,
    ) -> Response:  # fmt: skip
        """Send the request and wait for the answer's head (a deadline of ``read_timeout`` on each
        read); UpstreamError when there is none."""
        origin, target = _split(url)
        conn = self._take(origin) or await self._connect(origin, connect_timeout)
        head = [("host", origin.authority)]
        if content or method not in ("GET", "HEAD"):
            head.append(("content-length", str(len(content))))
        head += list((headers or {}).items())
        try:
            try:
                out = conn.h11.send(h11.Request(method=method, target=target, headers=head)) or b""
                if content:
                    out += conn.h11.send(h11.Data(data=content)) or b""
                out += conn.h11.send(h11.EndOfMessage()) or b""
            except h11.LocalProtocolError as exc:
                raise UpstreamError(f"cannot send the request: {exc}") from None
            try:
                conn.writer.write(out)
                async with asyncio.timeout(read_timeout):
                    await conn.writer.drain()
            except TimeoutError:
                raise UpstreamError(
                    f"the upstream took no byte for {read_timeout:g} s (WriteTimeout)"
                ) from None
            except OSError as exc:
                raise UpstreamError(f"writing to the upstream: {type(exc).__name__}") from None
            event = await conn.next_event(read_timeout)
            while isinstance(event, h11.InformationalResponse):  # 100 Continue and the like
                event = await conn.next_event(read_timeout)
            if not isinstance(event, h11.Response):
                raise UpstreamError("the upstream closed the connection without an answer")
        except BaseException:
            conn.close()  # cancelled too: a half-used connection is never reused
            raise
        return Response(self, conn, event, read_timeout)

    def _take(self, origin: Origin) -> _Conn | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # the most recent first
            if conn.reusable(now):
                return conn
            conn.close()
        return None

    async def _connect(self, origin: Origin, connect_timeout: float) -> _Conn:
        tls: ssl.SSLContext | None = None
        if origin.scheme == "https":
            if (
                self._ssl is None
            ):  # the CAs httpx trusts (certifi's), so an https upstream is trusted as before
                self._ssl = ssl.create_default_context(cafile=certifi.where())
            tls = self._ssl
        try:
            async with asyncio.timeout(connect_timeout):
                reader, writer = await asyncio.open_connection(
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                    limit=READ_BYTES,
                )
        except TimeoutError:
            raise UpstreamError(f"no connection within {connect_timeout:g} s (ConnectTimeout)") from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError(f"cannot connect: {type(exc).__name__}: {exc}") from None
        return _Conn(origin, reader, writer)

    def _release(self, conn: _Conn) -> None:
        """An answer read to its end: its connection kept for the next request, if it may be."""
        h = conn.h11
        if h.our_state is h11.DONE and h.their_state is h11.DONE:
            h.start_next_cycle()
            idle = self._idle.setdefault(conn.origin, [])
            if len(idle) < MAX_IDLE:
                conn.idle_since = time.monotonic()
                idle.append(conn)
                return
        conn.close()

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
