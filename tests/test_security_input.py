"""Issue 15's attacks on pushed input, replayed over real HTTP (uvicorn on loopback port 0):
stamps outside the daemon's clock window, values of the wrong type, non-measurements dropped in
silence, unknown names that grew the journal, one client starving the queue, and a body a
browser could send cross-origin. Each rule is also probed at its edge."""

from __future__ import annotations

import gzip
import json
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI, Request, Response

from seamguard.daemon import Daemon
from seamguard.journal.sqlite import SqliteJournal
from seamguard.model.entities import EntityKind
from seamguard.model.states import State
from seamguard.model.topology import Topology, build_topology
from seamguard.service.server import RunningServer, serve_in_thread
from seamguard.site_config import daemon_config_from_mapping
from seamguard.telemetry.replay import read_telemetry
from seamguard.telemetry.sources.build import build_sources
from seamguard.telemetry.sources.push import MAX_LISTED_UNKNOWN, MAX_NAME_CHARS, MAX_PARSING, PushSource
from seamguard.telemetry.sources.push_checks import TimeWindow
from seamguard.telemetry.sources.push_limits import RateLimit, RowBuckets
from seamguard.telemetry.sources.push_payload import CHUNK_ROWS, MAX_ERRORS
from seamguard.telemetry.sources.unknown_names import unknown_names_notice
from tests.conftest import small_inventory, small_jobs

NOW = 1_780_000_000.0  # the daemon's pinned clock (2026-05-28)
GPU = "gpu/n01/2"
OK_ROW = {"entity": GPU, "signal": "gpu.temp_c", "timestamp": NOW - 1.0, "value": 60.0}
SENTINEL = 0x7FF0000000000000  # a DCGM blank as exporters print it: an integer near 2^63


def cols(*rows: dict[str, Any]) -> dict[str, list[Any]]:
    return {k: [r[k] for r in rows] for k in ("entity", "signal", "timestamp", "value")}


@pytest.fixture
def topo() -> Topology:
    return build_topology(small_inventory(), small_jobs())


