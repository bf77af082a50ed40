"""The console with a fleet of 131,072 GPUs: first render and a live update, in a real browser.

A daemon is built over 16,384 nodes of eight GPUs (64 CDUs of eight racks of 32 nodes) and fed one
synthetic reading per GPU a tick (a seeded few hot, so racks turn unwell); its API and console are
served on loopback. Debian's Chromium, driven by Playwright, signs in and the bench measures:

- ``first_render_s``: from the navigation to the console until the fleet (every CDU and rack) is
  on the page;
- ``live_update_s``: from the end of an engine tick until the page shows that tick (the live
  stream's notice, the fleet's fetch and its render);
- ``tick_s``: the engine tick itself, for scale (not part of the console's figures).

    python bench/console.py --updates 5

The last line is one JSON object: entities, gpus, first_render_s, live_update_s (the median of the
updates), live_update_max_s, tick_s, fleet_json_bytes.
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import sys
import threading
import time

import numpy as np
from rich.console import Console

from seamguard.daemon import Daemon
from seamguard.daemon_run import serve_api
from seamguard.model.catalog import signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import Inventory, NodeRecord
from seamguard.model.topology import Topology, build_topology
from seamguard.service.auth import digest_of, new_token
from seamguard.service.sections import AuthConfig, Role, ServiceConfig, TokenEntry
from seamguard.service.startup import build_security
from seamguard.site_config import DaemonConfig, SiteConfig, daemon_config_from_mapping
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.base import Collected

console = Console(stderr=True)
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


def fleet(cdus: int = 64, racks: int = 8, nodes: int = 32, gpus: int = 8) -> Topology:
    records = [
        NodeRecord(node=f"n{c:02d}{r}{n:02d}", rack=f"r{c:02d}{r}", cdu=f"c{c:02d}", leaf=f"l{c:02d}{r}", gpus=gpus,
                   storage="ckpt0")
        for c in range(cdus) for r in range(racks) for n in range(nodes)
    ]  # fmt: skip
    return build_topology(Inventory(tuple(records)))


class Synthetic:
    """Every GPU's temperature each tick; a seeded 0.2 % run hot (97 °C), more each tick."""

    name = "synthetic"

    def __init__(self, topo: Topology, seed: int = 0) -> None:
        self.gpus = topo.members[EntityKind.GPU].astype(np.int64)
        self.signal = signal_catalog()["gpu.temp_c"].index
        self.rng = np.random.default_rng(seed)
        self.hot = np.zeros(self.gpus.size, dtype=bool)

    def collect(self, now: float) -> Collected:
        self.hot[self.rng.choice(self.gpus.size, size=max(1, self.gpus.size // 500), replace=False)] = True
        temps = np.where(self.hot, 97.0, 60.0 + self.rng.normal(0, 1.5, self.gpus.size))
        n = self.gpus.size
        return Collected(
            TelemetryBatch(self.gpus, np.full(n, self.signal, dtype=np.int64), np.full(n, now - 0.5), temps)
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--updates", type=int, default=5, help="live updates to time")
    ap.add_argument(
        "--cdus", type=int, default=64, help="CDUs of 8 racks of 32 nodes of 8 GPUs (64: 131,072 GPUs)"
    )
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with console.status("building the fleet"):
        topo = fleet(args.cdus)
    token = new_token()
    service = ServiceConfig(
        auth=AuthConfig(tokens=(TokenEntry(name="bench", roles=(Role.VIEWER,), digest=digest_of(token)),))
    )
    base = daemon_config_from_mapping({"engine": {"tick_s": 30, "stale_after_s": 120}})
    config = DaemonConfig(base.policy, SiteConfig(service=service))
    daemon = Daemon(config, topo, [Synthetic(topo)])
    ticks: queue.Queue[tuple[float, threading.Event, list[float]]] = queue.Queue()
    stop = threading.Event()

    def worker() -> None:  # the daemon's own thread, as in `seamguard run`
        while not stop.is_set():
            try:
                now, done, took = ticks.get(timeout=0.1)
            except queue.Empty:
                continue
            started = time.perf_counter()
            daemon.step(now)
            took.append(time.perf_counter() - started)
            done.set()

    threading.Thread(target=worker, daemon=True).start()

    def tick(now: float) -> tuple[float, float]:
        done, took = threading.Event(), []
        ticks.put((now, done, took))
        done.wait()
        return took[0], time.perf_counter()

    t0 = 1.9e9
    with console.status("first ticks"):
        tick_s = [tick(t0 + 30 * k)[0] for k in range(2)]
    server = serve_api(daemon, "127.0.0.1", 0, build_security(service, None))
    fleet_bytes = 0
    try:
        import httpx

        fleet_bytes = len(
            httpx.get(
                server.url + "/v1/fleet",
                headers={"Authorization": f"Bearer {token}"},
                trust_env=False,
                timeout=60,
            ).content
        )
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            page.add_init_script(f"sessionStorage.setItem('seamguard.token', {json.dumps(token)})")
            started = time.perf_counter()
            page.goto(server.url + "/console")
            page.wait_for_selector(f'#fleet[data-version="{daemon.version}"]', timeout=60_000)
            first = time.perf_counter() - started
            racks = page.eval_on_selector_all(".tile", "ts => ts.length")
            assert racks == topo.count(EntityKind.RACK), (racks, topo.count(EntityKind.RACK))
            live: list[float] = []
            for k in range(args.updates):
                took, ended = tick(t0 + 30 * (k + 2))
                tick_s.append(took)
                page.wait_for_selector(f'#fleet[data-version="{daemon.version}"]', timeout=60_000)
                live.append(time.perf_counter() - ended)
                console.print(f"update {k + 1}: tick {took:.2f} s, on the page {live[-1]:.3f} s after it")
            browser.close()
    finally:
        daemon.desk.closing.set()
        server.stop()
        stop.set()
    out = {
        "entities": topo.n_entities,
        "gpus": topo.count(EntityKind.GPU),
        "first_render_s": round(first, 3),
        "live_update_s": round(statistics.median(live), 3),
        "live_update_max_s": round(max(live), 3),
        "tick_s": round(statistics.median(tick_s), 3),
        "fleet_json_bytes": fleet_bytes,
    }
    console.print(f"{out['gpus']:,} GPUs ({out['entities']:,} entities): first render {first:.2f} s, "
                  f"live update {out['live_update_s']:.3f} s (max {out['live_update_max_s']:.3f} s)")  # fmt: skip
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
