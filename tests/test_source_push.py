"""The push endpoint through FastAPI's TestClient and a real uvicorn on loopback, drained as a Source."""

from __future__ import annotations

import gzip
import json
import math
import threading
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from seamguard.model.catalog import signal_catalog
from seamguard.model.topology import Topology
from seamguard.service.server import serve_in_thread
from seamguard.telemetry.sources.push import PushSource

CAT = signal_catalog()
NOW = 1000.0  # the pinned clock the sources below check stamps against


def source(topology: Topology, **kw: Any) -> PushSource:
    return PushSource(topology, clock=lambda: NOW, **kw)


COLUMNS: dict[str, list[Any]] = {
    "entity": ["rack/r0", "cdu/c0", "gpu/n00/1", "rack/r1"],
    "signal": ["rack.inlet_temp_c", "cdu.flow_lpm", "gpu.temp_c", "rack.inlet_temp_c"],
    "timestamp": [1000.0, 1000.5, 1001.0, 1002.0],
    "value": [33.5, 447.0, 61.0, None],
}


def rows_of(cols: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = ("entity", "signal", "timestamp", "value")
    return [dict(zip(keys, r, strict=True)) for r in zip(*(cols[k] for k in keys), strict=True)]


def app_for(source: PushSource) -> FastAPI:
    app = FastAPI()
    app.include_router(source.router())
    return app


def drained(source: PushSource, topo: Topology) -> list[tuple[str, str, float, float]]:
    b = source.collect(0.0).batch
    names = CAT.names()
    return [
        (topo.ids[e], names[s], t, v)
        for e, s, t, v in zip(
            b.entity.tolist(), b.signal.tolist(), b.timestamp.tolist(), b.value.tolist(), strict=True
        )
    ]


def same(a: list[tuple[str, str, float, float]], b: list[tuple[str, str, float, float]]) -> bool:
    return len(a) == len(b) and all(
        x[:3] == y[:3] and (x[3] == y[3] or (math.isnan(x[3]) and math.isnan(y[3])))
        for x, y in zip(a, b, strict=True)
    )


def test_good_batch_is_accepted_and_drained_once(topology: Topology) -> None:
    src = source(topology)
    client = TestClient(app_for(src))
    r = client.post("/v1/push", json=COLUMNS)
    assert r.status_code == 202, r.text
    assert r.json() == {
        "accepted": 4,
        "rows": 4,
        "missing_values": 1,
        "non_finite": 0,
        "implausible": 0,
        "unknown_entities": {},
        "unknown_signals": {},
        "unknown_rows": 0,
        "unknown_names_not_listed": 0,
    }
    assert src.queued_rows == 4
    got = drained(src, topology)
    assert [g[:3] for g in got] == [
        ("rack/r0", "rack.inlet_temp_c", 1000.0),
        ("cdu/c0", "cdu.flow_lpm", 1000.5),
        ("gpu/n00/1", "gpu.temp_c", 1001.0),
        ("rack/r1", "rack.inlet_temp_c", 1002.0),
    ]
    assert [g[3] for g in got[:3]] == [33.5, 447.0, 61.0] and math.isnan(got[3][3])  # null: missing data
    assert len(src.collect(1.0).batch) == 0  # drained once


def test_rows_ndjson_and_gzip_give_the_same_batch(topology: Topology) -> None:
    src = source(topology)
    client = TestClient(app_for(src))
    assert client.post("/v1/push", json=COLUMNS).status_code == 202
    want = drained(src, topology)
    ndjson = "\n".join(json.dumps(r) for r in rows_of(COLUMNS)) + "\n\n"
    bodies = [
        ({"content-type": "application/json"}, json.dumps({"rows": rows_of(COLUMNS)}).encode()),
        ({"content-type": "application/x-ndjson"}, ndjson.encode()),
        (
            {"content-type": "application/json", "content-encoding": "gzip"},
            gzip.compress(json.dumps(COLUMNS).encode()),
        ),
        (
            {"content-type": "application/x-ndjson", "content-encoding": "gzip"},
            gzip.compress(ndjson.encode()),
        ),
    ]
    for headers, body in bodies:
        r = client.post("/v1/push", content=body, headers=headers)
        assert r.status_code == 202, (headers, r.text)
        assert same(drained(src, topology), want), headers


def test_unknown_names_are_counted_and_the_rest_kept(topology: Topology) -> None:
    src = source(topology)
    cols = {
        "entity": ["rack/r0", "rack/r99", "rack/r99", "cdu/c0", "cdu/c0"],
        "signal": ["rack.inlet_temp_c", "rack.inlet_temp_c", "rack.inlet_temp_c", "cdu.flux", "cdu.flow_lpm"],
        "timestamp": [1.0, 2.0, 3.0, 4.0, 5.0],
        "value": [30.0, 31.0, 32.0, 1.0, 450.0],
    }
    r = TestClient(app_for(src)).post("/v1/push", json=cols)
    assert r.status_code == 202
    body = r.json()
    assert body["accepted"] == 2 and body["rows"] == 5
    assert body["unknown_entities"] == {"rack/r99": 2}
    assert body["unknown_signals"] == {"cdu.flux": 1}
    got = src.collect(10.0)
    assert got.unknown == {"rack/r99": 2, "cdu.flux": 1}
    assert got.batch.value.tolist() == [30.0, 450.0]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"value": [1.0, 2.0, "abc", 4.0]}, "value[2]"),
        ({"entity": ["rack/r0", 5, "gpu/n00/1", "rack/r1"]}, "entity[1]"),
        ({"timestamp": [None, 1.0, 2.0, 3.0]}, "timestamp[0]"),
        ({"timestamp": [1.0, 2.0, 3.0]}, "timestamp"),
        ({"value": [1.0, 2.0, 3.0, 4.0, 5.0]}, "value"),
        ({"signal": "rack.inlet_temp_c"}, "signal"),
        ({"extra": [1]}, "extra"),
    ],
)
def test_wrong_types_and_lengths_are_422_naming_field_and_index(
    topology: Topology, change: dict[str, Any], field: str
) -> None:
    src = source(topology)
    r = TestClient(app_for(src)).post("/v1/push", json={**COLUMNS, **change})
    assert r.status_code == 422, r.text
    fields = [d["field"] for d in r.json()["detail"]]
    assert field in fields
    assert src.queued_rows == 0  # nothing of a refused batch is kept