def principal_from_header(app: FastAPI) -> None:
    """Stands in for the auth middleware (another part of issue 15): it sets request.state.principal."""

    @app.middleware("http")
    async def who(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if "x-principal" in request.headers:
            request.state.principal = request.headers["x-principal"]
        return await call_next(request)


@pytest.fixture
def serve() -> Iterator[Callable[[PushSource], RunningServer]]:
    servers: list[RunningServer] = []

    def start(src: PushSource) -> RunningServer:
        app = FastAPI()
        principal_from_header(app)
        app.include_router(src.router())
        servers.append(serve_in_thread(app))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def push(server: RunningServer, body: Any, *, who: str | None = None, **headers: str) -> httpx.Response:
    hdrs = {"content-type": "application/json", **headers}
    if who is not None:
        hdrs["x-principal"] = who
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{server.url}/v1/push", content=content, headers=hdrs, trust_env=False, timeout=30)


def pinned(topo: Topology, **kw: Any) -> PushSource:
    return PushSource(topo, clock=lambda: NOW, **kw)


# ---- 1. stamps inside a window around the daemon's clock ------------------------------------------


@pytest.mark.parametrize(
    ("stamp", "relative"),
    [
        (NOW + 86_400, "86,400 s ahead of"),  # a day ahead: a silent GPU would look fresh all day
        (1e18, "(no calendar date) is 999,999,998,220,000,000 s ahead of"),
        (-1e12, "behind"),
        (1_000_000_000.0, "(2001-09-09 01:46:40Z) is 780,000,000 s behind"),  # an XID then fails a GPU now
        (NOW + 301, "301 s ahead of"),  # just past max_future_s (300)
        (NOW - 3601, "3,601 s behind"),  # just past max_age_s (3600)
    ],
)
def test_stamps_outside_the_window_refuse_the_batch_naming_the_rows(
    topo: Topology, serve: Callable[[PushSource], RunningServer], stamp: float, relative: str
) -> None:
    src = pinned(topo)
    server = serve(src)
    r = push(server, cols(OK_ROW, {**OK_ROW, "timestamp": stamp}))
    assert r.status_code == 422, r.text
    [err] = r.json()["detail"]
    assert err["field"] == "timestamp[1]" and err["loc"] == ["timestamp", 1]
    assert relative in err["msg"] and f"timestamp {stamp:g}" in err["msg"]
    assert "accepted from 2026-05-28 19:26:40Z to 2026-05-28 20:31:40Z" in err["msg"]  # absolute
    assert "minus 3600 s, plus 300 s" in err["msg"]  # and relative
    assert src.queued_rows == 0  # refused whole: the good row is not kept either
    assert [str(n) for n in src.collect(NOW).notices] == [
        "push POST /v1/push: payloads refused since the last tick: 422 invalid fields"
    ]


def test_the_window_edges_are_accepted(topo: Topology, serve: Callable[[PushSource], RunningServer]) -> None:
    src = pinned(topo)
    server = serve(src)
    edges = cols({**OK_ROW, "timestamp": NOW + 300}, {**OK_ROW, "timestamp": NOW - 3600})
    assert push(server, edges).status_code == 202
    assert src.collect(NOW).batch.timestamp.tolist() == [NOW + 300, NOW - 3600]


def test_window_refusals_name_rows_lines_and_count_the_rest(
    topo: Topology, serve: Callable[[PushSource], RunningServer]
) -> None:
    server = serve(pinned(topo, window=TimeWindow(max_future_s=10, max_age_s=60)))
    rows = [{**OK_ROW, "timestamp": NOW + 11 + i} for i in range(MAX_ERRORS + 5)]
    r = push(server, {"rows": [OK_ROW, *rows]})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert [d["field"] for d in detail[:2]] == ["rows[1].timestamp", "rows[2].timestamp"]
    assert len(detail) == MAX_ERRORS + 1
    assert detail[-1]["msg"].startswith("... and 5 more rows outside the window; 15 of 16 in all")
    ndjson = "\n".join(json.dumps(x) for x in (OK_ROW, OK_ROW, {**OK_ROW, "timestamp": NOW - 61}))
    r = push(server, ("\n" + ndjson).encode(), **{"content-type": "application/x-ndjson"})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "line 4: timestamp"
    assert "61 s behind" in r.json()["detail"][0]["msg"]


def test_the_daemon_checks_stamps_against_its_own_clock(topo: Topology, tmp_path: Path) -> None:
    """An XID stamped in 2001 and a heartbeat a day ahead never reach the engine; a GPU that then
    says nothing goes unknown, not healthy, and no GPU is failed."""
    config = daemon_config_from_mapping(
        {"engine": {"tick_s": 10, "stale_after_s": 30}, "sources": {"push": {}}}
    )
    clock = {"now": NOW}
    daemon = Daemon(config, topo, build_sources(config.site.sources, topo, lambda: clock["now"]))
    assert daemon.push is not None
    app = FastAPI()
    app.include_router(daemon.push.router())
    server = serve_in_thread(app)
    try:
        gpus = [f"gpu/{n}" for n in topo.names[EntityKind.GPU]]
        fresh = cols(*({**OK_ROW, "entity": g, "timestamp": NOW - 1} for g in gpus))
        assert push(server, fresh).status_code == 202
        daemon.step(NOW)
        xid_2001 = {"entity": GPU, "signal": "gpu.xid", "timestamp": 1_000_000_000.0, "value": 79}
        ahead = {**OK_ROW, "timestamp": NOW + 86_400}
        assert push(server, cols(xid_2001)).status_code == 422
        assert push(server, cols(ahead)).status_code == 422
        for k in range(1, 7):
            clock["now"] = NOW + 10 * k
            daemon.step(clock["now"])
    finally:
        server.stop()
    states = daemon.controller.states
    assert states[topo.index[GPU]] == State.UNKNOWN  # stale, as a silent GPU should be
    assert not np.any(states == State.FAILED)


# ---- 2. strict types; non-measurements counted, never dropped in silence ---------------------------


@pytest.mark.parametrize(
    ("sent", "shown"), [("95", "'95'"), (True, "True"), ({}, "{}"), ([1], "[1]")]
)  # fmt: skip
def test_a_value_that_is_not_a_json_number_refuses_the_batch(
    topo: Topology, serve: Callable[[PushSource], RunningServer], sent: Any, shown: str
) -> None:
    src = pinned(topo)
    server = serve(src)
    bad = {**OK_ROW, "value": sent}
    forms = [
        ({}, cols(OK_ROW, bad), "value[1]"),
        ({}, {"rows": [OK_ROW, bad]}, "rows[1].value"),
        (
            {"content-type": "application/x-ndjson"},
            f"{json.dumps(OK_ROW)}\n{json.dumps(bad)}\n".encode(),
            "line 2: value",
        ),
    ]
    for headers, body, where in forms:
        r = push(server, body, **headers)
        assert r.status_code == 422, (where, r.text)
        err = r.json()["detail"][0]
        assert err["field"] == where
        assert f"a JSON number or null is required, got {shown}" in err["msg"]
    assert src.queued_rows == 0


def raw(timestamp: str, value: str, signal: str = "gpu.temp_c") -> bytes:
    """JSON columns with the stamps and values written as literal JSON (1e999 and 2^63 as sent)."""
    n = timestamp.count(",") + 1
    names = json.dumps({"entity": [GPU] * n, "signal": [signal] * n})[:-1]
    return f'{names}, "timestamp": {timestamp}, "value": {value}}}'.encode()


@pytest.mark.parametrize("sent", ['"1780000000"', "true", "null", "1e999", "{}"])
def test_a_timestamp_that_is_not_a_finite_json_number_refuses_the_batch(
    topo: Topology, serve: Callable[[PushSource], RunningServer], sent: str
) -> None:
    server = serve(pinned(topo))
    r = push(server, raw(f"[{NOW}, {sent}]", "[60, 61]"))
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["field"] == "timestamp[1]"


def test_non_finite_sentinel_and_out_of_range_values_are_counted(
    topo: Topology, serve: Callable[[PushSource], RunningServer]
) -> None:
    """1e999 parses to inf; 2^63 and a DCGM blank are sentinels; 151 °C is past gpu.temp_c's range.
    They are queued as sent (the engine reads them as missing, and an out-of-range one blanks
    the reading) and counted in the response and once in the notices while they come."""
    src = pinned(topo)
    server = serve(src)
    values = f"[60.0, 1e999, -1e999, 9223372036854775808, {SENTINEL}, 151, null]"
    r = push(server, raw("[" + ", ".join([str(NOW)] * 7) + "]", values))
    assert r.status_code == 202, r.text
    got = r.json()
    assert (got["rows"], got["accepted"]) == (7, 7)
    assert (got["non_finite"], got["implausible"], got["missing_values"]) == (2, 3, 1)
    collected = src.collect(NOW)
    assert [n.message for n in collected.notices] == [
        "values past the float range (1e999 and the like) queued as missing data",
        "values outside their signal's physical range or DCGM blank sentinels (near 2^63) queued as missing data",
    ]
    assert np.isinf(collected.batch.value).sum() == 2  # queued as sent
    edge = push(server, raw(f"[{NOW}, {NOW}]", "[150, -20]"))  # gpu.temp_c's range is [-20, 150]
    assert edge.json()["implausible"] == 0
    counter = push(server, raw(f"[{NOW}]", "[1e15]", "gpu.ecc_sbe_total"))  # a counter has no range
    assert counter.json()["implausible"] == 0
    assert src.collect(NOW).notices == ()  # a clean tick: the notices clear
    blank = push(server, raw(f"[{NOW}, {NOW}]", f"[{2**62}, {SENTINEL}]", "gpu.ecc_sbe_total"))
    assert blank.json()["implausible"] == 2  # a sentinel even where no range would catch it
    assert src.totals["non_finite"] == 2 and src.totals["implausible"] == 5


def test_replay_counts_infinite_values(topo: Topology, tmp_path: Path) -> None:
    """``seamguard score`` prints the replay's summary lines: infinite values are counted there."""
    path = tmp_path / "tel.csv"
    lines = [
        f"{NOW + i},{GPU},gpu.temp_c,{v}" for i, v in enumerate(["60", "inf", "-inf", "1e999", "", "61"])
    ]
    path.write_text("timestamp,entity,signal,value\n" + "\n".join(lines) + "\n", encoding="utf-8")
    from seamguard.model.catalog import signal_catalog

    with read_telemetry([path], topo, signal_catalog(), tick_s=30) as replay:
        for _ in replay:
            pass
        report = replay.report
    assert report.rows_used == 6 and report.non_finite == 3 and report.missing_values == 1
    assert "3 infinite values (inf, -inf, 1e999) read as missing data" in report.summary_lines()


# ---- 3. unknown names: bounded responses, one journal row while the problem lasts --------------------


def bogus(k: int, n: int = 100_000, length: int = 0) -> bytes:
    """A gzip body of ``n`` rows, each naming an entity nobody has (``length``: pad the names)."""
    pad = "x" * length
    ents = [f"gpu/bogus{k}-{i}{pad}" for i in range(n)]
    body = {"entity": ents, "signal": ["gpu.temp_c"] * n, "timestamp": [NOW] * n, "value": [1.0] * n}
    return gzip.compress(json.dumps(body).encode())


def test_a_payload_of_100000_bogus_names_gets_a_bounded_response(
    topo: Topology, serve: Callable[[PushSource], RunningServer]
) -> None:
    src = pinned(topo)
    server = serve(src)
    r = push(server, bogus(0), **{"content-encoding": "gzip"})
    assert r.status_code == 202, r.text
    got = r.json()
    assert len(got["unknown_entities"]) == MAX_LISTED_UNKNOWN
    assert got["unknown_rows"] == 100_000 and got["accepted"] == 0
    assert got["unknown_names_not_listed"] == 100_000 - MAX_LISTED_UNKNOWN
    assert len(r.content) < 4_000
    long = push(server, bogus(1, n=3, length=1_000_000), **{"content-encoding": "gzip"}).json()
    assert all(len(name) == MAX_NAME_CHARS and name.endswith("...") for name in long["unknown_entities"])
    collected = src.collect(NOW)
    assert len(collected.unknown) == 1000  # the tally stops at MAX_UNKNOWN_KEYS names
    assert [n.message for n in collected.notices] == [
        "more than 1,000 distinct unknown names since the last tick; the rest are counted, not named"
    ]


def journal_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def test_ten_floods_of_bogus_names_leave_the_journal_nearly_unchanged(topo: Topology, tmp_path: Path) -> None:
    """The issue's replay: unknown names journaled in full twice a tick grew a journal by 23 MB.
    Now the notice is one stable text: one warning when it appears, one line when it clears."""
    config = daemon_config_from_mapping(
        {"engine": {"tick_s": 10}, "sources": {"push": {"burst_rows": 4_000_000}}}
    )
    path = tmp_path / "journal.sqlite"
    with SqliteJournal(path) as journal:
        daemon = Daemon(config, topo, build_sources(config.site.sources, topo, lambda: NOW), journal=journal)
        assert daemon.push is not None
        app = FastAPI()
        app.include_router(daemon.push.router())
        server = serve_in_thread(app)
        try:
            daemon.step(NOW - 10)
            before = journal_bytes(path)
            for k in range(10):
                length = 100_000 if k % 2 else 0  # every other flood: fewer, megabyte-long names
                body = bogus(k, n=100_000 if not length else 10, length=length)
                r = push(server, body, **{"content-encoding": "gzip"})
                assert r.status_code == 202, r.text
                if k % 2:
                    daemon.step(NOW + k)
            daemon.step(NOW + 20)  # nothing unknown this tick: the notice clears
        finally:
            server.stop()
        grown = journal_bytes(path) - before
        mapping = [n for n in journal.notices() if n.source == "push" and "not known" in n.message]
    assert grown < 64 * 1024, grown
    assert [n.level for n in mapping] == ["warning", "info"], [n.message for n in mapping]
    assert mapping[0].message.startswith(
        "mapping: 1,000 or more distinct names not known to the engine, e.g. "
    )
    assert len(mapping[0].message) < 400


def test_the_unknown_names_notice_keeps_its_text_while_the_problem_lasts() -> None:
    few = unknown_names_notice("push", {"rack/r99": 3, "cdu.flux": 1}, [])
    assert few.message == "names not known to the engine: cdu.flux, rack/r99"  # all, no counts
    again = unknown_names_notice("push", {"rack/r99": 7, "cdu.flux": 2}, [])
    assert again == few  # other counts, the same text
    six = {f"gpu/x{i}": i + 1 for i in range(6)}
    first = unknown_names_notice("push", six, [])
    assert first.message == "more than 5 distinct names not known to the engine, e.g. gpu/x5, gpu/x4, gpu/x3"
    active = [(first.source, first.where, first.message)]
    other = {f"gpu/y{i}": 1 for i in range(9)}  # other names, the same size of problem
    assert unknown_names_notice("push", other, active) == first
    bigger = unknown_names_notice("push", {f"gpu/y{i}": 1 for i in range(11)}, active)
    assert bigger.message.startswith("more than 10 distinct")  # a bigger problem is news
    assert unknown_names_notice("dcgm", other, active).message.endswith("gpu/y0, gpu/y1, gpu/y2")
    long = unknown_names_notice("dcgm", {"x" * 10_000: 1}, [])
    assert long.message == "names not known to the engine: " + "x" * 77 + "..."  # any source's names


# ---- 4. one client cannot starve the others --------------------------------------------------------


def rows_of(n: int) -> dict[str, list[Any]]:
    return cols(*([OK_ROW] * n))


def test_a_flooding_principal_gets_429_and_another_is_still_accepted(
    topo: Topology, serve: Callable[[PushSource], RunningServer]
) -> None:
    """The issue's replay: nine large pushes filled the whole queue and everyone got 503."""
    t = {"now": 0.0}
    src = pinned(topo, rate_limit=RateLimit(rows_per_s=100, burst_rows=1000), rate_clock=lambda: t["now"])
    server = serve(src)
    assert push(server, rows_of(1000), who="flood").status_code == 202  # the whole burst at once
    r = push(server, rows_of(100), who="flood")
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == "1"  # 100 rows at 100 rows/s
    assert "principal flood is over its rate of 100 rows/s (burst 1,000)" in r.json()["detail"]
    assert push(server, rows_of(10), who="honest").status_code == 202  # its own bucket
    r = push(server, b"{not json", who="flood")  # an empty bucket: refused before the body is parsed
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    t["now"] = 0.5  # half the wait: 50 rows back, not 100
    r = push(server, rows_of(100), who="flood")  # parsed, refused, and billed all the same
    assert r.status_code == 429 and r.headers["retry-after"] == "2"  # 50 - 100 = -50: 150 rows short
    assert push(server, rows_of(50), who="flood").status_code == 429  # in debt: refused unread
    t["now"] = 2.0
    assert push(server, rows_of(100), who="flood").status_code == 202
    t["now"] = 100.0  # idle long enough: a full bucket again, never more
    assert push(server, rows_of(1000), who="flood").status_code == 202
    assert push(server, rows_of(1), who="flood").status_code == 429
    r = push(server, rows_of(1001), who="someone")
    assert r.status_code == 413 and "exceeds the burst of 1,000 rows" in r.json()["detail"]
    notices = [str(n) for n in src.collect(NOW).notices]
    assert "push POST /v1/push: payloads refused since the last tick: 429 rate limited" in notices
    assert src.totals["429 rate limited"] == 5


def test_a_principal_may_hold_only_its_share_of_the_queue(
    topo: Topology, serve: Callable[[PushSource], RunningServer]
) -> None:
    src = pinned(topo, capacity_rows=1000, max_queue_share=0.4)  # 400 rows each
    server = serve(src)
    assert push(server, rows_of(300), who="flood").status_code == 202
    assert push(server, rows_of(100), who="flood").status_code == 202  # exactly its share
    r = push(server, rows_of(1), who="flood")
    assert r.status_code == 429 and r.headers["retry-after"] == "30"  # after the next tick
    assert "holds 400 of the 400 queued rows one client may hold" in r.json()["detail"]
    assert push(server, rows_of(400), who="other").status_code == 202
    assert push(server, rows_of(200), who="third").status_code == 202
    r = push(server, rows_of(1), who="fourth")
    assert r.status_code == 503  # now the queue itself is full
    r = push(server, rows_of(401), who="fifth")
    assert r.status_code == 413 and "exceeds the 400 queued rows one client may hold" in r.json()["detail"]
    assert len(src.collect(NOW).batch) == 1000
    assert push(server, rows_of(400), who="flood").status_code == 202  # drained: its share again


def test_without_a_principal_the_client_address_is_limited(
    topo: Topology, serve: Callable[[PushSource], RunningServer]
) -> None:
    src = pinned(topo, rate_limit=RateLimit(rows_per_s=1, burst_rows=5), rate_clock=lambda: 0.0)
    server = serve(src)
    assert push(server, rows_of(5)).status_code == 202
    r = push(server, rows_of(1))
    assert r.status_code == 429 and "address 127.0.0.1 is over its rate" in r.json()["detail"]
    assert push(server, rows_of(1), who="ops").status_code == 202  # an authenticated principal: its own


def test_row_buckets_stay_bounded_and_refusals_cost_nothing() -> None:
    buckets = RowBuckets(RateLimit(rows_per_s=10, burst_rows=100), max_principals=3)
    for k in range(5):
        assert buckets.take(f"p{k}", 60, now=0.0) == 0.0
    assert len(buckets) == 3  # the least recently seen went first
    assert buckets.take("p4", 50, now=0.0) == pytest.approx(1.0)  # 40 left: 10 short at 10/s
    assert buckets.take("p4", 40, now=0.0) == 0.0  # the refusal took nothing
    assert buckets.take("p4", 1, now=-50.0) == pytest.approx(0.1)  # a clock stepping back refills nothing
    buckets.take("p9", 1, now=10.0)  # p3 and p4 idle 10 s: full again, forgotten
    assert len(buckets) == 1
    assert buckets.take("p9", 99, now=9.9999) == 0.0  # an earlier stamp than p9's own: no refill, no error
    capped = RowBuckets(RateLimit(rows_per_s=10, burst_rows=100))
    assert capped.take("a", 10, now=0.0) == 0.0  # 90 left; 5 s later 140 would be past the burst
    assert capped.take("a", 100, now=5.0) == 0.0
    assert capped.take("a", 1, now=5.0) == pytest.approx(0.1)  # a full bucket, never more
    with pytest.raises(ValueError, match="burst_rows must be at least 1"):
        RateLimit(rows_per_s=1, burst_rows=0)
    with pytest.raises(ValueError, match="rate_limit_rows_per_s must be a positive number"):
        RateLimit(rows_per_s=math.inf, burst_rows=1)


# ---- 5. JSON or NDJSON only ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None]
)
def test_a_body_a_browser_could_send_cross_origin_is_415(
    topo: Topology, serve: Callable[[PushSource], RunningServer], ctype: str | None
) -> None:
    src = pinned(topo)
    server = serve(src)
    headers = {"content-type": ctype} if ctype is not None else {}
    r = httpx.post(
        f"{server.url}/v1/push", content=json.dumps(cols(OK_ROW)).encode(), headers=headers, trust_env=False
    )
    assert r.status_code == 415, r.text
    assert "send application/json or application/x-ndjson" in r.json()["detail"]
    assert src.queued_rows == 0
    assert (
        push(server, cols(OK_ROW), **{"content-type": "application/json; charset=utf-8"}).status_code == 202
    )


