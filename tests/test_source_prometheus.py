"""The prometheus source against the real Debian Prometheus scraping the twin's DCGM exporter."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from seamguard.model.catalog import signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.telemetry.sources.dcgm_mapping import dcgm_mapping
from seamguard.telemetry.sources.prometheus_api import PrometheusApiSource, dcgm_query
from seamguard.telemetry.sources.prometheus_config import PrometheusApiConfig, PromQuery
from seamguard.twin.exporter import DcgmRenderer, start_exporter
from tests.prometheus_server import free_port, prometheus_server
from tests.test_twin_exporter import latest, rendered_signals, twin_batches


def wait_for_series(url: str, query: str, count: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = httpx.get(f"{url}/api/v1/query", params={"query": query}, trust_env=False, timeout=5).json()
        if r["status"] == "success" and len(r["data"]["result"]) >= count:
            return
        time.sleep(0.3)
    raise AssertionError(f"Prometheus never held {count} series for {query}")


def test_query_config_checks() -> None:
    with pytest.raises(ValidationError, match="unknown signal"):
        PromQuery(query="up", signal="node.nope", entity="node/{instance}")
    with pytest.raises(ValidationError, match="event signal"):
        PromQuery(query="up", signal="gpu.xid", entity="gpu/{a}/{b}")
    with pytest.raises(ValidationError, match="nothing to query"):
        PrometheusApiConfig(url="http://127.0.0.1:1", dcgm=False)
    with pytest.raises(ValidationError, match="query listed twice: 'up'"):
        PrometheusApiConfig(
            url="http://127.0.0.1:1",
            queries=[PromQuery(query="up", signal="gpu.temp_c", entity="gpu/{a}/{b}"),
                     PromQuery(query="up", signal="gpu.power_w", entity="gpu/{a}/{b}")],
        )  # fmt: skip
    assert all(name in dcgm_query() for name in dcgm_mapping().fields)


def test_unreachable_server_is_a_notice() -> None:
    src = PrometheusApiSource(
        PrometheusApiConfig(url=f"http://127.0.0.1:{free_port()}", timeout_s=1), twin_batches()[0]
    )
    got = src.collect(time.time())
    assert len(got.batch) == 0 and len(got.notices) == 1 and "ConnectError" in got.notices[0].message


def test_values_through_a_real_prometheus_match_the_exporter(tmp_path: Path) -> None:
    topo, batches = twin_batches()
    batch = batches[-1]
    exporter = start_exporter(DcgmRenderer(topo).render(batch))
    try:
        with prometheus_server([f"127.0.0.1:{exporter.port}"], tmp_path) as url:
            n_gpus = topo.count(EntityKind.GPU)
            wait_for_series(url, "DCGM_FI_DEV_GPU_TEMP", 1)
            wait_for_series(url, dcgm_query(), 10 * max(n_gpus, 1))
            cfg = PrometheusApiConfig(
                url=url, timeout_s=10, dcgm_selector='job="dcgm"', one_node_per_target=False,
                queries=(
                    # seconds since each node's exporter was last scraped: a heartbeat age
                    PromQuery(query='time() - timestamp(DCGM_FI_DEV_GPU_TEMP{gpu="0"})',
                              signal="node.heartbeat_age_s", entity="node/{Hostname}"),
                    PromQuery(query="up", signal="node.heartbeat_age_s", entity="node/{missing_label}"),
                    PromQuery(query="this is not promql(", signal="gpu.temp_c", entity="gpu/{a}/{b}"),
                ),
            )  # fmt: skip
            got = PrometheusApiSource(cfg, topo).collect(time.time())
    finally:
        exporter.stop()
    sigs = rendered_signals()
    assert latest(got.batch, sigs) == latest(batch, sigs)  # every value as the exporter served it
    hb = got.batch.signal == signal_catalog()["node.heartbeat_age_s"].index
    assert hb.sum() == 4 and np.all((got.batch.value[hb] >= 0) & (got.batch.value[hb] < 30))
    messages = {n.where: n.message for n in got.notices}
    assert "no label 'missing_label'" in messages["query 'up'"]
    assert (
        "HTTP 400" in messages["query 'this is not promql('"]
        and "parse error" in messages["query 'this is not promql('"]
    )
    assert got.unknown == {}
