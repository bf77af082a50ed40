"""The admission gateway's cost and its budgets under load, on loopback.

Starts the test upstream (``tests/openai_upstream.py``: vLLM's OpenAI format, no model behind it,
so its own latency is tiny and what the gateway adds shows) and ``seamguard gateway`` in front of
it, each in a process of its own (the gateway: one process, one event loop, so one core); the
clients run in this one. Four phases:

1. ``direct``: clients hit the upstream itself (half streamed, half not);
2. ``gateway``: the same load through the gateway (a key with a budget it never reaches);
3. ``alone``: one client, direct then through the gateway (half as long): the latency a request
   pays with no queue in front of any process;
4. ``overshoot``: 100 concurrent clients on one key with a small budget, streamed and not, until
   it is spent: tokens the upstream served past the budget, in % of it.

Added latency = a percentile of per-request time through the gateway minus the same percentile
direct (streams: until the last byte). On a shared machine the three processes compete for its
cores, so requests/s moves with the machine's load; the CPU time each process spent per request
(from ``/proc``, through ``psutil``) does much less, and is printed too, with the load average.
Prints a table, then as its last line one JSON object.

    python bench/gateway.py            # ~40 s
    python bench/gateway.py --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' upstream and harness
from tests.gateway_harness import VIEWER, auth, chat, config

CHAT = "/v1/chat/completions"


async def _one(client: httpx.AsyncClient, body: dict[str, object]) -> tuple[float, int]:
    t0 = time.perf_counter()
    if body.get("stream"):
        async with client.stream("POST", CHAT, content=json.dumps(body)) as r:
            async for _ in r.aiter_raw():
                pass
            status = r.status_code
    else:
        status = (await client.post(CHAT, content=json.dumps(body))).status_code
    return time.perf_counter() - t0, status


async def drive(
    url: str, headers: dict[str, str], seconds: float, concurrency: int, seed: int
) -> list[float]:
    """Closed-loop load for ``seconds``: each client sends its next request when the last ends."""
    stop = time.monotonic() + seconds
    times: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=limits) as client:
            while time.monotonic() < stop:
                took, status = await _one(
                    client, chat(max_tokens=16, stream=rng.random() < 0.5, text="x" * 200)
                )
                if status == 200:
                    times.append(took)

    await asyncio.gather(*(client_loop(i) for i in range(concurrency)))
    return times


async def overshoot(key: str, url: str, clients: int, seconds: float) -> tuple[int, int]:
    """``clients`` clients on one key until each is refused for its budget: (admitted, refused)."""
    stop = time.monotonic() + seconds
    counts = [0, 0]

    async def client_loop(i: int) -> None:
        rng = random.Random(i)
        async with httpx.AsyncClient(base_url=url, headers=auth(key), timeout=60) as client:
            while time.monotonic() < stop:
                body = chat(
                    max_tokens=rng.randint(4, 40), stream=rng.random() < 0.5, text="x" * rng.randint(10, 400)
                )
                _, status = await _one(client, body)
                counts[0] += status == 200
                counts[1] += status == 429
                if status == 429:
                    return

    await asyncio.gather(*(client_loop(i) for i in range(clients)))
    return counts[0], counts[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_up(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not answer at {url}")


@dataclass(frozen=True)
class Procs:
    up_url: str
    gw_url: str
    up: psutil.Process
    gw: psutil.Process

    def cpu_s(self) -> tuple[float, float]:
        """CPU seconds (user + system) the upstream and the gateway have spent so far."""
        return tuple(sum(p.cpu_times()[:2]) for p in (self.up, self.gw))  # type: ignore[return-value]


@contextmanager
def processes(tmp: Path, budget: int) -> Iterator[Procs]:
    """The upstream (``python -m tests.openai_upstream``) and ``seamguard gateway`` in processes
    of their own."""
    root = Path(__file__).resolve().parents[1]
    up_port, gw_port = _free_port(), _free_port()
    up_url, gw_url = f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{gw_port}"
    data = config(tmp / "j.sqlite", [("u", up_url)])
    data["gateway"]["keys"][0]["budget"] = {"tokens": 10**12}
    data["gateway"]["keys"][1]["budget"] = {"tokens": budget}
    cfg = tmp / "gateway.yaml"
    cfg.write_text(json.dumps(data))  # JSON is YAML
    up = subprocess.Popen([sys.executable, "-m", "tests.openai_upstream", str(up_port)], cwd=root)
    gw = subprocess.Popen([str(Path(sys.executable).parent / "seamguard"), "gateway", "--config", str(cfg),
                           "--listen", f"127.0.0.1:{gw_port}"], cwd=root, stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait_up(up_url + "/stats", up, "the upstream")
        _wait_up(gw_url + "/healthz", gw, "the gateway")
        yield Procs(up_url, gw_url, psutil.Process(up.pid), psutil.Process(gw.pid))
    finally:
        for proc in (gw, up):
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def _metric(text: str, start: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(start))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each latency phase")
    ap.add_argument("--concurrency", type=int, default=8, help="clients in the latency phases")
    ap.add_argument("--budget", type=int, default=30_000, help="the overshoot phase's budget (tokens)")
    args = ap.parse_args()
    console = Console(stderr=True)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, processes(Path(tmp), args.budget) as procs:
        up_url, gw_url = procs.up_url, procs.gw_url
        console.print(
            f"upstream {up_url}, gateway {gw_url}: {args.seconds:g} s a phase, {args.concurrency} clients"
        )
        c0, t0 = procs.cpu_s(), time.perf_counter()
        direct = np.array(asyncio.run(drive(up_url, {}, args.seconds, args.concurrency, 1))) * 1000
        wall_direct = time.perf_counter() - t0
        c1 = procs.cpu_s()
        t0 = time.perf_counter()
        through = np.array(asyncio.run(drive(gw_url, auth(), args.seconds, args.concurrency, 1))) * 1000
        wall = time.perf_counter() - t0
        c2 = procs.cpu_s()
        # one client alone: what a request pays with no queue in front of any of the processes
        alone = args.seconds / 2
        direct1 = np.array(asyncio.run(drive(up_url, {}, alone, 1, 2))) * 1000
        through1 = np.array(asyncio.run(drive(gw_url, auth(), alone, 1, 2))) * 1000
        served_before = httpx.get(up_url + "/stats").json()["served_tokens"]
        ok, refused = asyncio.run(overshoot("bob", gw_url, 100, 60.0))
        time.sleep(0.5)  # the last streams' settlement
        served = httpx.get(up_url + "/stats").json()["served_tokens"] - served_before
        text = httpx.get(gw_url + "/metrics", headers={"authorization": f"Bearer {VIEWER}"}).text
    spent = int(_metric(text, 'seamguard_gateway_tokens_settled_total{key="bob"'))
    n_inside = _metric(text, "seamguard_gateway_added_latency_seconds_count")
    mean_inside = _metric(text, "seamguard_gateway_added_latency_seconds_sum") / max(1.0, n_inside) * 1000
    p = {q: (float(np.percentile(direct, q)), float(np.percentile(through, q))) for q in (50, 99)}
    over = max(0.0, (max(served, spent) - args.budget) / args.budget * 100)
    table = Table(title="seamguard gateway on loopback (upstream, gateway and clients: a process each)")
    for col in ("", "direct", "through the gateway", "added"):
        table.add_column(col, justify="right")
    for q, (d, t) in p.items():
        table.add_row(f"p{q} ms", f"{d:.2f}", f"{t:.2f}", f"{t - d:.2f}")
    p1 = {q: (float(np.percentile(direct1, q)), float(np.percentile(through1, q))) for q in (50, 99)}
    for q, (d, t) in p1.items():
        table.add_row(f"p{q} ms, 1 client", f"{d:.2f}", f"{t:.2f}", f"{t - d:.2f}")
    table.add_row("requests", f"{len(direct):,}", f"{len(through):,}", "")
    table.add_row("requests/s", f"{len(direct) / wall_direct:.0f}", f"{len(through) / wall:.0f}", "")
    up_direct = (c1[0] - c0[0]) / max(1, len(direct)) * 1000
    up_through, gw_cpu = ((c2[i] - c1[i]) / max(1, len(through)) * 1000 for i in (0, 1))
    table.add_row("upstream CPU ms/request", f"{up_direct:.2f}", f"{up_through:.2f}", "")
    table.add_row("gateway CPU ms/request", "", f"{gw_cpu:.2f}", f"{gw_cpu:.2f}")
    console.print(table)
    console.print(f"the gateway's own added-latency histogram: mean {mean_inside:.3f} ms a request")
    console.print(
        f"load average at the start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores)"
    )
    console.print(f"overshoot: budget {args.budget:,} tokens, 100 clients: {ok} admitted, {refused} refused; "
                  f"upstream served {served:,}, gateway charged {spent:,}: overshoot {over:.2f} %")  # fmt: skip
    print(json.dumps({
        "token_overshoot_pct": round(over, 3),
        "added_latency_p50_ms": round(p[50][1] - p[50][0], 3),
        "added_latency_p99_ms": round(p[99][1] - p[99][0], 3),
        "added_latency_p50_ms_1_client": round(p1[50][1] - p1[50][0], 3),
        "added_latency_p99_ms_1_client": round(p1[99][1] - p1[99][0], 3),
        "requests_per_s": round(len(through) / wall, 1),
        "direct_p50_ms": round(p[50][0], 3),
        "direct_p99_ms": round(p[99][0], 3),
        "gateway_inside_mean_ms": round(mean_inside, 3),
        "gateway_cpu_ms_per_request": round(gw_cpu, 3),
        "upstream_cpu_ms_per_request": round(up_direct, 3),
        "load_average_1m": round(load[0], 2),
        "overshoot_budget_tokens": args.budget,
        "overshoot_served_tokens": served,
        "overshoot_charged_tokens": spent,
        "overshoot_admitted": ok,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
