"""The DCGM sources on what real exporters print (tests/fixtures/dcgm/README.md names each file's
origin): the values the engine receives, per fixture, through the real parser and mapping."""

from __future__ import annotations

import json
import re
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest

from seamguard.model.catalog import signal_catalog
from seamguard.model.inventory import Inventory, NodeRecord, parse_mig_layout
from seamguard.model.topology import Topology, build_topology
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.dcgm import DcgmTarget, ScrapeTarget, Tally
from seamguard.telemetry.sources.dcgm_config import DcgmSourceConfig
from seamguard.telemetry.sources.openmetrics import parse
from seamguard.telemetry.sources.prometheus_api import PrometheusApiSource
from seamguard.telemetry.sources.prometheus_config import PrometheusApiConfig
from tests.http_stub import serve

FIXTURES = Path(__file__).parent / "fixtures" / "dcgm"
CAT = signal_catalog()


def fleet(*nodes: tuple[str, int, str]) -> Topology:
    """Nodes as (name, GPUs, mig column)."""
    recs = tuple(
        NodeRecord(name, "r0", "c0", "l0", gpus, mig=parse_mig_layout(mig, gpus) if mig else ())
        for name, gpus, mig in nodes
    )
    return build_topology(Inventory(recs))


def read(target: DcgmTarget, text: str, now: float = 1000.0) -> tuple[TelemetryBatch, Tally]:
    parsed = parse(text, target.cache, where="fixture", openmetrics=False)
    assert parsed.malformed == 0, parsed.issues
    return target.convert(parsed.slot, parsed.value, parsed.timestamp, now)


def by_entity(topo: Topology, batch: TelemetryBatch, signal: str) -> dict[str, float]:
    pick = batch.signal == CAT[signal].index
    ents, vals = batch.entity[pick].tolist(), batch.value[pick].tolist()
    assert len(set(ents)) == len(ents), f"{signal}: several samples for one entity"
    return {topo.ids[e]: v for e, v in zip(ents, vals, strict=True)}


def xids(topo: Topology, batch: TelemetryBatch) -> list[tuple[str, int]]:
    pick = batch.signal == CAT["gpu.xid"].index
    return sorted((topo.ids[e], int(v)) for e, v in zip(batch.entity[pick], batch.value[pick], strict=True))


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


# ---- 2.x: Datadog's capture of a Tesla T4 exporter ------------------------------------------------
def test_exporter_2x_in_docker_names_a_container_not_a_node() -> None:
    """Its Hostname is the exporter container's id: only the target can name the node."""
    topo = fleet(("t4-host-01", 1, ""))
    text = fixture("datadog-t4-exporter-2.x.prom")
    lost = DcgmTarget(
        topo, DcgmSourceConfig(), target=ScrapeTarget("http://10.1.0.9:9400/metrics", "10.1.0.9")
    )
    batch, tally = read(lost, text)
    assert len(batch) == 0
    assert sorted(tally.rejected) == [
        "label gpu='' is not a GPU index",  # the fixture's labelless dummy lines
        "no node of the inventory named for http://10.1.0.9:9400/metrics: target '10.1.0.9'; label Hostname '424773df46e0'",
        "no node of the inventory named for http://10.1.0.9:9400/metrics: target '10.1.0.9'; label Hostname '551bdf382151'",
        "no node of the inventory named for http://10.1.0.9:9400/metrics: target '10.1.0.9'; label Hostname 'ip-11111'",
    ]
    named = DcgmTarget(
        topo, DcgmSourceConfig(), target=ScrapeTarget("http://t4-host-01:9400/metrics", "t4-host-01")
    )
    batch, tally = read(named, text)
    gpu = "gpu/t4-host-01/0"
    got = {s: by_entity(topo, batch, s).get(gpu) for s in (
        "gpu.sm_clock_mhz", "gpu.mem_clock_mhz", "gpu.temp_c", "gpu.power_w", "gpu.pcie_replay_total",
        "gpu.util_pct", "gpu.fb_free_mib", "gpu.fb_used_mib", "gpu.throttle_reasons", "gpu.dram_active",
    )}  # fmt: skip
    assert got == {
        "gpu.sm_clock_mhz": 300.0, "gpu.mem_clock_mhz": 405.0, "gpu.temp_c": 25.0, "gpu.power_w": 8.969,
        "gpu.pcie_replay_total": 0.0, "gpu.util_pct": 0.0, "gpu.fb_free_mib": 15109.0, "gpu.fb_used_mib": 0.0,
        "gpu.throttle_reasons": 1.0, "gpu.dram_active": 0.000003,
    }  # fmt: skip
    assert xids(topo, batch) == []  # the XID gauge reads 0
    assert tally.unknown == {}  # every other name is known: energy, encoder, PSTATE, FB total... are skipped
    assert dict(tally.rejected) == {"label gpu='' is not a GPU index": 8}


