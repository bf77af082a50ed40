"""The gateway served on a loopback port in front of test upstreams (``tests/openai_upstream.py``)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seamguard.gateway.app import Gateway
from seamguard.gateway.config import gateway_config
from seamguard.gateway.store import SpendStore
from seamguard.service.auth import digest_of
from seamguard.service.server import RunningServer, serve_in_thread

KEYS = {"alice": "sgt_alice-secret-key-for-tests-000000000000000000", "bob": "sgt_bob-secret-key-for-tests-00000000000000000000"}  # fmt: skip
VIEWER = "sgt_viewer-token-for-tests-000000000000000000000"


def config(journal: Path, ups: list[tuple[str, str]], **over: Any) -> dict[str, Any]:
    """A gateway config: keys alice (tenant lab) and bob (tenant ops), each budget 100,000 a day;
    ``ups`` (name, url) all serving model ``m``; ``over`` merged into the section."""
    section: dict[str, Any] = {
        "journal": str(journal),
        "flush_s": 0.05,
        "tenants": [{"name": "lab"}, {"name": "ops"}],
        "keys": [
            {
                "name": "alice",
                "tenant": "lab",
                "digest": digest_of(KEYS["alice"]),
                "budget": {"tokens": 100_000},
            },
            {"name": "bob", "tenant": "ops", "digest": digest_of(KEYS["bob"]), "budget": {"tokens": 100_000}},
        ],
        "upstreams": [{"name": n, "url": u, "models": ["m"]} for n, u in ups],
        "auth": {"tokens": [{"name": "grafana", "roles": ["viewer"], "digest": digest_of(VIEWER)}]},
    }
    for k, v in over.items():
        section[k] = copy.deepcopy(v)
    return {"gateway": section}


@dataclass
class Running:
    gateway: Gateway
    server: RunningServer

    @property
    def url(self) -> str:
        return self.server.url


@contextmanager
def gateway(data: dict[str, Any], monotonic: Callable[[], float] = time.monotonic) -> Iterator[Running]:
    """Served until the block ends; ``monotonic`` is the breakers', rate limits' and retries' clock."""
    cfg = gateway_config(data, "test")
    store = SpendStore(cfg.journal, cfg.flush_s)
    gw = Gateway(cfg, store, monotonic=monotonic)
    server = serve_in_thread(gw.app())
    try:
        yield Running(gw, server)
    finally:
        server.stop()
        store.close()


def auth(name: str = "alice") -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS[name]}"}


def chat(max_tokens: int | None = 8, stream: bool = False, text: str = "hello there") -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": text}], "stream": stream}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body
