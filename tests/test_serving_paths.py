"""Serving paths and replicas as entities (issue 20): the serving file beside the inventory, the
exporters' metrics (vLLM's NIXL connector, Dynamo's per-worker gauges) mapped onto their signals,
a path degraded by its own signals while both ends are healthy, and ``GET /v1/routing``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from seamguard.control.controller import Controller
from seamguard.errors import InputError
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import read_inventory
from seamguard.model.states import State
from seamguard.model.topology import Topology, build_topology
from seamguard.model.world import inventory_of, with_jobs
from seamguard.serving.routing import RoutingObjective
from seamguard.serving.view import routing_json
from seamguard.telemetry.sources.serving_mapping import ServingReader, series_from_text, serving_query
from tests import test_security_attacks as attacks
from tests.test_controller import CAT, CFG, normal_batch, with_readings
from tests.test_daemon import write_inventory

FIXTURES = Path(__file__).parent / "fixtures" / "serving"
live, service_config = attacks.live, attacks.service_config

SERVING = """pool,role,replica,nodes,prefill_from,pair
pre,prefill,p0,n00,,
pre,prefill,p1,n01,,
dec,decode,d0,n04,,p0
dec,decode,d1,n05,,
"""


def write_serving(inv: Path, text: str = SERVING) -> Path:
    path = inv.with_name(f"{inv.stem}.serving.csv")
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def topo(tmp_path: Path) -> Topology:
    inv = write_inventory(tmp_path / "inv.csv")
    write_serving(inv)
    return build_topology(read_inventory(inv))


def values(topo: Topology, batch: Any) -> dict[tuple[str, str], float]:
    names = {s.index: s.name for s in CAT.signals}
    return {(topo.ids[e], names[s]): v for e, s, v in zip(batch.entity.tolist(), batch.signal.tolist(),
                                                          batch.value.tolist(), strict=True)}  # fmt: skip


# ---- the inventory ------------------------------------------------------------------------------


def test_an_inventory_with_serving_pools_builds_bounded_paths(topo: Topology) -> None:
    assert topo.names[EntityKind.POOL] == ("pre", "dec")
    assert topo.names[EntityKind.REPLICA] == ("p0", "p1", "d0", "d1")
    # one pool path into each decode replica, a replica pair only where the file names it: not P x D
    assert topo.names[EntityKind.PATH] == ("pre~d0", "pre~d1", "p0~d0")
    assert topo.kind_of(topo.index["path/p0~d0"]) is EntityKind.PATH
    sv = topo.serving
    assert [sv.paths[i] for i in sv.inbound[sv.inbound >= 0]] == ["pre~d0", "pre~d1"]
    assert sv.path_nodes(topo.names[EntityKind.PATH].index("p0~d0")) == (0, 4)  # n00 and n04
    # jobs stay the tail of the index: a change of jobs only is still incremental
    assert topo.ids[-1].startswith("path/") and with_jobs(topo, ()) is not None
    assert build_topology(inventory_of(topo)).ids == topo.ids  # a rebuild from the topology keeps serving


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "pool,role,replica,nodes\npre,prefill,p0,n99\n",
            ":2: column 'nodes': node(s) not in the inventory: n99",
        ),
        (
            "pool,role,replica,nodes\npre,prefil,p0,n00\n",
            ":2: column 'role' must be one of prefill, decode, both",
        ),
        (
            "pool,role,replica,nodes,pair\npre,prefill,p0,n00,\ndec,decode,d0,n04,d1\ndec,decode,d1,n05,\n",
            ":3: column 'pair': 'd1' is a replica of decode pool 'dec'",
        ),
        ("pool,role,replica,nodes\npre,prefill,dec,n00\ndec,decode,d0,n04\n", ":2: 'dec' names both a pool"),
        (
            "pool,role,replica,nodes\npre,prefill,p0,n00\npre,decode,p1,n01\n",
            ":3: pool 'pre' is prefill on line 2",
        ),
        ("pool,role,replica,nodes\npre,prefill,p~0,n00\n", ":2: column 'replica' must be a non-empty name"),
        ("pool,role,replica,host\npre,prefill,p0,n00\n", ":1: header has unknown column(s) host"),
        ("pool,role,replica,nodes\npre,prefill,p0,\n", ":2: replica 'p0': column 'nodes' is empty"),
    ],
)
def test_bad_serving_input_is_named_by_file_line_and_column(tmp_path: Path, text: str, says: str) -> None:
    inv = write_inventory(tmp_path / "inv.csv")
    write_serving(inv, text)
    with pytest.raises(InputError) as err:
        read_inventory(inv)
    assert "inv.serving.csv" in str(err.value) and says in str(err.value), str(err.value)


# ---- the exporters ------------------------------------------------------------------------------


def test_vllm_nixl_and_latency_histograms_become_window_means_on_the_decode_path(topo: Topology) -> None:
    reader = ServingReader(topo)
    t0 = series_from_text((FIXTURES / "vllm-decode-nixl-t0.prom").read_text())
    t1 = series_from_text((FIXTURES / "vllm-decode-nixl-t1.prom").read_text())
    first, skipped = reader.read(t0, 1000.0, target="d1:8000")
    assert skipped == {}  # every series mapped or knowingly unread
    got = values(topo, first)
    assert ("path/pre~d1", "path.kv_transfer_ms") not in got  # the first scrape is a baseline only
    assert got[("replica/d1", "replica.queue_depth")] == 3.0
    got = values(topo, reader.read(t1, 1030.0, target="d1:8000")[0])
    assert got[("path/pre~d1", "path.kv_transfer_ms")] == pytest.approx(15.0)  # 1.5 s over 100 transfers
    assert got[("path/pre~d1", "path.kv_transfer_jitter_ms")] == pytest.approx(12.0)  # p90 25 ms - p50 13 ms
    assert got[("path/pre~d1", "path.kv_failures_total")] == 3.0
    assert got[("path/pre~d1", "path.kv_transfers_total")] == 1100.0
    assert got[("path/pre~d1", "path.kv_bytes_total")] == pytest.approx(1100 * 268435456.0)
    assert got[("replica/d1", "replica.ttft_ms")] == pytest.approx(250.0)
    assert got[("replica/d1", "replica.itl_ms")] == pytest.approx(20.0)
    assert got[("replica/d1", "replica.kv_cache_usage")] == 0.47
    assert not any(e.startswith("path/p0~") for e, _ in got)  # no peer label: never a replica pair


def test_a_path_series_of_a_prefill_replica_is_skipped_with_the_reason(topo: Topology) -> None:
    reader = ServingReader(topo)
    text = (FIXTURES / "vllm-decode-nixl-t0.prom").read_text()
    batch, skipped = reader.read(series_from_text(text), 1000.0, target="p0:8000")
    assert {e for e, _ in values(topo, batch)} == {"replica/p0"}
    assert any("replica p0 has no single pool path into it" in why for why in skipped)


def test_dynamo_per_worker_gauges_land_on_the_worker_replica(tmp_path: Path) -> None:
    inv = write_inventory(tmp_path / "inv.csv")
    write_serving(inv, "pool,role,replica,nodes\npre,prefill,694d9a3b1c1e5e01,n00\n"
                       "dec,decode,694d9a3b1c1e5e02,n04\n")  # fmt: skip
    topo = build_topology(read_inventory(inv))
    series = series_from_text((FIXTURES / "dynamo-frontend-workers.prom").read_text())
    batch, skipped = ServingReader(topo).read(series, 1000.0, target="frontend:8000")
    got = values(topo, batch)
    assert skipped == {}
    assert got[("replica/694d9a3b1c1e5e01", "replica.ttft_ms")] == pytest.approx(183.0)
    assert got[("replica/694d9a3b1c1e5e02", "replica.itl_ms")] == pytest.approx(23.2)  # max over dp ranks
    assert got[("replica/694d9a3b1c1e5e02", "replica.kv_cache_usage")] == 0.61
    assert (
        "replica/694d9a3b1c1e5e02",
        "replica.queue_depth",
    ) not in got  # the frontend's queue is not a replica's


def test_the_prometheus_query_asks_for_every_histogram_part() -> None:
    q = serving_query('namespace="llm"')
    assert "vllm:nixl_xfer_time_seconds(_bucket|_sum|_count)?" in q and q.endswith(',namespace="llm"}')
    assert "|vllm:num_requests_waiting|" in q


# ---- the engine ---------------------------------------------------------------------------------


def path_ticks(topo: Topology, slow: str, ticks: int = 8) -> Controller:
    """Every node healthy; ``slow``'s KV transfers take 400 ms, the others' 10 ms."""
    ctl = Controller(topo, CFG)
    rng = np.random.default_rng(1)
    for i in range(ticks):
        now = 1000.0 + 30.0 * (i + 1)
        readings = {
            (f"path/{p}", "path.kv_transfer_ms"): (400.0 if p == slow else 10.0)
            for p in topo.names[EntityKind.PATH]
        }
        readings.update(
            {(f"replica/{r}", "replica.queue_depth"): 2.0 for r in topo.names[EntityKind.REPLICA]}
        )
        ctl.tick(now, with_readings(topo, normal_batch(topo, now, rng), now, readings))
    return ctl


def test_a_path_is_degraded_by_its_own_signals_while_both_ends_are_healthy(topo: Topology) -> None:
    ctl = path_ticks(topo, slow="pre~d1")
    st = ctl.states
    assert st[topo.index["path/pre~d1"]] == int(State.DEGRADED)
    assert st[topo.index["path/pre~d0"]] == int(State.HEALTHY)
    for eid in ("node/n00", "node/n01", "node/n05", "link/n05", "replica/p0", "replica/d1"):
        assert st[topo.index[eid]] in (int(State.HEALTHY), int(State.UNKNOWN)), eid
    assert st[topo.index["switch/l1"]] == int(State.UNKNOWN)  # no leaf telemetry: says nothing
    assert st[topo.index["node/n05"]] == int(State.HEALTHY)
    plan = routing_json(topo, st, ctl.store, RoutingObjective(ttft_slo_ms=2000, itl_slo_ms=100), ctl.now)
    [pool] = plan["pools"]  # type: ignore[misc]
    weights = {r["id"]: r["weight"] for r in pool["replicas"]}
    assert weights["replica/d1"] == 0.0 and weights["replica/d0"] == pytest.approx(1.0)
    paths = {p["id"]: p for p in pool["paths"]}
    assert paths["path/pre~d1"]["state"] == "degraded" and paths["path/pre~d1"]["admits"] is False
    assert any("pre~d1" in r or "replica/d1" in r for r in pool["reasons"])


def test_a_degraded_leaf_under_one_end_takes_the_path_out_of_service(topo: Topology) -> None:
    ctl = path_ticks(topo, slow="")
    st = ctl.states.copy()
    st[topo.index["switch/l1"]] = int(State.DEGRADED)  # the leaf of n04 and n05: every decode end
    plan = routing_json(topo, st, ctl.store, RoutingObjective(ttft_slo_ms=2000, itl_slo_ms=100), ctl.now)
    [pool] = plan["pools"]  # type: ignore[misc]
    assert all(p["admits"] is False and p["state"] == "degraded" for p in pool["paths"])
    assert pool["degrade"] is True  # no path holds: the least bad pairs serve, degraded


def test_a_failed_gpu_on_a_replica_node_takes_that_replica_out_and_no_other(topo: Topology) -> None:
    """A replica's compute is its own state or the worst of its nodes' and their GPUs': the GPU's
    failure reaches d1 (on n05), not d0 (n04) nor the prefill replicas."""
    ctl = path_ticks(topo, slow="")
    st = ctl.states.copy()
    st[topo.index["gpu/n05/0"]] = int(State.FAILED)
    plan = routing_json(topo, st, ctl.store, RoutingObjective(ttft_slo_ms=2000, itl_slo_ms=100), ctl.now)
    [pool] = plan["pools"]  # type: ignore[misc]
    weights = {r["id"]: r["weight"] for r in pool["replicas"]}
    assert weights["replica/d1"] == 0.0 and weights["replica/d0"] == pytest.approx(1.0)
    assert weights["replica/p0"] > 0.0 and weights["replica/p1"] > 0.0


# ---- GET /v1/routing on a running daemon --------------------------------------------------------


@pytest.fixture
def push_config(tmp_path: Path) -> dict[str, Any]:
    """The live daemon's ``sources.push`` (defaults); the serving file is written beside its
    inventory first, so that the daemon starts with pools, replicas and paths."""
    write_serving(tmp_path / "inv.csv")
    return {}


def test_routing_needs_a_token_and_weighs_the_degraded_path_less(live: attacks.LiveDaemon) -> None:
    resp = live.request("GET", "/v1/routing")
    assert resp.status_code == 401 and "needs a bearer token with role viewer" in resp.json()["detail"]
    assert live.request("GET", "/v1/routing", "pusher").status_code == 403
    before = live.request("GET", "/v1/routing", "viewer").json()
    [pool] = before["pools"]
    even = {r["id"]: r["weight"] for r in pool["replicas"] if r["role"] == "decode"}
    assert even["replica/d0"] == pytest.approx(even["replica/d1"])  # nothing measured: alike
    for _ in range(5):  # the level detector reads a median of 3+ samples, one per tick
        now = time.time()
        body = {"entity": ["path/pre~d0", "path/pre~d1"], "signal": ["path.kv_transfer_ms"] * 2,
                "timestamp": [now, now], "value": [10.0, 400.0]}  # fmt: skip
        assert live.push(body, "pusher").status_code == 202
        live.wait_ticks(1)
    got = live.request("GET", "/v1/routing", "viewer", params={"ttft_slo_ms": 1500}).json()
    [pool] = got["pools"]
    weights = {r["id"]: r["weight"] for r in pool["replicas"]}
    assert weights["replica/d1"] < weights["replica/d0"] and weights["replica/d1"] == 0.0
    assert {p["id"]: p["state"] for p in pool["paths"]}["path/pre~d1"] == "degraded"
    assert got["objective"]["ttft_slo_ms"] == 1500
    assert live.request("GET", "/v1/routing", "viewer", params={"ttft_slo_ms": -1}).status_code == 422


def test_each_pair_takes_its_own_path_else_its_pools_into_the_replica_else_pool_to_pool() -> None:
    """``_pair_paths`` (vectorised) against the rule written pair by pair, on a random layout."""
    from seamguard.serving.view import _pair_paths

    rng = np.random.default_rng(7)
    replica_pool = np.array([0] * 5 + [1] * 4 + [2] * 6, dtype=np.int64)  # prefill 0, 1; decode 2
    pre, dec = np.arange(9), np.arange(9, 15)
    src_rep, src_pool, dst_rep, dst_pool = [], [], [], []
    for sp in (0, 1):
        src_rep.append(-1), src_pool.append(sp), dst_rep.append(-1), dst_pool.append(2)  # pool -> pool
        for d in rng.choice(dec, 3, replace=False).tolist():  # pool -> some decode replicas
            src_rep.append(-1), src_pool.append(sp), dst_rep.append(d), dst_pool.append(2)
    for p, d in zip(rng.choice(pre, 6).tolist(), rng.choice(dec, 6).tolist(), strict=True):  # declared pairs
        src_rep.append(p), src_pool.append(int(replica_pool[p])), dst_rep.append(d), dst_pool.append(2)
    a = {k: np.array(v, dtype=np.int64) for k, v in
         {"sr": src_rep, "sp": src_pool, "dr": dst_rep, "dp": dst_pool}.items()}  # fmt: skip
    into = np.flatnonzero(a["dp"] == 2)
    got = _pair_paths(replica_pool, pre, dec, into, a["sr"], a["sp"], a["dr"])
    for i, p in enumerate(pre.tolist()):
        for j, d in enumerate(dec.tolist()):
            pp = int(replica_pool[p])
            own = [k for k in into.tolist() if a["sr"][k] == p and a["dr"][k] == d]
            mid = [k for k in into.tolist() if a["sr"][k] < 0 and a["sp"][k] == pp and a["dr"][k] == d]
            wide = [k for k in into.tolist() if a["sr"][k] < 0 and a["sp"][k] == pp and a["dr"][k] < 0]
            want = (own or mid or wide or [-1])[-1 if own else 0]
            assert got[i, j] == want, (p, d, got[i, j], want)
