"""A small OpenAI-compatible inference server for the gateway's tests and bench, on a loopback port.

It answers as vLLM's OpenAI server does: ``/v1/chat/completions`` and ``/v1/completions``, whole
or streamed as server-sent events (``chat.completion.chunk`` deltas, a final chunk with
``finish_reason``, with ``stream_options.include_usage`` a usage chunk with ``"choices": []`` and
``"usage": null`` on every other chunk, then ``data: [DONE]``), ``/v1/embeddings`` and
``/v1/models``. Each completion token is the text ``"tok "`` (4 characters); a prompt counts
ceil(characters of its messages / 4) tokens. Knobs (``Knobs``) make it fail, slow down or cut a
stream off after some chunks.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from seamguard.service.server import serve_in_thread

TOKEN = "tok "


@dataclass
class Knobs:
    reply_tokens: int = 16  # completion tokens when max_tokens allows
    latency_s: float = 0.0  # before the answer's head
    token_s: float = 0.0  # between two streamed chunks
    fail_status: int | None = None  # answer every generation with this status
    fail_next: int = 0  # the next N generations answer 503
    cut_after: int | None = None  # a stream breaks off (connection dropped) after this many tokens
    calls: int = 0  # generations asked for (failed ones included)
    served_tokens: int = 0  # prompt + completion tokens of what it answered (a cut stream: what it sent)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def prompt_tokens(body: dict[str, Any]) -> int:
    if "messages" in body:
        text = "".join(str(m.get("content", "")) for m in body["messages"])
    else:
        text = str(body.get("prompt", body.get("input", "")))
    return max(1, math.ceil(len(text) / 4))


class Upstream:
    def __init__(self, models: tuple[str, ...] = ("m",)) -> None:
        self.models = models
        self.knobs = Knobs()

    def app(self) -> FastAPI:
        return FastAPI(routes=[
            Route("/v1/chat/completions", self.generate, methods=["POST"]),
            Route("/v1/completions", self.generate, methods=["POST"]),
            Route("/v1/embeddings", self.embed, methods=["POST"]),
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route("/stats", self.stats, methods=["GET"]),
        ], openapi_url=None, docs_url=None, redoc_url=None)  # fmt: skip

    async def stats(self, request: Request) -> Response:
        """What it served (for a bench that runs it in a process of its own)."""
        return JSONResponse({"calls": self.knobs.calls, "served_tokens": self.knobs.served_tokens})

    async def list_models(self, request: Request) -> Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "vllm"} for m in self.models]
        return JSONResponse({"object": "list", "data": data})

    async def embed(self, request: Request) -> Response:
        body = json.loads(await request.body())
        n = prompt_tokens(body)
        return JSONResponse({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.0] * 8}],
                             "model": body["model"], "usage": {"prompt_tokens": n, "total_tokens": n}})  # fmt: skip

    async def generate(self, request: Request) -> Response:
        body = json.loads(await request.body())
        k = self.knobs
        with k.lock:
            k.calls += 1
            k.bodies.append(body)
            failing = k.fail_status
            if failing is None and k.fail_next > 0:
                k.fail_next -= 1
                failing = 503
        if k.latency_s:
            await asyncio.sleep(k.latency_s)
        if failing is not None:
            err = {"error": {"message": "upstream failing", "type": "server_error", "code": failing}}
            return JSONResponse(err, status_code=failing)
        n_out = min(k.reply_tokens, int(body.get("max_tokens") or body.get("max_completion_tokens") or 16))
        n_in = prompt_tokens(body)
        usage = {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}
        chat = request.url.path.endswith("/chat/completions")
        if not body.get("stream"):
            with k.lock:
                k.served_tokens += n_in + n_out
            choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "logprobs": None}
            if chat:
                choice["message"] = {"role": "assistant", "content": TOKEN * n_out}
            else:
                choice["text"] = TOKEN * n_out
            obj = "chat.completion" if chat else "text_completion"
            return JSONResponse({"id": "cmpl-1", "object": obj, "created": int(time.time()), "model": body["model"],
                                 "choices": [choice], "usage": usage})  # fmt: skip
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(self._stream(body["model"], chat, n_out, usage, with_usage),
                                 media_type="text/event-stream")  # fmt: skip

    async def _stream(
        self, model: str, chat: bool, n_out: int, usage: dict[str, int], with_usage: bool
    ) -> AsyncIterator[bytes]:
        k = self.knobs

        def piece(text: str | None, finish: str | None = None) -> dict[str, Any]:
            c: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish}
            if chat:
                c["delta"] = {} if text is None else {"content": text}
            else:
                c["text"] = text or ""
            return c

        def chunk(choices: list[dict[str, Any]], use: Any = None) -> bytes:
            doc: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk" if chat else "text_completion",
                                   "created": int(time.time()), "model": model, "choices": choices}  # fmt: skip
            if with_usage:
                doc["usage"] = use  # null on every chunk but the last, as OpenAI and vLLM send it
            return b"data: " + json.dumps(doc).encode() + b"\n\n"

        if chat:
            yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                          "finish_reason": None}])  # fmt: skip
        with k.lock:
            k.served_tokens += usage["prompt_tokens"]
        for i in range(n_out):
            if k.cut_after is not None and i >= k.cut_after:
                raise ConnectionAbortedError("cut by the test upstream")  # uvicorn drops the connection
            if k.token_s:
                await asyncio.sleep(k.token_s)
            with k.lock:
                k.served_tokens += 1
            yield chunk([piece(TOKEN)])
        yield chunk([piece(None, "length")])
        if with_usage:
            yield chunk([], usage)
        yield b"data: [DONE]\n\n"


@contextmanager
def upstream(models: tuple[str, ...] = ("m",)) -> Iterator[tuple[Upstream, str]]:
    """An upstream serving on a free loopback port until the block ends: (it, its URL)."""
    up = Upstream(models)
    server = serve_in_thread(up.app())
    try:
        yield up, server.url
    finally:
        server.stop()


if __name__ == "__main__":  # python -m tests.openai_upstream PORT: served until killed
    import sys

    import uvicorn

    uvicorn.run(Upstream().app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
