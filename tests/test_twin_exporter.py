"""The twin's DCGM exporter: a twin batch rendered, served on /metrics, scraped back unchanged."""

from __future__ import annotations

from functools import cache

import httpx
import numpy as np
import pytest

from seamguard.model.catalog import signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.dcgm import DcgmTarget
from seamguard.telemetry.sources.dcgm_config import DcgmSourceConfig
from seamguard.telemetry.sources.dcgm_mapping import dcgm_mapping
from seamguard.telemetry.sources.openmetrics import parse
from seamguard.telemetry.sources.scrape import DcgmScrapeSource
from seamguard.twin.exporter import DcgmRenderer, format_value, gpu_uuid, start_exporter, stop_exporter
from tests.twin_capture import captured_run

# The twin serves every node's GPUs from one exporter, which a real fleet never does.
FLEET_EXPORTER = DcgmSourceConfig(one_node_per_target=False, timeout_s=5)

TWIN = {
    "name": "exporter", "description": "a small fleet for the exporter round trip", "duration_h": 0.05,
    "cluster": {"cdus": 1, "racks_per_cdu": 1, "nodes_per_rack": 4, "gpus_per_node": 8, "storage": ["ckpt0"]},
    "jobs": [{"name": "train", "class": "sync_training", "nodes": 3, "checkpoint_gb": 100}],
    "faults": [],
}  # fmt: skip


@cache
def twin_batches(sentinel_rate: float = 0.0) -> tuple[Topology, tuple[TelemetryBatch, ...]]:
    """Every batch the twin's emitter produced in a short run (fixed seed)."""
    data = {**TWIN, "observation": {"sentinel_rate": sentinel_rate}} if sentinel_rate else TWIN
    world, got = captured_run(data, 0)
    return world.topology, got


def rendered_signals() -> list[int]:
    cat = signal_catalog()
    return sorted(
        {cat[f.signal].index for f in dcgm_mapping().fields.values() if f.render} - {cat["gpu.xid"].index}
    )


def latest(batch: TelemetryBatch, signals: list[int]) -> dict[tuple[int, int], float]:
    """(entity, signal) -> value of the latest sample, for the given signals."""
    out: dict[tuple[int, int], tuple[float, float]] = {}
    for e, s, t, v in zip(batch.entity.tolist(), batch.signal.tolist(), batch.timestamp.tolist(),
                          batch.value.tolist(), strict=True):  # fmt: skip
        if s in signals and ((e, s) not in out or t >= out[(e, s)][0]):
            out[(e, s)] = (t, v)
    return {k: v for k, (_, v) in out.items()}


def test_render_parse_round_trip_is_exact() -> None:
    topo, batches = twin_batches()
    batch = batches[-1]
    text = DcgmRenderer(topo).render(batch)
    assert 'Hostname="n0000"' in text and "DCGM_FI_DEV_GPU_TEMP{" in text
    target = DcgmTarget(topo, FLEET_EXPORTER)
    parsed = parse(text, target.cache, where="render")
    back, tally = target.convert(parsed.slot, parsed.value, parsed.timestamp, now=0.0)
    assert parsed.malformed == 0 and not tally.rejected and not tally.unknown
    sigs = rendered_signals()
    want = latest(batch, sigs)
    assert len(want) > 300
    assert latest(back, sigs) == want  # every value, bit for bit


def test_render_only_the_asked_nodes_and_stable_uuids() -> None:
    topo, batches = twin_batches()
    text = DcgmRenderer(topo).render(batches[-1], nodes=[1])
    hosts = {part.split('"')[1] for part in text.split("Hostname=")[1:]}
    assert hosts == {"n0001"}
    assert gpu_uuid("gpu/n0001/3") == gpu_uuid("gpu/n0001/3") != gpu_uuid("gpu/n0001/4")
    assert f'UUID="{gpu_uuid("gpu/n0001/3")}"' in text


def test_xid_events_are_counted_over_the_exporters_window() -> None:
    """As dcgm-exporter 4.x: DCGM_EXP_XID_ERRORS_COUNT counts each code's records inside the
    window (a gauge), a GPU without any has one 0-valued series without xid, and a record leaves
    the count once it is older than the window."""
    topo, batches = twin_batches()
    xid = signal_catalog()["gpu.xid"].index
    g = int(topo.lookup("gpu/n0002/5") or 0)
    now = float(batches[-1].timestamp.max())
    events = TelemetryBatch(
        np.array([g, g, g]), np.full(3, xid), np.array([now - 10, now - 5, now]), np.array([79.0, 79.0, 48.0])
    )
    r = DcgmRenderer(topo, xid_window_s=60.0)
    r.render(TelemetryBatch.concat([batches[-1], events]))
    text = r.render(batches[-1])  # the window persists across renders

    def counts(text: str, host: str, gpu: str) -> list[tuple[str, str]]:
        lines = [
            ln for ln in text.splitlines()
            if ln.startswith(f'DCGM_EXP_XID_ERRORS_COUNT{{gpu="{gpu}"') and f'Hostname="{host}"' in ln
        ]  # fmt: skip
        assert all('window_size_in_ms="60000"' in ln for ln in lines)
        return sorted(
            (ln.split('xid="')[1].split('"')[0] if 'xid="' in ln else "-", ln.rsplit(" ", 1)[1])
            for ln in lines
        )

    assert counts(text, "n0002", "5") == [("48", "1"), ("79", "2")]
    assert counts(text, "n0002", "4") == [("-", "0")]  # no XID: one series, no xid label
    assert "# TYPE DCGM_EXP_XID_ERRORS_COUNT gauge" in text
    gauge = [
        ln for ln in text.splitlines() if ln.startswith('DCGM_FI_DEV_XID_ERRORS{gpu="5"') and "n0002" in ln
    ]
    assert gauge and gauge[0].endswith(" 48")
    later = batches[-1]
    later = TelemetryBatch(later.entity, later.signal, later.timestamp + 61.0, later.value)
    assert counts(r.render(later), "n0002", "5") == [("-", "0")]  # all three left the window


def test_format_value_reads_back() -> None:
    for v in (0.0, 45.0, 66.1411786326818, -3.5e-7, 9.2233720368547758e18, float("inf")):
        assert float(format_value(v)) == v
    assert format_value(float("nan")) == "NaN" and format_value(float("-inf")) == "-Inf"
    assert format_value(45.0) == "45"


def test_served_on_metrics_and_scraped_back() -> None:
    topo, batches = twin_batches()
    batch = batches[-1]
    server = start_exporter(DcgmRenderer(topo).render(batch))
    try:
        assert httpx.get(server.url.replace("/metrics", "/other"), trust_env=False).status_code == 404
        resp = httpx.get(server.url, trust_env=False)
        assert resp.status_code == 200 and resp.headers["content-type"].startswith(
            "text/plain; version=0.0.4"
        )
        cfg = FLEET_EXPORTER.model_copy(
            update={"endpoints": DcgmSourceConfig(endpoints=(server.url,)).endpoints}
        )
        source = DcgmScrapeSource(cfg, topo)
        got = source.collect(now=1e9)
        assert got.notices == () and got.unknown == {}
        sigs = rendered_signals()
        assert latest(got.batch, sigs) == latest(batch, sigs)
        gpus = np.unique(got.batch.entity)
        assert gpus.size == topo.count(EntityKind.GPU)
    finally:
        stop_exporter(server)
    with pytest.raises(httpx.HTTPError):
        httpx.get(server.url, trust_env=False, timeout=1)
