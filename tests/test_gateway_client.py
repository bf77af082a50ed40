"""The gateway's own HTTP client for its upstreams (``gateway.client``) against servers that misbehave."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from seamguard.gateway.client import Client, UpstreamError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    return head + await reader.readexactly(length)


async def _body(client: Client, url: str, read_timeout: float = 5.0) -> tuple[int, bytes]:
    r = await client.request("POST", url + "/x", content=b"{}", connect_timeout=5, read_timeout=read_timeout)
    out = b""
    try:
        async for chunk in r.aiter_raw():
            out += chunk
    finally:
        await r.aclose()
    return r.status_code, out


def test_keep_alive_reuse_chunked_answers_and_a_connection_closed_while_idle() -> None:
    connections: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        for _ in range(2):
            await _read_request(reader)
            writer.write(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            )
            await writer.drain()
        writer.close()  # after two answers: the client's idle connection is now closed

    async def main() -> None:
        server, url = await _serve(handler)
        client = Client()
        async with server:
            assert await _body(client, url) == (200, b"abcde")
            assert await _body(client, url) == (200, b"abcde")
            assert len(connections) == 1  # reused
            await asyncio.sleep(0.1)
            assert await _body(client, url) == (200, b"abcde")  # a new connection, not an error
            assert len(connections) == 2
            await client.aclose()

    asyncio.run(main())


def test_no_answer_a_silent_upstream_and_one_that_breaks_off_are_upstream_errors() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(5)

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc")
        writer.close()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        writer.close()

    async def main() -> None:
        client = Client()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]
        with pytest.raises(UpstreamError, match="cannot connect"):
            await _body(client, f"http://127.0.0.1:{closed}")
        for handler, match in ((silent, "ReadTimeout"), (cut, "closed"), (garbage, "bad HTTP")):
            server, url = await _serve(handler)
            async with server:
                with pytest.raises(UpstreamError, match=match):
                    await _body(client, url, read_timeout=0.3)
        await client.aclose()

    asyncio.run(main())