# ---- the configuration reaches the source ---------------------------------------------------------


def test_the_push_section_configures_window_limits_and_share(topo: Topology) -> None:
    defaults = daemon_config_from_mapping({"sources": {"push": {}}}).site.sources.push
    assert defaults is not None
    documented = (defaults.max_future_s, defaults.max_age_s, defaults.rate_limit_rows_per_s,
                  defaults.burst_rows, defaults.max_queue_share)  # fmt: skip
    assert documented == (300, 3600, 100_000, 1_000_000, 0.5)  # as docs/facilities.md sizes them
    push = {"max_future_s": 10, "max_age_s": 20, "rate_limit_rows_per_s": 5, "burst_rows": 7,
            "max_queue_share": 0.25, "capacity_rows": 100}  # fmt: skip
    config = daemon_config_from_mapping({"sources": {"push": push}})
    [src] = build_sources(config.site.sources, topo, lambda: NOW)
    assert isinstance(src, PushSource)
    assert src.window == TimeWindow(10, 20) and src.clock() == NOW
    assert src.buckets.limit == RateLimit(5, 7) and src.share_rows == 25


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("max_queue_share", 1.5, "sources.push.max_queue_share: Input should be less than or equal to 1"),
        ("max_queue_share", 0, "sources.push.max_queue_share: Input should be greater than 0"),
        ("max_age_s", 0, "sources.push.max_age_s: Input should be greater than 0"),
        ("burst_rows", 0, "sources.push.burst_rows: Input should be greater than or equal to 1"),
        ("rate_limit_rows_per_s", "fast", "sources.push.rate_limit_rows_per_s: Input should be a valid number"),
    ],
)  # fmt: skip
def test_a_bad_push_setting_is_named(key: str, value: Any, expected: str) -> None:
    from seamguard.errors import InputError

    with pytest.raises((InputError, ValueError)) as err:
        daemon_config_from_mapping({"sources": {"push": {key: value}}})
    assert expected in str(err.value)


