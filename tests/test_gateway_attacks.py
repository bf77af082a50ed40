"""The gateway as someone on its network would try it: headers and keys smuggled upstream, caps
played down, slow bodies, clients that never read, upstreams that never stop or lie in their usage."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from seamguard.service.server import serve_in_thread
from tests.gateway_harness import KEYS, VIEWER, Running, auth, chat, config, gateway
from tests.openai_upstream import upstream

CHAT = "/v1/chat/completions"
UPSTREAM_KEY = "upstream-own-key-0123456789"


@dataclass
class Rogue:
    """An upstream that records what reaches it and misbehaves as told."""

    usage: Any = None  # the whole answer's usage (None: none)
    chunks: int = 3  # a stream's chunks, whatever max_tokens says
    chunk_s: float = 0.0
    json_for_streams: bool = False  # answers a stream request whole (an endpoint that does not stream)
    seen: list[tuple[str, str, dict[str, str], bytes]] = field(
        default_factory=list
    )  # path, query, headers, body

    def app(self) -> FastAPI:
        return FastAPI(routes=[Route(CHAT, self.chat, methods=["POST"])], openapi_url=None, docs_url=None)

    async def chat(self, request: Request) -> Response:
        raw = await request.body()
        self.seen.append((request.url.path, request.url.query, dict(request.headers), raw))
        body = json.loads(raw)
        if body.get("stream") and not self.json_for_streams:
            return StreamingResponse(self._stream(), media_type="text/event-stream")
        doc: dict[str, Any] = {
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"content": "hi"}}],
        }
        if self.usage is not None:
            doc["usage"] = self.usage
        return JSONResponse(doc)

    async def _stream(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            if self.chunk_s:
                await asyncio.sleep(self.chunk_s)
            yield b'data: {"choices": [{"index": 0, "delta": {"content": "tok "}}]}\n\n'
        yield b"data: [DONE]\n\n"


@contextmanager
def rogue(r: Rogue) -> Iterator[str]:
    server = serve_in_thread(r.app())
    try:
        yield server.url
    finally:
        server.stop()


def _post(g: Running, body: dict[str, Any] | bytes, key: str = "alice", **kw: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        g.url + CHAT, content=content, headers={**auth(key), **kw.pop("headers", {})}, timeout=30, **kw
    )


def _wait(cond: Any, within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _outcomes(g: Running) -> dict[str, float]:
    text = httpx.get(g.url + "/metrics", headers={"authorization": f"Bearer {VIEWER}"}).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith('seamguard_gateway_requests_total{key="alice"'):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            out[outcome] = out.get(outcome, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def _settled(g: Running) -> None:
    """Nothing left reserved nor streaming."""
    _wait(lambda: g.gateway.streams == 0 and g.gateway.ledger.account("alice", time.time()).reserved == 0)


def test_nothing_of_the_client_reaches_the_upstream_but_the_body_it_was_judged_on(tmp_path: Path) -> None:
    (tmp_path / "up.key").write_text(UPSTREAM_KEY + "\n")
    r = Rogue(usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
    with rogue(r) as url:
        data = config(tmp_path / "j.sqlite", [])
        data["gateway"]["upstreams"] = [{"name": "u", "url": url, "models": ["m"], "api_key_file": str(tmp_path / "up.key")}]  # fmt: skip
        with gateway(data) as g:
            smuggled = {"x-forwarded-for": "10.0.0.1", "x-forwarded-host": "admin", "x-api-key": "k",
                        "cookie": "session=1", "connection": "keep-alive, x-hop", "x-hop": "1",
                        "proxy-authorization": "Basic eDp5", "host": "evil.example"}  # fmt: skip
            # a key given twice: Python's parser keeps the last, others the first
            raw = b'{"model": "m", "messages": [], "max_tokens": 100000, "max_tokens": 1, "n": 1}'
            assert _post(g, raw, headers=smuggled).status_code == 200
            _, _, headers, body = r.seen[-1]
            assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"  # its own key, never the client's
            assert KEYS["alice"] not in json.dumps(headers)
            assert not (set(smuggled) - {"host"}) & set(headers)
            assert headers["host"] == url.removeprefix("http://")
            assert body.count(b'"max_tokens"') == 1 and json.loads(body)["max_tokens"] == 1
            # the upstream is called on the route, never on what the URL said
            for target in (
                "/v1/chat%2Fcompletions",
                "/v1/chat/completions?x=../../admin",
                "/v1/./chat/completions",
            ):
                httpx.post(g.url + target, content=json.dumps(chat()).encode(), headers=auth(), timeout=10)
            assert {(p, q) for p, q, _, _ in r.seen} <= {(CHAT, "")}
            # NaN is not JSON; nesting too deep is a 400, not a server error (and a traceback)
            assert _post(g, b'{"model": "m", "messages": [], "max_tokens": NaN}').status_code == 400
            assert _post(g, b'{"model": "m", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}").status_code == 400


def test_errors_say_nothing_of_other_keys(tmp_path: Path) -> None:
    with upstream() as (_, url), gateway(config(tmp_path / "j.sqlite", [("u", url)])) as g:
        near = KEYS["alice"][:-1] + ("0" if KEYS["alice"][-1] != "0" else "1")
        bodies = [
            _post(g, chat(), headers={"authorization": f"Bearer {k}"}).text for k in (near, "sgt_x" * 40)
        ]
        assert bodies[0] == bodies[1] and "alice" not in bodies[0] and "bob" not in bodies[0]
        assert httpx.get(g.url + "/metrics").status_code == 401


def test_caps_cannot_be_played_down_to_under_reserve(tmp_path: Path) -> None:
    with upstream() as (up, url), gateway(config(tmp_path / "j.sqlite", [("u", url)])) as g:
        # the smaller cap reserved, the larger honoured: refused, since 100,000 tokens do not fit
        r = _post(g, {**chat(max_tokens=100_000), "max_completion_tokens": 1})
        assert r.status_code == 429 and up.knobs.calls == 0
        assert _post(g, {**chat(max_tokens=None), "max_completion_tokens": 7}).status_code == 200
        assert up.knobs.bodies[-1]["max_tokens"] == 7  # held to it by an upstream that knows only max_tokens
        many = {"model": "m", "prompt": ["a"] * 500, "max_tokens": 100, "best_of": 3}
        r = httpx.post(
            g.url + "/v1/completions", content=json.dumps(many).encode(), headers=auth(), timeout=10
        )
        assert r.status_code == 429  # 500 prompts x 3 sequences x 100 tokens
        for bad in (-1, 1.5, "9", True, None):
            body = {**chat(max_tokens=None), "n": bad} if bad is not None else {**chat(), "n": 0}
            assert _post(g, body).status_code == 400


def test_stream_slots_are_taken_at_admission_not_once_the_upstream_answered(tmp_path: Path) -> None:
    with (
        upstream() as (up, url),
        gateway(config(tmp_path / "j.sqlite", [("u", url)], limits={"max_streams": 2})) as g,
    ):
        up.knobs.latency_s = 0.5

        async def one(client: httpx.AsyncClient) -> int:
            async with client.stream("POST", CHAT, content=json.dumps(chat(stream=True))) as r:
                await r.aread()
                return r.status_code

        async def burst() -> list[int]:
            async with httpx.AsyncClient(base_url=g.url, headers=auth(), timeout=30) as client:
                return await asyncio.gather(*(one(client) for _ in range(8)))

        statuses = asyncio.run(burst())
        assert statuses.count(200) == 2 and statuses.count(503) == 6 and up.knobs.calls == 2
        _settled(g)


def test_a_body_dripped_slowly_is_cut_at_body_timeout(tmp_path: Path) -> None:
    data = config(tmp_path / "j.sqlite", [], limits={"body_timeout_s": 0.5})
    with upstream() as (up, url):
        data["gateway"]["upstreams"] = [{"name": "u", "url": url, "models": ["m"]}]
        with gateway(data) as g:
            host, port = g.url.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(f"POST {CHAT} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEYS['alice']}\r\n"
                          "content-type: application/json\r\ncontent-length: 1000\r\n\r\n{".encode())  # fmt: skip
                t0 = time.monotonic()
                answer = b""
                while b"\r\n\r\n" not in answer:
                    s.sendall(b" ")  # a byte now and then: no timer between bytes is reset by it
                    time.sleep(0.1)
                    s.setblocking(False)
                    with contextlib.suppress(BlockingIOError):
                        answer += s.recv(65536)
                    s.setblocking(True)
                    assert time.monotonic() - t0 < 5
            assert answer.startswith(b"HTTP/1.1 408") and up.knobs.calls == 0


def test_a_client_that_never_reads_its_stream_is_cut(tmp_path: Path) -> None:
    data = config(tmp_path / "j.sqlite", [], limits={"client_stall_s": 0.5})
    with upstream() as (up, url):
        data["gateway"]["upstreams"] = [{"name": "u", "url": url, "models": ["m"]}]
        up.knobs.reply_tokens = 1_000_000
        with gateway(data) as g:
            host, port = g.url.removeprefix("http://").split(":")
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect((host, int(port)))
            body = json.dumps(chat(max_tokens=80_000, stream=True)).encode()
            head = f"POST {CHAT} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEYS['alice']}\r\ncontent-length: {len(body)}\r\n\r\n"
            s.sendall(head.encode() + body)  # and never read
            try:
                _wait(lambda: g.gateway.streams == 1, 10)
                _settled(g)  # cut once buffers filled and the client took nothing for 0.5 s
            finally:
                s.close()
            assert _outcomes(g).get("cut") == 1 and up.knobs.served_tokens < 80_000
            assert g.gateway.ledger.account("alice", time.time()).spent > 0


def test_an_upstream_that_streams_for_ever_or_past_its_cap_is_cut(tmp_path: Path) -> None:
    r = Rogue(chunks=10**6, chunk_s=0.01)
    with rogue(r) as url:
        data = config(tmp_path / "j.sqlite", [("u", url)], limits={"max_stream_s": 0.5, "overrun": 1000})
        with gateway(data) as g:
            t0 = time.monotonic()
            with httpx.stream("POST", g.url + CHAT, content=json.dumps(chat(max_tokens=50_000, stream=True)),
                              headers=auth(), timeout=10) as resp:  # fmt: skip
                got = b"".join(resp.iter_raw())
            assert resp.status_code == 200 and 0.5 < time.monotonic() - t0 < 5
            assert b"tok" in got and b"[DONE]" not in got
            _settled(g)
            assert _outcomes(g).get("cut") == 1
        data = config(tmp_path / "j2.sqlite", [("u", url)])  # the default overrun: 4x the reservation
        with gateway(data) as g:
            with httpx.stream("POST", g.url + CHAT, content=json.dumps(chat(max_tokens=5, stream=True)),
                              headers=auth(), timeout=10) as resp:  # fmt: skip
                chunks = b"".join(resp.iter_raw()).count(b"tok ")
            assert resp.status_code == 200
            _settled(g)
            reserved = 5 + len(json.dumps(chat(max_tokens=5, stream=True))) // 4
            assert chunks <= 4 * reserved + 2 and _outcomes(g).get("cut") == 1


def test_an_upstream_lying_in_its_usage_is_charged_its_reservation(tmp_path: Path) -> None:
    r = Rogue()
    with rogue(r) as url, gateway(config(tmp_path / "j.sqlite", [("u", url)])) as g:
        need = len(json.dumps(chat(max_tokens=10)).encode()) // 4 + 10
        for lie in (None, {"total_tokens": -100}, {"total_tokens": "5"}, {"total_tokens": 10**400}):
            r.usage = lie
            before = g.gateway.ledger.account("alice", time.time()).spent
            assert _post(g, chat(max_tokens=10)).status_code == 200
            assert need <= g.gateway.ledger.account("alice", time.time()).spent - before <= need + 1
        r.usage = {"total_tokens": 10**11}  # believed, though it locks the key out for the period
        assert _post(g, chat(max_tokens=10)).status_code == 200
        assert _post(g, chat(max_tokens=10)).status_code == 429
        _settled(g)


def test_a_stream_answered_whole_is_settled_from_its_usage(tmp_path: Path) -> None:
    r = Rogue(usage={"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}, json_for_streams=True)
    with rogue(r) as url, gateway(config(tmp_path / "j.sqlite", [("u", url)])) as g:
        resp = _post(g, chat(stream=True))
        assert resp.status_code == 200 and resp.json()["usage"]["total_tokens"] == 42
        assert g.gateway.ledger.account("alice", time.time()).spent == 42
        _settled(g)


def test_one_key_cannot_take_every_stream_slot(tmp_path: Path) -> None:
    data = config(tmp_path / "j.sqlite", [], limits={"max_streams": 4, "max_streams_per_key": 2})
    with upstream() as (up, url):
        data["gateway"]["upstreams"] = [{"name": "u", "url": url, "models": ["m"]}]
        with gateway(data) as g:
            up.knobs.latency_s = 0.5

            async def one(key: str) -> int:
                async with (
                    httpx.AsyncClient(base_url=g.url, headers=auth(key), timeout=30) as client,
                    client.stream("POST", CHAT, content=json.dumps(chat(stream=True))) as r,
                ):
                    await r.aread()
                    return r.status_code

            async def burst() -> list[int]:
                alice = [one("alice") for _ in range(6)]
                await asyncio.sleep(0)
                return await asyncio.gather(*alice, one("bob"))

            statuses = asyncio.run(burst())
            assert statuses[:6].count(200) == 2 and statuses[:6].count(503) == 4 and statuses[6] == 200
            _settled(g)


def test_an_event_that_never_ends_is_cut(tmp_path: Path) -> None:
    r = Rogue(chunks=10**6)
    r._stream = lambda: _endless()  # type: ignore[method-assign]
    with (
        rogue(r) as url,
        gateway(config(tmp_path / "j.sqlite", [("u", url)], limits={"max_event_bytes": 4096})) as g,
    ):
        with httpx.stream(
            "POST", g.url + CHAT, content=json.dumps(chat(stream=True)), headers=auth(), timeout=10
        ) as resp:
            got = b"".join(resp.iter_raw())
        assert resp.status_code == 200 and len(got) < 4096
        _settled(g)
        assert _outcomes(g).get("cut") == 1


async def _endless() -> AsyncIterator[bytes]:
    yield b'data: {"choices": [{"delta": {"content": "'
    while True:
        yield b"x" * 1024
        await asyncio.sleep(0)


def test_a_whole_answer_its_client_never_reads_holds_little_memory(tmp_path: Path) -> None:
    data = config(tmp_path / "j.sqlite", [], limits={"client_stall_s": 0.5})
    data["gateway"]["keys"][0]["budget"] = {"tokens": 10**9}
    with upstream() as (up, url):
        data["gateway"]["upstreams"] = [{"name": "u", "url": url, "models": ["m"]}]
        up.knobs.reply_tokens = 3_000_000  # a 12 MB answer
        with gateway(data) as g:
            host, port = g.url.removeprefix("http://").split(":")
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect((host, int(port)))
            body = json.dumps(chat(max_tokens=3_000_000)).encode()
            head = f"POST {CHAT} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEYS['alice']}\r\ncontent-length: {len(body)}\r\n\r\n"
            s.sendall(head.encode() + body)  # and never read
            try:
                _wait(lambda: _outcomes(g).get("ok") == 1)  # settled: the answer is being written
                time.sleep(1.5)  # the client took nothing for client_stall_s
                held = [p.transport.get_write_buffer_size() for p in g.server.server.server_state.connections]
                assert max(held, default=0) < 1024 * 1024  # not the 12 MB answer
            finally:
                s.close()
