"""Exposition parsing throughput for DCGM-shaped text: samples per second on one core.

Renders one dcgm-exporter payload per node (8 GPUs x 13 series: 12 fields and the windowed XID
count's 0-valued series, with the labels dcgm-exporter sets) with the twin's exporter from seeded
synthetic values (not timed), then times, per node text as the scrape source does it:

* cold: a fresh per-endpoint key cache (every label set parsed and resolved once);
* warm: the next scrape, every key cached (the steady state);
* warm + convert: also the DCGM mapping to a TelemetryBatch (sentinels, sums, XIDs);
* prometheus_client's ``text_string_to_metric_families`` on a smaller fleet, for comparison;
* push batches (``POST /v1/push`` bodies, without the HTTP): JSON columns, JSON rows and NDJSON
  of ``--push-rows`` rows each, validated, mapped and queued by ``PushSource.ingest``.

    python bench/ingest.py                      # 131,072 GPUs
    python bench/ingest.py --gpus 16384 --client-gpus 2048
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from rich.console import Console
from rich.progress import Progress

from seamguard.model.catalog import signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology, build_topology
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.dcgm import DcgmTarget, ScrapeTarget, SlotTable
from seamguard.telemetry.sources.dcgm_config import DcgmSourceConfig
from seamguard.telemetry.sources.openmetrics import parse
from seamguard.telemetry.sources.push import PushSource
from seamguard.telemetry.sources.push_limits import RateLimit
from seamguard.twin.cluster import ClusterSpec, generate_cluster
from seamguard.twin.exporter import DcgmRenderer

PUSH_T0 = 1.7e9  # the push bodies' first stamp, and the clock the push source checks them against
GPN = 8
LEVELS = {  # signal -> (mean, spread): plausible H100 readings
    "gpu.temp_c": (65.0, 5.0), "gpu.mem_temp_c": (75.0, 5.0), "gpu.sm_clock_mhz": (1980.0, 20.0),
    "gpu.power_w": (600.0, 60.0), "gpu.util_pct": (95.0, 3.0), "gpu.throttle_reasons": (0.0, 0.0),
    "gpu.ecc_sbe_total": (3.0, 0.0), "gpu.ecc_dbe_total": (0.0, 0.0), "gpu.nvlink_errors_total": (12.0, 0.0),
    "gpu.pcie_replay_total": (1.0, 0.0), "gpu.row_remap_pending": (0.0, 0.0),
}  # fmt: skip


def fleet(gpus: int) -> Topology:
    nodes = max(gpus // GPN, 1)
    per_rack = 8
    racks = max(nodes // per_rack, 1)
    spec = ClusterSpec(
        cdus=max(racks // 16, 1), racks_per_cdu=min(16, racks), nodes_per_rack=per_rack, gpus_per_node=GPN
    )
    return build_topology(generate_cluster(spec))


def node_texts(topo: Topology, seed: int, progress: Progress) -> list[str]:
    """One exporter payload per node, from seeded values."""
    cat = signal_catalog()
    rng = np.random.default_rng(seed)
    renderer = DcgmRenderer(topo)
    gpus = topo.members[EntityKind.GPU]
    n_nodes = topo.count(EntityKind.NODE)
    sigs = [cat[s].index for s in LEVELS]
    vals = np.stack([m + s * rng.standard_normal(gpus.size) for m, s in LEVELS.values()])  # (signals, gpus)
    texts: list[str] = []
    task = progress.add_task(f"render {n_nodes} node payloads", total=n_nodes)
    for n in range(n_nodes):
        lo, hi = n * GPN, (n + 1) * GPN
        ent = np.tile(gpus[lo:hi], len(sigs))
        sig = np.repeat(np.asarray(sigs, dtype=np.int64), hi - lo)
        batch = TelemetryBatch(ent, sig, np.zeros(ent.size), vals[:, lo:hi].ravel())
        texts.append(renderer.render(batch, nodes=[n]))
        progress.advance(task)
    return texts


def endpoint(node: str) -> ScrapeTarget:
    """One exporter per node, as the scrape source sets it up: its URL names the node."""
    return ScrapeTarget(f"http://{node}:9400/metrics", node)


def time_parse(texts: list[str], targets: list[DcgmTarget], *, convert: bool) -> tuple[float, int]:
    """As the scrape source does it: parse per endpoint, then one conversion for the poll."""
    samples = 0
    parts = []
    t0 = time.perf_counter()
    for text, target in zip(texts, targets, strict=True):
        p = parse(text, target.cache, where="bench", openmetrics=False)
        samples += len(p)
        if convert:
            parts.append(p)
    if convert:
        batch, _ = targets[0].table.convert(
            np.concatenate([p.slot for p in parts]), np.concatenate([p.value for p in parts]),
            np.concatenate([p.timestamp for p in parts]), 0.0,
        )  # fmt: skip
        samples = len(batch)
    return time.perf_counter() - t0, samples


def time_client(texts: list[str]) -> tuple[float, int]:
    from prometheus_client.parser import text_string_to_metric_families

    samples = 0
    t0 = time.perf_counter()
    for text in texts:
        for fam in text_string_to_metric_families(text):
            samples += len(fam.samples)
    return time.perf_counter() - t0, samples


def push_bodies(topo: Topology, rows: int, seed: int) -> dict[str, tuple[bytes, str]]:
    """The same seeded GPU temperatures as each push format's body (built once, not timed)."""
    rng = np.random.default_rng(seed)
    gpus = topo.members[EntityKind.GPU]
    pick = gpus[rng.integers(0, gpus.size, rows)]
    entity = [topo.ids[g] for g in pick.tolist()]
    ts = (PUSH_T0 + np.arange(rows) * 1e-3).tolist()
    value = np.round(rng.normal(65.0, 5.0, rows), 2).tolist()
    signal = ["gpu.temp_c"] * rows
    rows_list = [{"entity": e, "signal": "gpu.temp_c", "timestamp": t, "value": v}
                 for e, t, v in zip(entity, ts, value, strict=True)]  # fmt: skip
    return {
        "columns": (json.dumps({"entity": entity, "signal": signal, "timestamp": ts, "value": value}).encode(),
                    "application/json"),
        "rows": (json.dumps({"rows": rows_list}).encode(), "application/json"),
        "ndjson": ("\n".join(json.dumps(r) for r in rows_list).encode(), "application/x-ndjson"),
    }  # fmt: skip