def test_readme_3x_blanks_between_labels_and_a_sentinel() -> None:
    topo = fleet(("n1", 1, ""))
    t = DcgmTarget(topo, DcgmSourceConfig(), target=ScrapeTarget("http://n1:9400/metrics", "n1"))
    batch, tally = read(t, fixture("dcgm-exporter-readme-3.x.prom"))
    assert by_entity(topo, batch, "gpu.sm_clock_mhz") == {"gpu/n1/0": 139.0}
    assert by_entity(topo, batch, "gpu.mem_clock_mhz") == {"gpu/n1/0": 405.0}
    assert (
        by_entity(topo, batch, "gpu.mem_temp_c") == {} and tally.sentinel == 1
    )  # blank: missing, not 9.2e18


# ---- 4.x: H100 with the windowed XID count ---------------------------------------------------------
def h100() -> tuple[Topology, DcgmTarget]:
    topo = fleet(("dgx-h100-017", 8, ""))
    url = "http://dgx-h100-017.cluster.local:9400/metrics"
    cfg = DcgmSourceConfig(hostname={"strip_suffixes": (".cluster.local",)}, endpoints=(url,))
    return topo, DcgmTarget(topo, cfg, target=ScrapeTarget(url, cfg.endpoints[0].target_host()))


def test_h100_4x_every_default_field_reaches_the_engine() -> None:
    topo, t = h100()
    batch, tally = read(t, fixture("h100-exporter-4.x-t1.prom"))
    assert not tally.rejected and not tally.unknown and tally.sentinel == 0
    g = [f"gpu/dgx-h100-017/{i}" for i in range(8)]
    assert by_entity(topo, batch, "gpu.temp_c") == dict(
        zip(g, [35.0, 37.0, 36.0, 42.0, 34.0, 38.0, 36.0, 37.0], strict=True)
    )
    assert by_entity(topo, batch, "gpu.power_w")[g[3]] == 388.716
    assert by_entity(topo, batch, "gpu.util_pct")[g[3]] == 37.0
    assert by_entity(topo, batch, "gpu.gr_engine_active")[g[3]] == 0.402113
    assert by_entity(topo, batch, "gpu.pcie_rx_bytes_per_s")[g[1]] == 1093872211.0 + 977
    assert by_entity(topo, batch, "gpu.remapped_rows_uncorrectable_total") == {
        gi: float(i == 3) for i, gi in enumerate(g)
    }
    assert by_entity(topo, batch, "gpu.remapped_rows_correctable_total")[g[6]] == 2.0
    assert set(by_entity(topo, batch, "gpu.row_remap_failure").values()) == {0.0}
    assert (
        len(by_entity(topo, batch, "gpu.mem_clock_mhz")) == 8
        and len(by_entity(topo, batch, "gpu.fb_used_mib")) == 8
    )


def test_h100_4x_xid_48_is_not_lost_behind_the_last_value_gauge() -> None:
    """At t1 the window holds 48 and 63 on GPU 3 and 79 on GPU 5; the gauge says 63 and 79 only."""
    topo, t = h100()
    assert xids(topo, read(t, fixture("h100-exporter-4.x-t0.prom"), 1000.0)[0]) == []
    batch, _ = read(t, fixture("h100-exporter-4.x-t1.prom"), 1030.0)
    assert xids(topo, batch) == [
        ("gpu/dgx-h100-017/3", 48),
        ("gpu/dgx-h100-017/3", 63),
        ("gpu/dgx-h100-017/5", 79),
    ]
    # the same scrape again: still in the window, nothing new
    assert xids(topo, read(t, fixture("h100-exporter-4.x-t1.prom"), 1060.0)[0]) == []
    # an exporter without the count (the stock counters file): only the gauge, which lost the 48
    gauge_only = DcgmTarget(topo, DcgmSourceConfig(), target=t.target)
    strip = re.compile(r"^DCGM_EXP_XID_ERRORS_COUNT.*\n", re.MULTILINE)
    read(gauge_only, strip.sub("", fixture("h100-exporter-4.x-t0.prom")), 1000.0)
    batch, _ = read(gauge_only, strip.sub("", fixture("h100-exporter-4.x-t1.prom")), 1030.0)
    assert xids(topo, batch) == [("gpu/dgx-h100-017/3", 63), ("gpu/dgx-h100-017/5", 79)]


