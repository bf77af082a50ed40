"""Per-client fairness on the push endpoint: a token bucket in rows per second for each principal.

Written by hand rather than taken from a rate-limit library: the cost of a request is its row
count (known only once the body is parsed), the refusal must say when to come back
(``Retry-After``), and the state must stay bounded however many clients appear; the libraries
at hand (``limits``, ``pyrate-limiter``) count requests in windows and would need all three
bolted on. The whole rule is a few lines of arithmetic under one lock.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

MAX_PRINCIPALS = 10_000  # buckets kept at most; the least recently seen one goes first


@dataclass(frozen=True)
class RateLimit:
    rows_per_s: float  # sustained rows a principal may push
    burst_rows: float  # rows it may push at once after being idle (the bucket's size)

    def __post_init__(self) -> None:
        if not (self.rows_per_s > 0 and math.isfinite(self.rows_per_s)):
            raise ValueError(f"rate_limit_rows_per_s must be a positive number, got {self.rows_per_s}")
        if not (self.burst_rows >= 1 and math.isfinite(self.burst_rows)):
            raise ValueError(f"burst_rows must be at least 1, got {self.burst_rows}")

    @property
    def refill_s(self) -> float:
        """Seconds an empty bucket takes to fill: a bucket idle this long equals a new one."""
        return self.burst_rows / self.rows_per_s


@dataclass
class _Bucket:
    tokens: float
    at: float  # when ``tokens`` was last brought up to date


class RowBuckets:
    """One token bucket per principal. ``take`` is all-or-nothing; ``charge`` bills what a refused
    batch cost to read, down to one burst in debt."""

    def __init__(self, limit: RateLimit, max_principals: int = MAX_PRINCIPALS) -> None:
        self.limit = limit
        self.max_principals = max_principals
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()  # least recently seen first

    def __len__(self) -> int:
        return len(self._buckets)

    def wait_s(self, principal: str, rows: float, now: float) -> float:
        """Seconds until ``principal`` may push ``rows`` (0: it may now); takes nothing."""
        with self._lock:
            return self._wait(self._refill(principal, now), rows)

    def take(self, principal: str, rows: float, now: float) -> float:
        """Take ``rows`` from the principal's bucket and return 0, or take nothing and return the
        seconds until they would fit."""
        with self._lock:
            bucket = self._refill(principal, now)
            wait = self._wait(bucket, rows)
            if wait == 0.0:
                bucket.tokens -= rows
            return wait

    def charge(self, principal: str, rows: float, now: float) -> float:
        """Take ``rows`` whether or not they are there (a refused body was parsed all the same),
        leaving at most one burst of debt; the seconds until ``rows`` would fit again."""
        with self._lock:
            bucket = self._refill(principal, now)
            bucket.tokens = max(-self.limit.burst_rows, bucket.tokens - rows)
            return self._wait(bucket, rows)

    def _wait(self, bucket: _Bucket, rows: float) -> float:
        short = rows - bucket.tokens
        return 0.0 if short <= 0 else short / self.limit.rows_per_s

    def _refill(self, principal: str, now: float) -> _Bucket:
        self._evict(now)
        bucket = self._buckets.get(principal)
        if bucket is None:
            bucket = self._buckets[principal] = _Bucket(self.limit.burst_rows, now)
        else:
            self._buckets.move_to_end(principal)
            elapsed = max(0.0, now - bucket.at)  # a clock stepping back refills nothing
            bucket.tokens = min(self.limit.burst_rows, bucket.tokens + elapsed * self.limit.rows_per_s)
            bucket.at = max(bucket.at, now)
        return bucket

    def _evict(self, now: float) -> None:
        """Idle buckets that have filled up again are forgotten (a full bucket is a new one); past
        ``max_principals`` the least recently seen goes too, full or not."""
        idle = self.limit.refill_s
        while self._buckets:
            oldest, bucket = next(iter(self._buckets.items()))
            if now - bucket.at >= idle or len(self._buckets) >= self.max_principals:
                del self._buckets[oldest]
            else:
                break
