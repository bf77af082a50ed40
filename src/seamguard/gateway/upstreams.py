"""Calling upstreams: pick a healthy one for the model, fail over, retry within the budget.

A request is retried (on the next healthy upstream of its model, round robin) only when the
upstream gave no answer or answered 5xx, only before anything was relayed to the client, at most
``retry.max_attempts`` calls in all, and only while the retry budget allows. A 4xx is the
request's fault, not the upstream's: it is relayed as it is and counts as an answer for the breaker.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from seamguard.actuators.guard import Breaker
from seamguard.gateway.breaker import Ticket, UpstreamBreaker
from seamguard.gateway.client import Client, Response, UpstreamError
from seamguard.gateway.config import GatewayConfig, Upstream
from seamguard.gateway.metrics import GatewayMetrics
from seamguard.gateway.retry import RetryBudget

log = logging.getLogger(__name__)


@dataclass
class Pool:
    """One upstream: its config, its breaker and its own key (read once at start)."""

    upstream: Upstream
    breaker: UpstreamBreaker
    api_key: str | None = None

    @property
    def name(self) -> str:
        return self.upstream.name


@dataclass
class Answer:
    """An upstream's answer whose head has arrived, its body not read yet (or read: ``body``)."""

    pool: Pool
    ticket: Ticket
    response: Response
    body: bytes | None = None


@dataclass
class Failure:
    status: int  # what the client is told: the upstream's 5xx, 502 (no answer) or 503 (none healthy)
    message: str
    body: bytes | None = None  # the upstream's own 5xx body, relayed as it is
    content_type: str = "application/json"


@dataclass
class Upstreams:
    config: GatewayConfig
    metrics: GatewayMetrics
    on_breaker: Callable[[Pool, Breaker], None]
    monotonic: Callable[[], float] = time.monotonic
    pools: dict[str, Pool] = field(default_factory=dict)
    by_model: dict[str, list[Pool]] = field(default_factory=dict)
    retry: RetryBudget = field(init=False)
    _turn: Iterator[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.retry = RetryBudget(self.config.retry)
        for up in self.config.upstreams:
            key = up.api_key_file.read_text(encoding="utf-8").strip() if up.api_key_file is not None else None
            pool = self.pools[up.name] = Pool(up, UpstreamBreaker(up.name, self.config.breaker), key)
            self.metrics.set_breaker(up.name, Breaker.CLOSED)
            for model in up.models:
                self.by_model.setdefault(model, []).append(pool)

    def models(self) -> list[str]:
        return sorted(self.by_model)

    def _pick(self, model: str, tried: set[str]) -> tuple[Pool, Ticket] | None:
        """The next upstream of ``model`` whose breaker lets a request through, round robin, those
        not tried yet for this request first (a model with one upstream retries on it)."""
        pools = self.by_model[model]
        start = next(self._turn) % len(pools)
        now = self.monotonic()
        turn = pools[start:] + pools[:start]
        for pool in [p for p in turn if p.name not in tried] + [p for p in turn if p.name in tried]:
            before = pool.breaker.state(now)
            ticket = pool.breaker.acquire(now)
            after = pool.breaker.state(now)
            if before is not after or after is Breaker.HALF_OPEN:
                self.metrics.set_breaker(pool.name, after)
            if ticket is not None:
                return pool, ticket
        return None

    def failed(self, pool: Pool, ticket: Ticket) -> None:
        moved = pool.breaker.failure(ticket, self.monotonic())
        if moved is not None:
            self.metrics.set_breaker(pool.name, moved)
            self.on_breaker(pool, moved)

    def succeeded(self, answer: Answer) -> None:
        moved = answer.pool.breaker.success(answer.ticket, self.monotonic())
        if moved is not None:
            self.metrics.set_breaker(answer.pool.name, moved)
            self.on_breaker(answer.pool, moved)

    async def call(
        self, client: Client, model: str, path: str, content: bytes, headers: dict[str, str],
        max_error_bytes: int = 65536,
    ) -> Answer | Failure:  # fmt: skip
        """Send the request to a healthy upstream, failing over and retrying within the budget."""
        self.retry.request(self.monotonic())
        tried: set[str] = set()
        last: Failure | None = None
        for attempt in range(self.config.retry.max_attempts):
            picked = self._pick(model, tried)
            if picked is None:
                break
            pool, ticket = picked
            if attempt > 0:
                if not self.retry.try_retry(self.monotonic()):
                    pool.breaker.release(ticket)
                    self.metrics.retries.labels("denied").inc()
                    break
                self.metrics.retries.labels("taken").inc()
            tried.add(pool.name)
            up = pool.upstream
            hdrs = dict(headers)
            if pool.api_key is not None:
                hdrs["authorization"] = f"Bearer {pool.api_key}"
            try:
                response = await client.request("POST", up.url.rstrip("/") + path, content=content, headers=hdrs,
                                                connect_timeout=up.connect_timeout_s, read_timeout=up.read_timeout_s)  # fmt: skip
            except UpstreamError as exc:
                self.metrics.upstream.labels(pool.name, "error").inc()
                self.failed(pool, ticket)
                log.info("upstream %s did not answer: %s", pool.name, exc)
                last = Failure(502, f"upstream {pool.name} did not answer")
                continue
            except BaseException:
                pool.breaker.release(ticket)  # cancelled: says nothing of the upstream
                raise
            self.metrics.upstream.labels(pool.name, f"{response.status_code // 100}xx").inc()
            if response.status_code < 500:
                return Answer(pool, ticket, response)
            try:
                body = await _read_some(response, max_error_bytes)
            finally:
                await response.aclose()
            self.failed(pool, ticket)
            ctype = response.headers.get("content-type", "application/json")
            last = Failure(
                response.status_code, f"upstream {pool.name} answered {response.status_code}", body, ctype
            )
        if last is None:
            return Failure(503, f"no healthy upstream for model {model!r}: every breaker is open")
        return last


async def _read_some(response: Response, limit: int) -> bytes:
    out = bytearray()
    try:
        async for chunk in response.aiter_raw():
            out += chunk
            if len(out) >= limit:
                break
    except UpstreamError:
        pass  # what came of it is relayed
    return bytes(out[:limit])