def test_bad_rows_name_the_row_or_line(topology: Topology) -> None:
    client = TestClient(app_for(source(topology)))
    rows = rows_of(COLUMNS)
    rows[2]["timestamp"] = "soon"
    r = client.post("/v1/push", json={"rows": rows})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "rows[2].timestamp"
    lines = [json.dumps(x) for x in rows_of(COLUMNS)]
    lines.insert(1, "")  # blank lines are skipped but still counted
    lines[3] = json.dumps({**rows_of(COLUMNS)[2], "value": [1]})
    r = client.post("/v1/push", content="\n".join(lines), headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "line 4: value"
    lines[3] = '{"entity": "rack/r0", '
    r = client.post("/v1/push", content="\n".join(lines), headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 400 and r.json()["detail"].startswith("line 4 is not valid JSON")
    r = client.post("/v1/push", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
    r = client.post("/v1/push", json=[1, 2])
    assert r.status_code == 422


def test_oversize_payloads_are_413(topology: Topology) -> None:
    src = source(topology, max_body_bytes=2000)
    client = TestClient(app_for(src))
    big = {k: v * 40 for k, v in COLUMNS.items()}
    r = client.post("/v1/push", json=big)
    assert r.status_code == 413 and "exceeds the limit of 2,000 bytes" in r.json()["detail"]
    # A small gzip body that inflates past the limit is refused too.
    bomb = gzip.compress(json.dumps({**COLUMNS, "pad": " " * 100_000}).encode())
    assert len(bomb) < 2000
    r = client.post(
        "/v1/push", content=bomb, headers={"content-type": "application/json", "content-encoding": "gzip"}
    )
    assert r.status_code == 413 and "decompressed" in r.json()["detail"]
    r = client.post(
        "/v1/push", content=b"xx", headers={"content-type": "application/json", "content-encoding": "br"}
    )
    assert r.status_code == 415 and "content-encoding 'br'" in r.json()["detail"]
    assert client.post("/v1/push", json=COLUMNS).status_code == 202  # within limits: accepted
    notices = [str(n) for n in src.collect(0.0).notices]
    assert notices == [
        "push POST /v1/push: payloads refused since the last tick: 413 too large",
        "push POST /v1/push: payloads refused since the last tick: 415 unsupported media type or encoding",
    ]  # one stable text per reason, however many (the counts are in source.totals)
    assert src.totals["413 too large"] == 2


def test_full_queue_refuses_whole_batches_with_503_and_never_drops(topology: Topology) -> None:
    src = source(topology, capacity_rows=10, retry_after_s=30, max_queue_share=1.0)
    client = TestClient(app_for(src))
    six = {k: (v + v)[:6] for k, v in COLUMNS.items()}
    assert client.post("/v1/push", json=six).status_code == 202
    r = client.post("/v1/push", json=six)
    assert r.status_code == 503
    assert r.headers["retry-after"] == "30"
    assert "push queue full: 6 of 10 rows" in r.json()["detail"] and "nothing was kept" in r.json()["detail"]
    assert src.queued_rows == 6
    eleven = {k: (v * 3)[:11] for k, v in COLUMNS.items()}
    r = client.post("/v1/push", json=eleven)
    assert r.status_code == 413 and "exceeds the push queue's capacity of 10" in r.json()["detail"]
    got = src.collect(0.0)
    assert len(got.batch) == 6
    assert any("503 queue full" in str(n) for n in got.notices)
    assert client.post("/v1/push", json=six).status_code == 202  # drained: room again


def test_real_uvicorn_concurrent_pushes_all_arrive(topology: Topology) -> None:
    src = source(topology, capacity_rows=100_000)
    server = serve_in_thread(app_for(src))
    errors: list[str] = []

    def pusher(k: int) -> None:
        ts = [NOW + k + i / 100 for i in range(50)]
        cols = {"entity": ["rack/r2"] * 50, "signal": ["rack.inlet_temp_c"] * 50, "timestamp": ts,
                "value": [float(k)] * 50}  # fmt: skip
        with httpx.Client(base_url=server.url, timeout=10) as c:
            for _ in range(4):
                r = c.post("/v1/push", content=gzip.compress(json.dumps(cols).encode()),
                           headers={"content-type": "application/json", "content-encoding": "gzip"})  # fmt: skip
                if r.status_code != 202:
                    errors.append(r.text)

    try:
        threads = [threading.Thread(target=pusher, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        with httpx.Client(base_url=server.url, timeout=10) as c:
            r = c.post("/v1/push", json={**COLUMNS, "value": ["x", 1, 2, 3]})
            assert r.status_code == 422 and r.json()["detail"][0]["field"] == "value[0]"
    finally:
        server.stop()
    assert errors == []
    got = src.collect(0.0)
    assert len(got.batch) == 6 * 4 * 50
    counts = np.bincount(got.batch.value.astype(np.int64), minlength=6)
    assert counts.tolist() == [200] * 6


def test_real_uvicorn_chunked_body_is_cut_at_the_limit(topology: Topology) -> None:
    src = source(topology, max_body_bytes=1000)
    server = serve_in_thread(app_for(src))

    def chunks() -> Any:
        yield b'{"entity": ['
        for _ in range(200):  # no content-length: the limit is enforced as the body streams in
            yield b'"rack/r0", '
        yield b'"rack/r0"]}'

    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            r = c.post("/v1/push", content=chunks(), headers={"content-type": "application/json"})
            assert r.status_code == 413 and r.json()["detail"] == "payload exceeds the limit of 1,000 bytes"
            assert c.post("/v1/push", json=COLUMNS).status_code == 202
    finally:
        server.stop()
    assert len(src.collect(0.0).batch) == 4


def test_two_rows_on_one_ndjson_line_are_refused_naming_the_line(topology: Topology) -> None:
    """Joined into one array for speed, "{...}, {...}" on a line would read as two rows; it is
    refused with its line number instead (and a bad row among them never becomes a 500)."""
    client = TestClient(app_for(source(topology)))
    lines = [json.dumps(x) for x in rows_of(COLUMNS)]
    lines[1] = lines[1] + ", " + lines[2]
    r = client.post("/v1/push", content="\n".join(lines), headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 400 and r.json()["detail"].startswith("line 2 is not valid JSON"), r.text
    lines[1] = lines[1].replace('"value": ', '"value": "x", "v": ', 1)
    r = client.post("/v1/push", content="\n".join(lines), headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 400 and r.json()["detail"].startswith("line 2"), r.text
