"""The gateway's own Prometheus metrics (``docs/metrics.md``, "The gateway's metrics").

A registry of its own, not the process-wide default. Series are per key, tenant, upstream and
outcome: keys and upstreams come from the config, so their number is bounded by it (an unknown
key is counted under ``key=""``, never under what it sent).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from seamguard.actuators.guard import Breaker

OUTCOMES = (
    "ok",  # 2xx relayed (a stream to its end)
    "upstream_error",  # the upstream answered 4xx/5xx, or not at all, after any retries
    "cut",  # a stream that ended before its end (the upstream or the client went away, or a limit cut it)
    "refused_budget",
    "refused_rate",
    "refused_zombie",
    "refused_streams",  # max_streams (or the key's max_streams_per_key) relayed already
    "no_upstream",  # every upstream of the model open (breakers)
    "bad_request",
    "unauthenticated",
)


class GatewayMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("seamguard_gateway_requests", "requests by key, tenant and outcome",
                                ["key", "tenant", "outcome"], registry=r)  # fmt: skip
        self.reserved = Counter("seamguard_gateway_tokens_reserved", "tokens reserved at admission",
                                ["key", "tenant"], registry=r)  # fmt: skip
        self.settled = Counter("seamguard_gateway_tokens_settled", "tokens charged once requests ended",
                               ["key", "tenant"], registry=r)  # fmt: skip
        self.remaining = Gauge("seamguard_gateway_budget_remaining_tokens",
                               "tokens a key may still reserve this period", ["key"], registry=r)  # fmt: skip
        self.breaker = Gauge("seamguard_gateway_upstream_breaker", "1 for each upstream's breaker state",
                             ["upstream", "state"], registry=r)  # fmt: skip
        self.upstream = Counter("seamguard_gateway_upstream_requests", "calls to upstreams by status class",
                                ["upstream", "status"], registry=r)  # fmt: skip
        self.retries = Counter("seamguard_gateway_retries", "retries: taken, or denied by the retry budget",
                               ["outcome"], registry=r)  # fmt: skip
        self.zombie = Gauge("seamguard_gateway_key_zombie", "1 while a key is flagged (woke, failing)",
                            ["key", "kind"], registry=r)  # fmt: skip
        self.streams = Gauge("seamguard_gateway_streams_open", "streams being relayed", registry=r)
        self.added = Histogram(
            "seamguard_gateway_added_latency_seconds",
            "time the gateway adds to a request: admission until the upstream call, and its answer's head until relayed",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )

    def set_breaker(self, upstream: str, state: Breaker) -> None:
        for s in Breaker:
            self.breaker.labels(upstream, s.value).set(1.0 if s is state else 0.0)