def time_push(topo: Topology, bodies: dict[str, tuple[bytes, str]], repeat: int) -> dict[str, float]:
    """Samples per second through ``PushSource.ingest`` (validate, map, queue) and a drain."""
    out: dict[str, float] = {}
    for fmt, (body, ctype) in bodies.items():
        source = PushSource(
            topo,
            capacity_rows=10**8,
            max_body_bytes=len(body) + 1,
            max_queue_share=1.0,
            rate_limit=RateLimit(1e12, 10**9),  # the pipeline's speed, not the per-client limit
            clock=lambda: PUSH_T0,  # the bodies' stamps are recent to it
        )
        accepted = 0
        t0 = time.perf_counter()
        for _ in range(repeat):
            accepted += source.ingest(body, ctype).accepted
            source.collect(0.0)
        out[fmt] = accepted / (time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpus", type=int, default=131_072)
    ap.add_argument("--client-gpus", type=int, default=4096, help="fleet size for prometheus_client's parser")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--push-rows", type=int, default=200_000, help="rows per push batch")
    args = ap.parse_args()
    console = Console(stderr=True)
    topo = fleet(args.gpus)
    n_nodes = topo.count(EntityKind.NODE)
    cfg = DcgmSourceConfig()
    with Progress(console=console, transient=True) as progress:
        texts = node_texts(topo, args.seed, progress)
        texts2 = node_texts(topo, args.seed + 1, progress)  # the next scrape: new values, same keys
    mb = sum(len(t) for t in texts) / 1e6
    table = SlotTable(topo, cfg)
    names = topo.names[EntityKind.NODE]
    targets = [DcgmTarget(topo, cfg, target=endpoint(names[n]), table=table) for n in range(n_nodes)]
    cold_s, n = time_parse(texts, targets, convert=False)
    warm_s, n2 = time_parse(texts2, targets, convert=False)
    conv_s, n3 = time_parse(texts, targets, convert=True)
    k = max(args.client_gpus // GPN, 1)
    client_s, nc = time_client(texts[:k])
    mine_s, nm = time_parse(
        texts[:k], [DcgmTarget(topo, cfg, target=endpoint(names[n])) for n in range(k)], convert=False
    )
    push = time_push(topo, push_bodies(topo, args.push_rows, args.seed), repeat=3)
    out = {
        "gpus": topo.count(EntityKind.GPU),
        "endpoints": n_nodes,
        "payload_mb": round(mb, 1),
        "samples": n,
        "cold_samples_per_s": round(n / cold_s),
        "warm_samples_per_s": round(n2 / warm_s),
        "warm_convert_samples_per_s": round(n3 / conv_s),
        "warm_scrape_s": round(warm_s, 2),
        "client_gpus": k * GPN,
        "prometheus_client_samples_per_s": round(nc / client_s),
        "cold_same_input_samples_per_s": round(nm / mine_s),
        "push_rows": args.push_rows,
        **{f"push_{fmt}_samples_per_s": round(v) for fmt, v in push.items()},
    }
    console.print(
        f"[bold]{out['gpus']:,} GPUs[/], {n_nodes:,} endpoints, {n:,} samples, {mb:.0f} MB of text\n"
        f"  cold key cache        {out['cold_samples_per_s']:>12,} samples/s\n"
        f"  warm key cache        {out['warm_samples_per_s']:>12,} samples/s  ({warm_s:.2f} s per fleet scrape)\n"
        f"  warm + DCGM mapping   {out['warm_convert_samples_per_s']:>12,} samples/s\n"
        f"  prometheus_client     {out['prometheus_client_samples_per_s']:>12,} samples/s  "
        f"(ours, cold, same {k * GPN:,} GPUs: {out['cold_same_input_samples_per_s']:,})\n"
        + "".join(
            f"  push, {fmt:<16}{v:>12,.0f} samples/s  ({args.push_rows:,}-row batches)\n"
            for fmt, v in push.items()
        )
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
