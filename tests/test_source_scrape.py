"""The dcgm scrape source against real loopback HTTP servers serving the twin's exporter text:
healthy ones, one that hangs, one that serves garbage, one too big, one that is gone."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from seamguard.model.catalog import signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources import scrape
from seamguard.telemetry.sources.base import Source
from seamguard.telemetry.sources.dcgm_config import DcgmSourceConfig
from seamguard.telemetry.sources.openmetrics import Parsed, SeriesCache
from seamguard.telemetry.sources.scrape import DcgmScrapeSource
from seamguard.telemetry.store import TelemetryStore
from seamguard.twin.exporter import DcgmRenderer, MetricsServer, start_exporter
from tests.test_twin_exporter import latest, rendered_signals, twin_batches


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def garbage(text: str) -> str:
    """Every line of the exporter's text cut in half: the shape of a truncated, mangled body."""
    return "\n".join(ln[: len(ln) // 2] for ln in text.splitlines() if ln) + "\n"


@pytest.fixture
def fleet() -> Iterator[tuple[Topology, TelemetryBatch, DcgmRenderer, list[MetricsServer]]]:
    topo, batches = twin_batches()
    renderer = DcgmRenderer(topo)
    servers = [
        start_exporter(renderer.render(batches[-1], nodes=[n])) for n in range(topo.count(EntityKind.NODE))
    ]
    yield topo, batches[-1], renderer, servers
    for s in servers:
        s.stop()


def node_ids(batch: TelemetryBatch, topo: Topology) -> set[str]:
    return {topo.ids[e].split("/")[1] for e in np.unique(batch.entity).tolist()}


def test_one_exporter_per_node_all_healthy(fleet) -> None:  # type: ignore[no-untyped-def]
    topo, batch, _, servers = fleet
    source: Source = DcgmScrapeSource(DcgmSourceConfig(endpoints=tuple(s.url for s in servers)), topo)
    got = source.collect(now=5000.0)
    assert got.notices == ()
    sigs = rendered_signals()
    assert latest(got.batch, sigs) == latest(batch, sigs)
    assert np.all(got.batch.timestamp == 5000.0)  # no timestamps in the text: the poll's time


def test_hung_garbage_huge_and_gone_targets_only_lose_their_own_series(fleet) -> None:  # type: ignore[no-untyped-def]
    topo, batch, renderer, servers = fleet
    hung, bad, huge = servers[1], servers[2], servers[3]
    hung.publish(renderer.render(batch, nodes=[1]), delay_s=30)
    bad.publish(garbage(renderer.render(batch, nodes=[2])))
    huge.publish(renderer.render(batch) * 3)  # the whole fleet, three times: past the cap
    gone = f"http://127.0.0.1:{free_port()}/metrics"
    cap = 3 * len(renderer.render(batch, nodes=[0]).encode())
    cfg = DcgmSourceConfig(endpoints=(*(s.url for s in servers), gone), timeout_s=1.0, max_bytes=cap)
    source = DcgmScrapeSource(cfg, topo)
    got = source.collect(now=5000.0)
    by_where = {
        n.where.rsplit(":", 1)[0] if n.where.count(":") > 2 else n.where: n.message for n in got.notices
    }
    assert "within 1 s" in by_where[hung.url]
    assert "malformed" in by_where[bad.url] and "refused" in by_where[bad.url]
    assert f"cap of {cap}" in by_where[huge.url] or "max_bytes" in by_where[huge.url]
    assert "ConnectError" in by_where[gone]
    assert source.last.failed == 4 and source.last.targets == 5
    # the healthy exporter's series all arrive, the others contribute nothing (never zeros)
    assert node_ids(got.batch, topo) == {"n0000"}
    sigs = rendered_signals()
    want = {k: v for k, v in latest(batch, sigs).items() if topo.ids[k[0]].startswith("gpu/n0000/")}
    assert latest(got.batch, sigs) == want


def test_a_silent_target_goes_stale_in_the_store_not_zero(fleet) -> None:  # type: ignore[no-untyped-def]
    topo, batch, renderer, servers = fleet
    source = DcgmScrapeSource(
        DcgmSourceConfig(endpoints=tuple(s.url for s in servers[:2]), timeout_s=1.0), topo
    )
    store = TelemetryStore(topo, signal_catalog(), stale_after_s=15.0)
    store.ingest(0.0, source.collect(0.0).batch)
    servers[1].publish(renderer.render(batch, nodes=[1]), delay_s=30)
    g1 = topo.local[topo.lookup("gpu/n0001/0")]
    g0 = topo.local[topo.lookup("gpu/n0000/0")]
    for now in (10.0, 20.0):
        got = source.collect(now)
        assert [n.where for n in got.notices] == [servers[1].url]
        store.ingest(now, got.batch)
    temp = store.current("gpu.temp_c")
    assert np.isnan(temp[g1]) and np.isfinite(temp[g0])


def test_a_few_bad_lines_are_skipped_and_named(fleet) -> None:  # type: ignore[no-untyped-def]
    topo, batch, renderer, servers = fleet
    lines = renderer.render(batch, nodes=[0]).splitlines()
    lines[5] = lines[5].rsplit(" ", 1)[0] + " not-a-number"
    servers[0].publish("\n".join(lines) + "\n")
    source = DcgmScrapeSource(DcgmSourceConfig(endpoints=(servers[0].url,)), topo)
    got = source.collect(1.0)
    assert len(got.notices) == 1
    assert (
        got.notices[0].where == f"{servers[0].url}:6"
        and "'not-a-number' is not a number" in got.notices[0].message
    )
    assert len(np.unique(got.batch.entity)) == 8  # the rest of the node's GPUs still arrive


def test_a_body_cut_mid_value_delivers_no_cut_value(fleet) -> None:  # type: ignore[no-untyped-def]
    """The transfer stops inside a temperature (65.6 arriving as 6): that line is dropped and
    named, every complete line before it arrives."""
    topo, batch, renderer, servers = fleet
    lines = renderer.render(batch, nodes=[0]).split("\n")
    k = max(i for i, ln in enumerate(lines) if ln.startswith("DCGM_FI_DEV_GPU_TEMP{"))
    key, value = lines[k].rsplit(" ", 1)
    servers[0].publish("\n".join(lines[:k]) + f"\n{key} {value[:1]}")
    source = DcgmScrapeSource(DcgmSourceConfig(endpoints=(servers[0].url,)), topo)
    got = source.collect(1.0)
    [notice] = got.notices
    assert notice.where == f"{servers[0].url}:{k + 1}" and "the scrape was cut off" in notice.message
    temp = signal_catalog()["gpu.temp_c"].index
    want = {k: v for k, v in latest(batch, [temp]).items() if topo.ids[k[0]].startswith("gpu/n0000/")}
    arrived = latest(got.batch, [temp])
    assert len(arrived) == len(want) - 1 and all(want[k] == v for k, v in arrived.items())


def test_an_absurd_timestamp_is_one_bad_line_not_a_lost_poll(fleet) -> None:  # type: ignore[no-untyped-def]
    """A 303-digit millisecond timestamp (1e299 s) passes the grammar and float(); it once raised
    OverflowError out of collect(), and every endpoint's samples were lost with it."""
    topo, batch, renderer, servers = fleet
    lines = renderer.render(batch, nodes=[1]).split("\n")
    k = next(i for i, ln in enumerate(lines) if ln.startswith("DCGM_FI_DEV_GPU_TEMP{"))
    lines[k] += " " + "9" * 303
    servers[1].publish("\n".join(lines))
    source = DcgmScrapeSource(DcgmSourceConfig(endpoints=tuple(s.url for s in servers)), topo)
    got = source.collect(5000.0)
    [notice] = got.notices
    assert notice.where == f"{servers[1].url}:{k + 1}" and "past year 5138" in notice.message
    assert len(node_ids(got.batch, topo)) == len(servers)  # every endpoint's samples arrive
    temp = signal_catalog()["gpu.temp_c"].index
    assert len(latest(got.batch, [temp])) == len(latest(batch, [temp])) - 1  # only that line is lost


def test_a_parser_bug_costs_only_its_own_endpoint(fleet, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The last line of defence: whatever the parser raises for one body is that endpoint's
    notice; the other endpoints' samples still arrive and collect() does not raise."""
    topo, _, _, servers = fleet
    real = scrape.parse

    def buggy(text: str, cache: SeriesCache, *, where: str, **kw: Any) -> Parsed:
        if where == servers[2].url:
            raise RuntimeError("a bug")
        return real(text, cache, where=where, **kw)

    monkeypatch.setattr(scrape, "parse", buggy)
    source = DcgmScrapeSource(DcgmSourceConfig(endpoints=tuple(s.url for s in servers)), topo)
    got = source.collect(5000.0)
    [notice] = got.notices
    assert notice.where == servers[2].url
    assert (
        notice.message.startswith("RuntimeError: a bug while parsing the body") and "report" in notice.message
    )
    assert source.last.failed == 1
    assert len(node_ids(got.batch, topo)) == len(servers) - 1


def test_a_conversion_bug_is_a_notice_and_an_empty_poll(fleet, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    topo, _, _, servers = fleet
    source = DcgmScrapeSource(DcgmSourceConfig(endpoints=tuple(s.url for s in servers)), topo)

    def buggy(*args: object) -> None:
        raise IndexError("a bug")

    monkeypatch.setattr(source.table, "convert", buggy)
    got = source.collect(5000.0)
    assert len(got.batch) == 0
    [notice] = got.notices
    assert notice.where == f"{len(servers)} endpoint(s)"
    assert notice.message.startswith("IndexError: a bug while converting the poll")


def test_a_tls_alert_met_while_reading_the_answer_is_a_failed_fetch() -> None:
    """Under TLS 1.3 a server that requires a client certificate refuses it after the handshake;
    the client meets the alert while reading, as an ``ssl.SSLError`` httpcore does not wrap."""
    import asyncio
    import ssl

    import httpx

    def refuse(request: httpx.Request) -> httpx.Response:
        raise ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required")

    async def fetch() -> scrape.Fetched:
        async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
            return await scrape._fetch_one(client, "https://exporter:9400/metrics", 5.0, 1 << 20)

    got = asyncio.run(fetch())
    assert got.body is None and got.error is not None and got.error.startswith("TLS: ")
    assert "certificate required" in got.error
