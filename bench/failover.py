"""Failover of `seamguard run` replicas when the leader is killed with SIGKILL (docs/ha.md).

Starts a one-member etcd (Debian's etcd-server, on loopback ports of its own), a webhook sink,
and three `seamguard run` replicas with the `ha` section, each enforcing through the sink. Hot
telemetry is pushed to every replica each second, a different node each time, so the leader acts
throughout. Each run kills the current leader with SIGKILL and measures the time until the
election key in etcd names another replica; the killed replica is then started again as a
follower. The sink checks every action it receives against the highest epoch it has seen: an
older one is a stale-epoch action.

    python bench/failover.py --runs 20 --ttl-s 3

The last line is one JSON object: runs, ttl_s, failover_p50_s, failover_p99_s, failover_max_s,
bound_s (ttl_s plus one engine tick: the most a failover may take), stale_epoch_actions, actions.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml
from rich.console import Console
from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' etcd launcher
from tests.etcd_cluster import etcd_cluster
from tests.ha_replicas import TICK_S, Replica, Sink, config, leader_of, pusher, sink_server, write_world

from seamguard.ha.etcd import Etcd
from seamguard.ha.settings import HaConfig

console = Console(stderr=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--ttl-s", type=int, default=3)
    args = ap.parse_args()
    if args.runs < 1 or args.ttl_s < 2:
        ap.error("--runs must be at least 1 and --ttl-s at least 2")
    root = Path(tempfile.mkdtemp(prefix="seamguard-failover-"))
    times: list[float] = []
    with etcd_cluster(root) as cluster, sink_server() as sink:
        cfg = config(root, sink, cluster.endpoints, args.ttl_s)
        ha = HaConfig.model_validate(yaml.safe_load(cfg.read_text())["ha"])
        etcd = Etcd(ha)
        inv, jobs = write_world(root)
        replicas = [Replica(f"r{i}", root, cfg, inv, jobs) for i in range(3)]
        for r in replicas:
            r.start()
        stop = threading.Event()
        push = threading.Thread(target=pusher, args=(replicas, stop), daemon=True)
        push.start()
        try:
            with Progress(console=console) as progress:
                task = progress.add_task("failovers", total=args.runs)
                for _ in range(args.runs):
                    deadline = time.monotonic() + 120
                    while (held := leader_of(etcd, ha.key)) is None:
                        if time.monotonic() > deadline:
                            raise SystemExit(f"no leader within 120 s; logs in {root}")
                        time.sleep(0.05)
                    name, epoch = held
                    victim = next(r for r in replicas if name.endswith(f":{r.pid}"))
                    time.sleep(2.0)  # let the leader act for a while
                    killed = time.monotonic()
                    victim.kill()
                    while True:
                        now_held = leader_of(etcd, ha.key)
                        if now_held is not None and now_held[1] != epoch:
                            times.append(time.monotonic() - killed)
                            break
                        if time.monotonic() - killed > 10 * args.ttl_s:
                            raise SystemExit(f"no new leader within {10 * args.ttl_s} s; logs in {root}")
                        time.sleep(0.02)
                    victim.start()  # back as a follower
                    progress.advance(task)
        finally:
            stop.set()
            for r in replicas:
                r.stop()
    t = np.array(times)
    console.print(f"failover after SIGKILL of the leader, {len(t)} runs, ttl {args.ttl_s} s: "
                  f"p50 {np.percentile(t, 50):.2f} s, p99 {np.percentile(t, 99):.2f} s, max {t.max():.2f} s; "
                  f"actions {Sink.actions()}, stale-epoch actions {Sink.stale}")  # fmt: skip
    print(json.dumps({
        "runs": len(t), "ttl_s": args.ttl_s, "failover_p50_s": round(float(np.percentile(t, 50)), 3),
        "failover_p99_s": round(float(np.percentile(t, 99)), 3), "failover_max_s": round(float(t.max()), 3),
        "bound_s": args.ttl_s + TICK_S, "stale_epoch_actions": Sink.stale, "actions": Sink.actions(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