def test_a_second_gzip_member_is_refused_not_dropped_in_silence(
    topo: Topology, serve: Callable[[PushSource], RunningServer]
) -> None:
    """gzip(rows) + gzip(more rows): only the first member was read and the rest dropped unsaid."""
    src = pinned(topo)
    server = serve(src)
    two = gzip.compress(json.dumps(rows_of(2)).encode()) + gzip.compress(json.dumps(rows_of(3)).encode())
    r = push(server, two, **{"content-encoding": "gzip"})
    assert r.status_code == 400 and "follow the end of the gzip stream" in r.json()["detail"], r.text
    assert src.queued_rows == 0
    assert (
        push(
            server, gzip.compress(json.dumps(rows_of(2)).encode()), **{"content-encoding": "gzip"}
        ).status_code
        == 202
    )


def test_an_integer_past_the_float_range_is_refused_saying_so(
    topo: Topology, serve: Callable[[PushSource], RunningServer]
) -> None:
    """It was refused as if it were no number ("a JSON number or null is required, got 1000...")."""
    server = serve(pinned(topo))
    body = b'{"entity": ["gpu/n01/0"], "signal": ["gpu.temp_c"], "timestamp": [%d], "value": [1%s]}' % (
        int(NOW),
        b"0" * 400,
    )
    r = push(server, body)
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "value[0]"
    assert "an integer of 401 digits is past the float range" in r.json()["detail"][0]["msg"]