# ---- MIG -----------------------------------------------------------------------------------------
MIG_NODE = ("a100-mig-03", 4, "0:7-10|1:1;2")


def test_mig_flex_4x_instances_are_entities_and_gpu_fields_are_read_once() -> None:
    topo = fleet(MIG_NODE)
    t = DcgmTarget(
        topo, DcgmSourceConfig(), target=ScrapeTarget("http://a100-mig-03:9400/metrics", "a100-mig-03")
    )
    batch, tally = read(t, fixture("a100-mig-flex-exporter-4.x.prom"))
    assert not tally.rejected and not tally.unknown
    assert tally.sentinel == 6  # GPU_UTIL is blank on each of the six instance series
    gpu = "gpu/a100-mig-03/"
    assert by_entity(topo, batch, "gpu.temp_c") == {
        gpu + "0": 44.0,
        gpu + "1": 45.0,
        gpu + "2": 53.0,
        gpu + "3": 54.0,
    }
    assert by_entity(topo, batch, "gpu.util_pct") == {gpu + "2": 97.0, gpu + "3": 97.0}
    assert by_entity(topo, batch, "mig.fb_used_mib") == {
        gpu + "0/mig/7": 5122.0, gpu + "0/mig/8": 13.0, gpu + "0/mig/9": 9870.0, gpu + "0/mig/10": 13.0,
        gpu + "1/mig/1": 38110.0, gpu + "1/mig/2": 13.0,
    }  # fmt: skip
    assert by_entity(topo, batch, "mig.gr_engine_active")[gpu + "0/mig/9"] == 0.991002
    assert by_entity(topo, batch, "gpu.fb_used_mib") == {
        gpu + "2": 66211.0,
        gpu + "3": 66211.0,
    }  # whole GPUs only
    assert len(batch.entity) == len(
        {(e, s) for e, s in zip(batch.entity.tolist(), batch.signal.tolist(), strict=True)}
    )


def test_mig_flex_4x_one_xid_on_four_instances_is_one_event() -> None:
    topo = fleet(MIG_NODE)
    t = DcgmTarget(
        topo, DcgmSourceConfig(), target=ScrapeTarget("http://a100-mig-03:9400/metrics", "a100-mig-03")
    )
    text = fixture("a100-mig-flex-exporter-4.x.prom")
    before = re.sub(r',xid="94"(.*)\} 1$', r"\1} 0", text, flags=re.MULTILINE)  # the same scrape 30 s earlier
    assert before != text
    assert xids(topo, read(t, before, 1000.0)[0]) == []
    assert xids(topo, read(t, text, 1030.0)[0]) == [("gpu/a100-mig-03/0", 94)]


def test_mig_without_instances_in_the_inventory_still_reads_every_gpu_field() -> None:
    topo = fleet(("a100-mig-03", 4, ""))
    t = DcgmTarget(
        topo, DcgmSourceConfig(), target=ScrapeTarget("http://a100-mig-03:9400/metrics", "a100-mig-03")
    )
    batch, tally = read(t, fixture("a100-mig-flex-exporter-4.x.prom"))
    assert len(by_entity(topo, batch, "gpu.temp_c")) == 4 and len(by_entity(topo, batch, "gpu.power_w")) == 4
    why = "a MIG instance the inventory does not list (name the node's instances in its mig column)"
    assert dict(tally.rejected) == {why: 6 * 5}  # FB used/free and three profiling fields, six instances
    assert "GPU_I_ID=" in tally.examples[why]


def test_mig_2x_whole_gpu_and_instance_series() -> None:
    topo = fleet(("a100-k8s-01", 1, "0:13"))
    t = DcgmTarget(topo, DcgmSourceConfig(), target=ScrapeTarget("http://10.0.0.5:9400/metrics", "10.0.0.5"))
    batch, tally = read(t, fixture("a100-mig-gpu-and-instances-exporter-2.x.prom"))
    assert not tally.rejected
    assert by_entity(topo, batch, "gpu.gr_engine_active") == {"gpu/a100-k8s-01/0": 0.99563}
    assert by_entity(topo, batch, "mig.gr_engine_active") == {"gpu/a100-k8s-01/0/mig/13": 0.995687}
    assert by_entity(topo, batch, "mig.dram_active") == {"gpu/a100-k8s-01/0/mig/13": 0.800339}
    assert by_entity(topo, batch, "gpu.fb_used_mib") == {"gpu/a100-k8s-01/0": 4845.0}


