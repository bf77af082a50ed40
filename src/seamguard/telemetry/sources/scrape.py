"""Scraping many DCGM exporters at once: the ``dcgm`` source.

httpx on one asyncio loop fetches every endpoint concurrently (``concurrency`` in flight),
each under a whole-request deadline (``timeout_s``, body included, so a target trickling
bytes cannot hold a poll) and a body cap (``max_bytes``). A body is parsed as soon as it
arrives, so memory holds a few bodies, not the fleet's. A target that fails (timeout, refused,
HTTP error, oversize, garbage past the malformed share) gets a notice and adds no samples:
its series go stale in the store, never zero.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ssl
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
import numpy as np

from seamguard.model.topology import Topology
from seamguard.model.world import WorldChange
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.base import Collected, SourceNotice, bug_text
from seamguard.telemetry.sources.dcgm import (
    DcgmTarget,
    FloatArray,
    IntArray,
    ScrapeTarget,
    SlotTable,
    Tally,
)
from seamguard.telemetry.sources.dcgm_config import DcgmSourceConfig
from seamguard.telemetry.sources.http_auth import ClientAuth, client_auth
from seamguard.telemetry.sources.openmetrics import ExpositionError, parse

ERROR_SNIPPET = 300  # bytes of an error answer quoted in the notice
ACCEPT = "text/plain;version=0.0.4;q=1,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1"


@dataclass(frozen=True)
class Fetched:
    url: str
    body: str | None  # None when the request failed
    content_type: str = ""
    error: str = ""
    seconds: float = 0.0
    size: int = 0


NEEDS_CREDENTIALS = (
    " (the target wants credentials: set bearer_token_file or basic_auth in the source's section)"
)


async def _fetch_one(client: httpx.AsyncClient, url: str, timeout_s: float, max_bytes: int) -> Fetched:
    t0 = time.perf_counter()

    def failed(why: str) -> Fetched:
        return Fetched(url, None, error=why, seconds=time.perf_counter() - t0)

    try:
        async with asyncio.timeout(timeout_s), client.stream("GET", url, headers={"Accept": ACCEPT}) as resp:
            if resp.status_code != 200:
                said = b""
                async for chunk in resp.aiter_bytes():  # the start of the body says why
                    said += chunk
                    if len(said) >= ERROR_SNIPPET:
                        break
                text = said[:ERROR_SNIPPET].decode("utf-8", errors="replace").strip()
                hint = (
                    NEEDS_CREDENTIALS
                    if resp.status_code == 401 and "authorization" not in client.headers
                    else ""
                )
                return failed(
                    f"HTTP {resp.status_code} {resp.reason_phrase}" + (f": {text}" if text else "") + hint
                )
            declared = resp.headers.get("content-length", "")
            if declared.isascii() and declared.isdecimal() and int(declared) > max_bytes:
                return failed(f"body of {int(declared)} bytes refused: over the max_bytes cap of {max_bytes}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    return failed(f"body refused past {max_bytes} bytes (the max_bytes cap)")
                chunks.append(chunk)
            body = b"".join(chunks).decode("utf-8", errors="replace")  # bad bytes become bad lines
            ctype = resp.headers.get("content-type", "")
            return Fetched(url, body, ctype, seconds=time.perf_counter() - t0, size=size)
    except TimeoutError:
        return failed(f"no complete answer within {timeout_s:g} s (timeout_s)")
    except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL is not an HTTPError
        return failed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    except ssl.SSLError as exc:
        # Under TLS 1.3 a server that wants a client certificate says so after the handshake, in
        # an alert the client meets while reading the answer; httpcore lets that one through.
        return failed(f"TLS: {exc}")


async def _fetch_all(
    urls: Sequence[str],
    timeout_s: float,
    concurrency: int,
    max_bytes: int,
    on_result: Callable[[Fetched], None],
    auth: ClientAuth,
) -> None:
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    # trust_env=False: a proxy from the environment must never see exporter traffic.
    async with httpx.AsyncClient(
        limits=limits, timeout=timeout_s, trust_env=False, headers=auth.headers, verify=auth.verify
    ) as client:

        async def one(url: str) -> Fetched:
            async with sem:
                return await _fetch_one(client, url, timeout_s, max_bytes)

        for fut in asyncio.as_completed([one(u) for u in urls]):
            on_result(await fut)


def fetch_all(
    urls: Sequence[str], *, timeout_s: float, concurrency: int, max_bytes: int,
    on_result: Callable[[Fetched], None], auth: ClientAuth | None = None,
) -> None:  # fmt: skip
    """Fetch every URL concurrently; ``on_result`` is called (in one thread) as each finishes.
    Runs its own event loop, in a helper thread if the caller already runs one. ``auth``: the
    credentials and TLS trust to use (``http_auth``)."""
    job = _fetch_all(urls, timeout_s, concurrency, max_bytes, on_result, auth or ClientAuth())
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(job)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, job).result()


def is_openmetrics(content_type: str) -> bool | None:
    """The format from the Content-Type (timestamp unit; OpenMetrics must end with ``# EOF``);
    None lets the parser decide by looking for ``# EOF``."""
    ct = content_type.lower()
    if "application/openmetrics-text" in ct:
        return True
    if "text/plain" in ct:
        return False
    return None


@dataclass
class ScrapeReport:
    """The last poll, for the daemon's own metrics and for tests."""

    targets: int = 0
    failed: int = 0
    bytes: int = 0
    malformed: int = 0
    seconds: float = 0.0
    tally: Tally = field(default_factory=Tally)


class DcgmScrapeSource:
    """The ``dcgm`` source: scrapes every configured exporter each ``collect``."""

    def __init__(self, config: DcgmSourceConfig, topology: Topology) -> None:
        self.name = config.name
        self.config = config
        self.table = SlotTable(topology, config)  # shared: one numpy conversion per poll
        self.targets = {
            e.url: DcgmTarget(
                topology, config, target=ScrapeTarget(e.url, e.target_host(), e.names_node), table=self.table
            )
            for e in config.endpoints
        }
        self.last = ScrapeReport()

    def follow(self, change: WorldChange) -> None:
        """The exporters' series resolve in the new world from the next poll (``SlotTable.follow``)."""
        self.table.follow(change)

    def collect(self, now: float) -> Collected:
        cfg = self.config
        slots: list[IntArray] = []
        values: list[FloatArray] = []
        stamps: list[FloatArray] = []
        notices: list[SourceNotice] = []
        unknown: Counter[str] = Counter()
        report = ScrapeReport(targets=len(self.targets))
        t0 = time.perf_counter()

        def take(f: Fetched) -> None:
            if f.body is None:
                report.failed += 1
                notices.append(SourceNotice(self.name, f.url, f.error))
                return
            report.bytes += f.size
            target = self.targets[f.url]
            try:
                parsed = parse(
                    f.body, target.cache, where=f.url, openmetrics=is_openmetrics(f.content_type),
                    max_malformed_fraction=cfg.max_malformed_fraction,
                )  # fmt: skip
            except ExpositionError as exc:
                report.failed += 1
                notices.append(SourceNotice(self.name, exc.where, exc.problem))
                return
            except Exception as exc:
                # The last line of defence: take() runs inside fetch_all's loop, so anything it
                # raises would end the poll for every endpoint and out of collect(). A body the
                # parser cannot handle is a bug in the parser, but only this endpoint's samples
                # may pay for it (base.py: a source never raises for its input).
                report.failed += 1
                notices.append(
                    SourceNotice(self.name, f.url, bug_text("parsing the body, its samples dropped", exc))
                )
                return
            if parsed.malformed:
                report.malformed += parsed.malformed
                shown = "; ".join(str(i) for i in parsed.issues)
                notices.append(
                    SourceNotice(
                        self.name, f"{f.url}:{parsed.issues[0].line}",
                        f"{parsed.malformed} malformed line(s) skipped, {len(parsed)} samples kept: {shown}",
                    )
                )  # fmt: skip
            slots.append(parsed.slot)
            values.append(parsed.value)
            stamps.append(parsed.timestamp)

        try:
            auth = client_auth(cfg)
        except ValueError as exc:  # a credential file gone: every target is skipped, and says why
            notices.append(SourceNotice(self.name, "credentials", f"{exc}; not scraped"))
            report.failed = len(self.targets)
        else:
            if self.targets:
                fetch_all(
                    list(self.targets), timeout_s=cfg.timeout_s, concurrency=cfg.concurrency,
                    max_bytes=cfg.max_bytes, on_result=take, auth=auth,
                )  # fmt: skip
        batch, tally = TelemetryBatch.empty(), Tally()
        if slots:
            try:
                batch, tally = self.table.convert(
                    np.concatenate(slots), np.concatenate(values), np.concatenate(stamps), now
                )
            except Exception as exc:
                # The source boundary again: one numpy pass converts every endpoint's samples, so a
                # failure here loses this poll, but it must not raise out of collect() and stop
                # the engine's loop for every source.
                notices.append(
                    SourceNotice(
                        self.name,
                        f"{len(slots)} endpoint(s)",
                        bug_text("converting the poll, its samples dropped", exc),
                    )
                )
        report.tally = tally
        unknown.update(tally.unknown)
        notices.extend(tally.notices(self.name, f"{len(slots)} endpoint(s)"))
        report.seconds = time.perf_counter() - t0
        self.last = report
        return Collected(batch, tuple(notices), dict(unknown))
