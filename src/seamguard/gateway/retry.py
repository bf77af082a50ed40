"""A retry budget, after Finagle's ``RetryBudget`` and Linkerd's: retries stay a share of requests.

Retrying every failure multiplies the load on upstreams that are already failing (a retry storm).
Within the last ``ttl_s`` seconds, retries may number ``percent`` of the requests plus a floor of
``min_per_s`` a second (so a quiet gateway can still retry once in a while). Counted in one-second
slots (at most ``ttl_s`` + 1 kept), time passed in. A request that was ever streamed to its
client is never retried: the caller asks only before the first byte.
"""

from __future__ import annotations

import math
from collections import deque

from seamguard.gateway.config import RetryConfig


class RetryBudget:
    def __init__(self, config: RetryConfig) -> None:
        self.config = config
        self._slots: deque[list[float]] = deque()  # [second, requests, retries], oldest first

    def _slot(self, now: float) -> list[float]:
        second = math.floor(now)
        horizon = second - self.config.ttl_s
        while self._slots and self._slots[0][0] <= horizon:
            self._slots.popleft()
        if not self._slots or self._slots[-1][0] < second:
            self._slots.append([second, 0.0, 0.0])
        return self._slots[-1]

    def _totals(self, now: float) -> tuple[float, float]:
        self._slot(now)
        return sum(s[1] for s in self._slots), sum(s[2] for s in self._slots)

    def request(self, now: float) -> None:
        """Count one client request (its first attempt)."""
        self._slot(now)[1] += 1

    def allowance(self, now: float) -> float:
        """Retries the window allows in all (used ones included)."""
        requests, _ = self._totals(now)
        return self.config.min_per_s * self.config.ttl_s + requests * self.config.percent / 100.0

    def try_retry(self, now: float) -> bool:
        """Take one retry if the window allows it."""
        requests, retries = self._totals(now)
        if retries + 1 > self.config.min_per_s * self.config.ttl_s + requests * self.config.percent / 100.0:
            return False
        self._slot(now)[2] += 1
        return True