def test_a_body_of_empty_rows_is_validated_a_chunk_at_a_time(
    topo: Topology, serve: Callable[[PushSource], RunningServer]
) -> None:
    """900,000 rows of ``{}`` within the burst: pydantic listed all 3.6 million errors (5.6 million
    rows of a 16 MiB body: 22 million, 10 GB and 30 s). Validation now stops at the first chunk."""
    server = serve(pinned(topo))
    for form, body in (
        ("ndjson", b"{}\n" * 900_000),
        ("rows", b'{"rows": [' + b"{}," * 899_999 + b"{}]}"),
        ("columns", b'{"entity": [' + b"1," * 899_999 + b'1], "signal": [], "timestamp": [], "value": []}'),
    ):
        ctype = "application/x-ndjson" if form == "ndjson" else "application/json"
        r = push(server, body, **{"content-type": ctype})
        assert r.status_code == 422, (form, r.text[:300])
        if form != "ndjson":  # the NDJSON check names the first bad line only
            last = r.json()["detail"][-1]["msg"]
            assert f"in rows 0 to {CHUNK_ROWS - 1:,}; the rows after them were not checked" in last, last
            assert int(last.split()[2]) < 4 * CHUNK_ROWS  # the errors of one chunk, not of 900,000 rows


def test_an_ndjson_body_of_more_lines_than_a_burst_is_refused_before_it_is_split(
    topo: Topology, serve: Callable[[PushSource], RunningServer]
) -> None:
    """16 MiB of ``1\\n``: 8 million lines split into 8 million objects (2 GB) before any check."""
    server = serve(pinned(topo, rate_limit=RateLimit(rows_per_s=1000, burst_rows=1000)))
    r = push(server, b"1\n" * 5000, **{"content-type": "application/x-ndjson"})
    assert r.status_code == 413 and "5,000 lines (blank ones included) exceeds the burst" in r.text
    ok = b"".join(json.dumps(OK_ROW).encode() + b"\n" for _ in range(1000))  # exactly a burst, newline-ended
    assert push(server, ok, who="other", **{"content-type": "application/x-ndjson"}).status_code == 202


