"""Requests per second per key and per tenant: the push endpoint's token buckets
(``telemetry.sources.push_limits``), one per key and one per tenant, a request costing one.

A request must fit both buckets; it is taken from both or from neither, so a key refused by its
tenant's limit does not also spend its own. Called from the event loop's thread only.
"""

from __future__ import annotations

from dataclasses import dataclass

from seamguard.gateway.config import GatewayConfig, Rate
from seamguard.telemetry.sources.push_limits import RateLimit, RowBuckets


@dataclass(frozen=True)
class Refusal:
    scope: str  # "key" or "tenant"
    wait_s: float  # when the request would fit


def _buckets(rate: Rate | None) -> RowBuckets | None:
    return None if rate is None else RowBuckets(RateLimit(rate.per_s, rate.burst))


class Limiter:
    def __init__(self, config: GatewayConfig) -> None:
        self._keys = {k.name: _buckets(k.rate) for k in config.keys}
        self._tenants = {t.name: _buckets(t.rate) for t in config.tenants}

    def admit(self, key: str, tenant: str, now: float) -> Refusal | None:
        """Take one request from the key's and the tenant's buckets, or None taken and why."""
        kb, tb = self._keys.get(key), self._tenants.get(tenant)
        if kb is not None:
            wait = kb.wait_s(key, 1.0, now)
            if wait > 0:
                return Refusal("key", wait)
        if tb is not None:
            wait = tb.take(tenant, 1.0, now)
            if wait > 0:
                return Refusal("tenant", wait)
        if kb is not None:
            kb.take(key, 1.0, now)  # fits: checked above, nothing else ran in between
        return None
