"""`seamguard run` replicas as real processes on a real etcd, each enforcing through a webhook to
one sink: a leader paused with SIGSTOP past its lease, then resumed with SIGCONT, carries out
nothing and writes nothing, asserted against what the sink received and the replica's own journal;
and a leader killed with SIGKILL is replaced within TTL plus one tick (bench/failover.py measures it
over many runs)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from seamguard.ha.etcd import Etcd
from seamguard.ha.settings import HaConfig
from seamguard.journal.sqlite import SqliteJournal
from tests.etcd_cluster import etcd_cluster
from tests.ha_replicas import (
    TICK_S,
    Replica,
    Sink,
    config,
    first_leader,
    hot_body,
    leader_of,
    leaderships,
    pusher,
    sink_server,
    wait_for,
    write_world,
)
from tests.test_haproxy import haproxy  # noqa: F401 - the real HAProxy fixture

TTL_S = 3
SLURM_TTL_S = 6  # real Slurm and HAProxy beside etcd load the machine: more room before a lease lapses


@pytest.mark.slow
def test_a_paused_leader_carries_out_nothing_when_it_wakes(tmp_path: Path) -> None:
    with etcd_cluster(tmp_path) as cluster, sink_server() as sink:
        cfg = config(tmp_path, sink, cluster.endpoints, TTL_S)
        ha = HaConfig.model_validate(yaml.safe_load(cfg.read_text())["ha"])
        etcd = Etcd(ha)
        inv, jobs = write_world(tmp_path)
        replicas = [Replica(f"r{i}", tmp_path, cfg, inv, jobs) for i in range(2)]
        for r in replicas:
            r.start()
        stop = threading.Event()
        feeding = threading.Thread(target=pusher, args=(replicas, stop), daemon=True)
        feeding.start()
        try:
            victim, old_epoch = first_leader(etcd, ha.key, replicas)
            wait_for("the leader acting", lambda: Sink.actions() >= 3, 30)
            # Paused while its next action's request is being answered: a request already on the
            # wire when a leader freezes lands whenever it wakes, which only the receiver can refuse
            # (docs/ha.md); this one is received before the takeover, like any earlier one.
            with Sink.lock:
                Sink.pause_on = (victim.pid, old_epoch)
            wait_for("the pause", lambda: Sink.pause_on is None, 30)
            took = wait_for(
                "a takeover", lambda: (leader_of(etcd, ha.key) or ("", old_epoch))[1] != old_epoch, 30
            )
            assert took <= TTL_S + TICK_S + 1.0  # from the pause (the lease was renewed just before)
            new = leader_of(etcd, ha.key)
            assert new is not None and not new[0].endswith(f":{victim.pid}")
            wait_for("the new leader acting", lambda: Sink.epochs[-1] == new[1] if Sink.epochs else False, 30)
            mark = Sink.actions()
            os.kill(victim.pid, signal.SIGCONT)  # it wakes with a backlog of hot pushes and a stale belief
            time.sleep(3 * TICK_S + 2.0)
            with Sink.lock:
                after = Sink.epochs[mark:]
            assert after and old_epoch not in after and set(after) == {new[1]}
            assert Sink.stale == 0
            assert victim.proc is not None and victim.proc.poll() is None  # it lives on, as a follower
        finally:
            stop.set()
            for r in replicas:
                r.stop()
        # what the woken replica journaled after its pause: nothing carried out under its epoch
        with SqliteJournal(victim.journal, read_only=True) as journal:
            late = [r for r in journal.action_results() if r.status == "done" and r.epoch == old_epoch]
            done_times = [r.ts for r in late]
        assert (
            len(done_times) == len([e for e in Sink.epochs if e == old_epoch]) >= 1
        )  # before the pause only


@pytest.mark.slow
def test_a_paused_leader_leaves_slurm_and_haproxy_untouched_when_it_wakes(
    tmp_path: Path,
    haproxy: str,  # noqa: F811 - the fixture imported above
) -> None:
    """Two replicas enforcing through a real Slurm and a real HAProxy (and the webhook). The leader
    drains n000 (Slurm) and n002 (HAProxy), then is stopped with SIGSTOP; the other takes over.
    Pushes saying n001 (Slurm) and n003 (HAProxy) run hot go to the stopped one only and wait in its
    socket. Resumed with SIGCONT, it reads them, decides to drain both, and changes nothing: read
    back from Slurm's node states (scontrol) and HAProxy's runtime API.

    Should the new leader itself lose the key on a loaded machine and the woken one win it again
    (a newer epoch, seen by ``leaderships``), acting is then its right: the test still asserts that
    nothing was carried out under the epoch it was deposed from."""
    from seamguard.actuators.haproxy import HaproxyActuator, HaproxyConfig
    from seamguard.telemetry.sources.slurm_states import parse_node_state
    from tests.slurm_cluster import slurm_cluster
    from tests.test_slurm import state_of

    servers = {"node/n002": "be_app/s1", "node/n003": "be_app/s2"}
    with (
        etcd_cluster(tmp_path) as cluster,
        sink_server() as sink,
        slurm_cluster(tmp_path / "slurm", dead_nodes=0, names=["n000", "n001"]) as sl,
    ):
        slurm = {"scontrol": sl.bins["scontrol"], "squeue": sl.bins["squeue"], "sinfo": sl.bins["sinfo"],
                 "slurm_conf": str(sl.conf), "mode": "enforce"}  # fmt: skip
        more = {"slurm": slurm, "haproxy": {"socket": haproxy, "servers": servers, "mode": "enforce"}}
        cfg = config(tmp_path, sink, cluster.endpoints, SLURM_TTL_S, more)
        ha = HaConfig.model_validate(yaml.safe_load(cfg.read_text())["ha"])
        etcd = Etcd(ha)
        read = HaproxyActuator(HaproxyConfig(socket=haproxy, servers=servers))

        def slurm_drained(node: str) -> bool:
            return "DRAIN" in parse_node_state(state_of(sl.node_line(node))).flags

        def haproxy_state(server: str) -> str:
            found = read.server_state("be_app", server)
            return found.state if found is not None else "?"

        inv, jobs = write_world(tmp_path)
        replicas = [Replica(f"r{i}", tmp_path, cfg, inv, jobs) for i in range(2)]
        for r in replicas:
            r.start()
        with leaderships(etcd, ha.key) as seen, httpx.Client(timeout=30.0, trust_env=False) as client:
            try:
                victim, old_epoch = first_leader(etcd, ha.key, replicas)
                other = next(r for r in replicas if r is not victim)

                def push(r: Replica, gpus: list[str]) -> None:
                    with contextlib.suppress(httpx.HTTPError):
                        client.post(f"http://127.0.0.1:{r.port}/v1/push", json=hot_body(gpus))

                for _ in range(60):  # the leader drains n000 and n002
                    for r in replicas:
                        push(r, ["gpu/n000/0", "gpu/n002/0"])
                    if slurm_drained("n000") and haproxy_state("s1") == "drain":
                        break
                    time.sleep(1.0)
                assert slurm_drained("n000") and haproxy_state("s1") == "drain"
                assert not slurm_drained("n001") and haproxy_state("s2") == "ready"
                os.kill(victim.pid, signal.SIGSTOP)
                wait_for(
                    "a takeover", lambda: (leader_of(etcd, ha.key) or ("", old_epoch))[1] != old_epoch, 30
                )
                took = leader_of(etcd, ha.key)
                took_epoch = took[1] if took is not None else old_epoch + 1
                for _ in range(3):  # the new leader keeps seeing n000 and n002 hot; nothing else
                    push(other, ["gpu/n000/0", "gpu/n002/0"])
                    time.sleep(1.0)
                late = threading.Thread(target=push, args=(victim, ["gpu/n001/0", "gpu/n003/0"]), daemon=True)
                late.start()  # waits in the stopped replica's socket
                time.sleep(1.0)
                os.kill(victim.pid, signal.SIGCONT)
                late.join(timeout=30)
                time.sleep(3 * TICK_S + 2.0)
                n001_drained, s2_state = slurm_drained("n001"), haproxy_state("s2")
                led = list(seen)  # before the stops below, which hand the key on
                assert victim.proc is not None and victim.proc.poll() is None
            finally:
                for r in replicas:
                    r.stop()
        with SqliteJournal(victim.journal, read_only=True) as journal:
            woke = [r for r in journal.action_results() if r.target in ("node/n001", "node/n003")]
        done = [r for r in woke if r.status == "done"]
        assert all(r.epoch != old_epoch for r in done), done  # never under the epoch it was deposed from
        # An epoch is a leadership (the key's create revision), and the fence carried these out only
        # while the key held it in the victim's name: done at all, they were done under a leadership
        # newer than the takeover, one the victim won again (the watcher polls, so it may miss one).
        assert all(r.epoch > took_epoch for r in done), (done, took_epoch, led)
        won_again = {e for n, e in led if n.endswith(f":{victim.pid}") and e > old_epoch}
        if not won_again and not done:  # the usual case: it woke deposed and stayed so
            assert not n001_drained and s2_state == "ready", (led, s2_state)