def test_at_most_max_parsing_payloads_are_parsed_at_once(
    topo: Topology, serve: Callable[[PushSource], RunningServer]
) -> None:
    """Each parse of a 16 MiB body may take hundreds of MB while it runs; forty at once (the
    thread pool) from pushers uploading together multiplied that for no gain under the GIL."""
    import threading
    import time

    running, most = [0], [0]
    lock = threading.Lock()

    class Slow(PushSource):
        def ingest(
            self, body: bytes, content_type: str = "application/json", principal: str = "local"
        ) -> Any:
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.3)
            with lock:
                running[0] -= 1
            return super().ingest(body, content_type, principal)

    server = serve(Slow(topo, clock=lambda: NOW))
    pushers = [
        threading.Thread(target=push, args=(server, rows_of(1)), kwargs={"who": f"p{k}"}) for k in range(6)
    ]
    for p in pushers:
        p.start()
    for p in pushers:
        p.join()
    assert most[0] == MAX_PARSING


def test_bodies_held_at_once_share_one_budget(
    topo: Topology, serve: Callable[[PushSource], RunningServer]
) -> None:
    """Each connection could hold a body of max_body_bytes while it arrived: 256 connections of
    one pusher, 4 GiB. Past the shared budget a push is refused 503; the budget comes back."""
    import socket

    src = pinned(topo, max_inflight_bytes=1000)
    server = serve(src)
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    body = json.dumps(rows_of(7)).encode()
    assert 300 < len(body) < 400
    slow = []
    for k in range(3):  # three bodies, each stopped short of its end: 3 x 300 bytes held
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(
            f"POST /v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nx-principal: slow{k}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:300]
        )
        slow.append(s)
    time.sleep(0.5)
    r = push(server, body, who="honest")
    assert r.status_code == 503 and "already holds 900 bytes of pushed bodies" in r.text, r.text
    assert r.headers["retry-after"] == "1"
    for s in slow:  # the bodies end: parsed, and their bytes given back
        s.sendall(body[300:])
        assert s.recv(100).startswith(b"HTTP/1.1 202")
        s.close()
    assert push(server, body, who="honest").status_code == 202
    big = json.dumps(rows_of(14)).encode()  # 700-odd bytes: fits only if every byte came back
    assert push(server, big, who="honest").status_code == 202