# ---- Kubernetes: the exporter pod's name as Hostname --------------------------------------------
@pytest.mark.parametrize(
    "name", ["b200-k8s-podname-exporter-4.x.prom", "b200-k8s-podname-exporter-head.prom"]
)
def test_k8s_pod_name_is_one_notice_per_target_until_the_target_names_the_node(name: str) -> None:
    topo = fleet(("gpu-b200-07", 8, ""))
    text = fixture(name)
    pod_ip = DcgmTarget(
        topo, DcgmSourceConfig(), target=ScrapeTarget("http://10.42.3.17:9400/metrics", "10.42.3.17")
    )
    batch, tally = read(pod_ip, text)
    assert len(batch) == 0
    notes = tally.notices("dcgm", "1 endpoint(s)")
    assert len(notes) == 1, notes  # one for the target, not one per GPU or field
    assert notes[0].message.startswith(
        "80 series skipped: no node of the inventory named for http://10.42.3.17:9400/metrics"
    )
    assert "label Hostname 'nvidia-dcgm-exporter-x7k2p'" in notes[0].message
    named = DcgmTarget(topo, DcgmSourceConfig(endpoints=({"url": "http://10.42.3.17:9400/metrics", "node": "gpu-b200-07"},)),
                       target=ScrapeTarget("http://10.42.3.17:9400/metrics", "gpu-b200-07"))  # fmt: skip
    batch, tally = read(named, text)
    assert not tally.rejected
    assert by_entity(topo, batch, "gpu.row_remap_failure") == {
        f"gpu/gpu-b200-07/{i}": float(i == 6) for i in range(8)
    }
    assert by_entity(topo, batch, "gpu.power_w")["gpu/gpu-b200-07/0"] == 981.402


def json_handler(body: bytes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


def test_prometheus_answer_names_the_node_in_a_relabelled_label() -> None:
    topo = fleet(("gpu-b200-07", 8, ""))
    body = (FIXTURES / "prometheus-query-k8s-b200.json").read_bytes()
    with serve(json_handler(body)) as url:
        plain = PrometheusApiSource(PrometheusApiConfig(url=url), topo).collect(1764932400.0)
        cfg = PrometheusApiConfig(url=url, node_from=("target", "Hostname", "kubernetes_node"))
        named = PrometheusApiSource(cfg, topo).collect(1764932400.0)
    assert len(plain.batch) == 0 and len(plain.notices) == 1
    assert (
        "no node of the inventory named for instance '10.42.3.17:9400': target '10.42.3.17'"
        in plain.notices[0].message
    )
    assert named.notices == ()
    assert by_entity(topo, named.batch, "gpu.temp_c") == {
        "gpu/gpu-b200-07/0": 46.0,
        "gpu/gpu-b200-07/1": 47.0,
    }
    assert np.all(named.batch.timestamp == 1764932400.123)
    assert json.loads(body)["data"]["result"][0]["metric"]["exported_pod"] == "pretrain-worker-0"


def test_h100_4x_through_the_engine_fails_the_gpu_whose_double_bit_error_the_gauge_hid() -> None:
    from seamguard.config import load_config
    from seamguard.control.controller import Controller

    topo, t = h100()
    ctl = Controller(topo, load_config())
    ctl.tick(1000.0, read(t, fixture("h100-exporter-4.x-t0.prom"), 1000.0)[0])
    res = ctl.tick(1030.0, read(t, fixture("h100-exporter-4.x-t1.prom"), 1030.0)[0])
    states = {tr.entity: (tr.to_state, tr.reason) for tr in res.transitions}
    assert states["gpu/dgx-h100-017/3"][0] == "failed" and "XID 48" in states["gpu/dgx-h100-017/3"][1]
    assert states["gpu/dgx-h100-017/5"][0] == "failed" and "XID 79" in states["gpu/dgx-h100-017/5"][1]
    assert {e for e in states if e.startswith("gpu/")} == {"gpu/dgx-h100-017/3", "gpu/dgx-h100-017/5"}
