"""The daemon's own metrics, scraped over HTTP from a running daemon (``serve_api``) and parsed with
prometheus_client's parser: every value follows from what the daemon did."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from seamguard.daemon import Daemon
from seamguard.daemon_run import serve_api
from seamguard.model.entities import EntityKind
from seamguard.model.topology import KINDS, Topology, build_topology
from seamguard.site_config import daemon_config_from_mapping
from seamguard.telemetry.sources.base import Collected
from seamguard.telemetry.sources.build import build_sources
from tests.conftest import small_inventory, small_jobs
from tests.http_stub import Ok, serve
from tests.test_daemon import CLOCK, payload
from tests.test_security_journal import big_fleet, push_body

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Flaky:
    name = "flaky"

    def collect(self, now: float) -> Collected:
        raise RuntimeError("exporter gone")


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("SEAMGUARD_WEBHOOK_SECRET", "s")
    with serve(Ok) as url:
        yield url


def scrape(url: str) -> Samples:
    resp = httpx.get(f"{url}/metrics", trust_env=False, timeout=10)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def daemon_for(topo: Topology, url: str, **safety: Any) -> Daemon:
    config = daemon_config_from_mapping(
        {
            "engine": {"tick_s": 1, "stale_after_s": 10, "observe_every_s": 10},
            "sources": {"push": {}},
            "actuators": {"webhook": {"url": url, "mode": "enforce"}},
            "safety": safety,
        }
    )
    return Daemon(config, topo, [Flaky(), *build_sources(config.site.sources, topo, CLOCK)])


def test_metrics_follow_what_the_daemon_did(cluster: str) -> None:
    """Two hot GPUs on two nodes, a budget of one node: one drain done, one refused and queued; a
    source that raises is down; states per kind sum to the entities of each kind."""
    topo = build_topology(small_inventory(), small_jobs())
    daemon = daemon_for(topo, cluster, budgets={"max_nodes": 1})
    push = daemon.push
    assert push is not None
    server = serve_api(daemon, "127.0.0.1", 0)
    try:
        before = scrape(server.url)
        assert value(before, "seamguard_last_tick_timestamp_seconds") == 0.0
        assert value(before, "seamguard_ticks_total") == 0.0
        t0 = 1.0e9
        body = payload(topo, t0 - 0.5)
        i = body["entity"].index("gpu/n03/2")  # a second hot GPU, on another node
        body["value"][i] = 97.0
        body["value"][i + len(body["entity"]) // 2] = 64.0
        push.ingest(json.dumps(body).encode())
        report = daemon.step(t0)
        push.ingest(json.dumps(payload(topo, t0 + 0.5, hot=None)).encode())  # waits for the next tick
        after = scrape(server.url)
    finally:
        server.stop()
        daemon.dispatcher.close()
    assert value(after, "seamguard_last_tick_timestamp_seconds") == t0
    assert value(after, "seamguard_ticks_total") == 1.0
    assert value(after, "seamguard_tick_duration_seconds_count") == 1.0
    assert value(after, "seamguard_actions_total", kind="drain_node", actuator="webhook", outcome="done") == 1
    refused = value(after, "seamguard_actions_total", kind="drain_node", actuator="safety", outcome="refused")
    assert refused == 1
    assert sum(v for (n, _), v in after.items() if n == "seamguard_actions_total") == len(report.actions)
    assert value(after, "seamguard_quarantined_nodes") == 1 and value(after, "seamguard_queued_actions") == 1
    assert value(after, "seamguard_budget_used_nodes", budget="fleet") == 1
    assert value(after, "seamguard_budget_limit_nodes", budget="fleet") == 1
    assert value(after, "seamguard_budget_used_nodes", budget="hour") == 1
    # states: every kind's series sum to its entities; the two hot GPUs are in quarantine
    for kind in KINDS:
        total = sum(
            v for (n, lab), v in after.items() if n == "seamguard_entities" and ("kind", kind.value) in lab
        )
        assert total == topo.count(kind), kind
    assert value(after, "seamguard_entities", kind="gpu", state="quarantine") == 2
    moved = [(t.from_state, t.to_state) for t in report.transitions]
    for a, b in set(moved):
        assert value(after, "seamguard_transitions_total", from_state=a, to_state=b) == moved.count((a, b))
    assert value(after, "seamguard_source_up", source="flaky") == 0
    assert value(after, "seamguard_source_notices_active", source="flaky") == 1
    assert value(after, "seamguard_source_up", source="push") == 1
    assert value(after, "seamguard_push_queue_rows") == 2 * topo.count(EntityKind.GPU)
    assert value(after, "seamguard_push_queue_capacity_rows") == push.capacity_rows
    assert value(after, "seamguard_actuator_breaker", actuator="webhook", state="closed") == 1
    assert value(after, "seamguard_actuator_breaker", actuator="webhook", state="open") == 0
    assert value(after, "seamguard_storm_brake_engaged") == 0


def test_the_storm_brake_and_its_reason_are_exported(cluster: str) -> None:
    topo = big_fleet()
    daemon = daemon_for(topo, cluster)
    assert daemon.push is not None
    server = serve_api(daemon, "127.0.0.1", 0)
    try:
        daemon.push.ingest(push_body(topo, 1.0e9 - 0.5, [f"gpu/n{i:02d}/0" for i in range(40)]))
        daemon.step(1.0e9)
        got = scrape(server.url)
    finally:
        server.stop()
        daemon.dispatcher.close()
    assert value(got, "seamguard_storm_brake_engaged") == 1
    [reason] = [dict(lab)["reason"] for (n, lab), _ in got.items() if n == "seamguard_storm_brake_info"]
    assert reason and reason == daemon.safety.brake.reason
    advised = value(got, "seamguard_actions_total", kind="drain_node", actuator="webhook", outcome="advised")
    assert advised == 40 and value(got, "seamguard_quarantined_nodes") == 0


def test_each_daemon_counts_its_own(cluster: str) -> None:
    """Two daemons in one process: separate registries, no duplicate-series error, no mixing."""
    topo = build_topology(small_inventory(), small_jobs())
    one, two = daemon_for(topo, cluster), daemon_for(topo, cluster)
    one.step(1.0e9)
    one.step(1.0e9 + 1)
    assert b"seamguard_ticks_total 2.0" in one.metrics.render()
    assert b"seamguard_ticks_total 0.0" in two.metrics.render()
    one.dispatcher.close()
    two.dispatcher.close()


# ---- the dashboard and the doc name only what seamguard exports ---------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs"
_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "le",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions, keywords,
    label names (inside {} or by/without ()), durations or numbers."""
    expr = re.sub(r'"[^"]*"', "", expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges, $__rate_interval
    tokens = re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*+(?!\s*\()", expr)  # possessive: no "tim" of time(
    return {
        t.group() for t in tokens if t.group() not in _PROMQL_WORDS and not re.fullmatch(r"\d.*", t.group())
    }


def exported(cluster: str) -> set[str]:
    """Every sample name a running daemon exports once it has a push source, an enforcing actuator,
    a transition and an action."""
    topo = build_topology(small_inventory(), small_jobs())
    daemon = daemon_for(topo, cluster)
    server = serve_api(daemon, "127.0.0.1", 0)
    try:
        assert daemon.push is not None
        daemon.push.ingest(json.dumps(payload(topo, 1.0e9 - 0.5)).encode())  # a transition, a drain
        daemon.step(1.0e9)
        return {name for name, _ in scrape(server.url)}
    finally:
        server.stop()
        daemon.dispatcher.close()


def test_every_dashboard_panel_queries_only_exported_metrics(cluster: str) -> None:
    names = exported(cluster)
    board = json.loads((DOCS / "grafana" / "seamguard-dashboard.json").read_text())
    assert board["title"] and board["uid"] and isinstance(board["schemaVersion"], int)
    assert board["templating"]["list"][0]["type"] == "datasource"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) >= 10
    for panel in board["panels"]:
        assert {"type", "title", "gridPos", "targets", "datasource"} <= panel.keys(), panel["title"]
        for target in panel["targets"]:
            used = metric_names(target["expr"])
            assert used and used <= names, (panel["title"], used - names)
    assert metric_names('time() - sum by (le) (rate(foo_bucket{a="b"}[5m])) / bar') == {"foo_bucket", "bar"}


def test_the_metrics_doc_lists_every_family_and_its_promql_is_exported(cluster: str) -> None:
    names = exported(cluster)
    doc = (DOCS / "metrics.md").read_text()
    families = {re.sub(r"_(total|bucket|count|sum|info|created)$", "", n) for n in names}
    for family in families:
        assert f"`{family}" in doc, family
    blocks = re.findall(r"```promql\n(.*?)```", doc, flags=re.S)
    exprs = [line for block in blocks for line in block.splitlines() if line.strip()]
    exprs += re.findall(r"expr: (.+)", doc)
    assert len(exprs) > 15
    for expr in exprs:
        assert metric_names(expr) <= names, expr
