"""Server-sent events of an OpenAI-compatible stream, read as they are relayed.

Chat (``chat.completion.chunk``: ``choices[].delta.content``) and completions (``choices[].text``)
streams end with ``data: [DONE]``; with ``stream_options: {"include_usage": true}`` the chunk before
it has ``"choices": []`` and the request's ``usage`` (vLLM, SGLang and TGI send the same; some send
``"choices": null``). Each event is relayed whole, byte for byte, except that usage-only chunk when
the client did not ask for it (the gateway asks upstream always): a client that indexes
``choices[0]`` would fail on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from seamguard.gateway.budgets import loads, tokens_in_text, usage_total
from seamguard.gateway.config import Estimate

SEPARATORS = (b"\n\n", b"\r\n\r\n")


@dataclass(frozen=True)
class Event:
    raw: bytes  # the event as received, its blank line included
    tokens: int  # tokens it streamed (an estimate from its text)
    usage: int | None  # the request's total from a usage chunk
    done: bool  # data: [DONE]
    usage_only: bool  # a chunk with no choices and a usage


def split_events(buf: bytes) -> tuple[list[bytes], bytes]:
    """Complete events at the head of ``buf`` and what is left of it."""
    out: list[bytes] = []
    while True:
        cuts = [(i, len(s)) for s in SEPARATORS if (i := buf.find(s)) >= 0]
        if not cuts:
            return out, buf
        i, n = min(cuts)
        out.append(buf[: i + n])
        buf = buf[i + n :]


def _choice_chars(choice: Any) -> int:
    if not isinstance(choice, dict):
        return 0
    chars = 0
    text = choice.get("text")
    if isinstance(text, str):
        chars += len(text)
    delta = choice.get("delta")
    if isinstance(delta, dict):
        for field in ("content", "reasoning_content", "refusal"):
            v = delta.get(field)
            if isinstance(v, str):
                chars += len(v)
        for call in delta.get("tool_calls") or ():
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                chars += sum(len(v) for v in (fn.get("name"), fn.get("arguments")) if isinstance(v, str))
    return chars


def read_event(raw: bytes, estimate: Estimate) -> Event:
    """What one event streamed; an event that does not parse streamed nothing countable."""
    data = b"".join(line[5:].lstrip(b" ") for line in raw.splitlines() if line.startswith(b"data:")).strip()
    if not data:
        return Event(raw, 0, None, False, False)
    if data == b"[DONE]":
        return Event(raw, 0, None, True, False)
    try:
        doc = loads(data)
    except ValueError:
        return Event(raw, 0, None, False, False)
    if not isinstance(doc, dict):
        return Event(raw, 0, None, False, False)
    choices = doc.get("choices") or []
    tokens = (
        sum(tokens_in_text(_choice_chars(c), estimate) for c in choices) if isinstance(choices, list) else 0
    )
    usage = usage_total(doc.get("usage"))
    return Event(raw, tokens, usage, False, usage is not None and not choices)
