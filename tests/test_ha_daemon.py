"""Two daemons on one real etcd (Debian's 3.4), each with an enforcing webhook to the same sink:
only the leader acts, and a deposed leader carries out nothing, asserted against what the sink
received (each request carries the action's epoch) rather than the daemons' own accounts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from seamguard.daemon import Daemon
from seamguard.ha.leadership import Leadership
from seamguard.journal.base import Journal
from seamguard.journal.sqlite import SqliteJournal
from seamguard.model.topology import Topology, build_topology
from seamguard.ops.controls import Verb
from seamguard.site_config import DaemonConfig, daemon_config_from_mapping
from seamguard.telemetry.sources.build import build_sources
from tests.conftest import small_inventory, small_jobs
from tests.etcd_cluster import etcd_cluster
from tests.ha_replicas import Sink, sink_server
from tests.test_daemon import CLOCK, POLICY, payload
from tests.test_haproxy import haproxy  # noqa: F401 - the real HAProxy fixture
from tests.test_ops import ask

FAST = {"ttl_s": 2, "renew_deadline_s": 1.0, "retry_s": 0.4, "request_timeout_s": 0.4}


def ha_config(endpoints: list[str], actuators: dict[str, Any]) -> DaemonConfig:
    """The daemons' config: ``actuators`` enforcing, budgets with room for two drains of 8 nodes."""
    return daemon_config_from_mapping(
        {**POLICY, "actuators": actuators,
         "safety": {"budgets": {"max_fleet_pct": 50.0, "per_hour_pct": 50.0,
                                "partitions": {"fleet": {"min_in_service_pct": 50.0}}}},
         "ha": {"endpoints": endpoints, **FAST}}
    )  # fmt: skip


@contextmanager
def replicas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, DaemonConfig, list[str]]]:
    monkeypatch.setenv("SEAMGUARD_WEBHOOK_SECRET", "s")
    with etcd_cluster(tmp_path) as etcd, sink_server() as url:
        yield url, ha_config(etcd.endpoints, {"webhook": {"url": url, "mode": "enforce"}}), etcd.endpoints


def daemon(config: DaemonConfig, topo: Topology, journal: Journal, leadership: Leadership) -> Daemon:
    return Daemon(config, topo, build_sources(config.site.sources, topo, CLOCK), journal=journal,
                  leadership=leadership)  # fmt: skip


def push(d: Daemon, topo: Topology, ts: float, hot: str) -> None:
    assert d.push is not None
    d.push.ingest(json.dumps(payload(topo, ts, hot=hot)).encode())


def test_only_the_leader_acts_and_a_deposed_one_carries_out_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topo = build_topology(small_inventory(), small_jobs())
    t0 = 1.0e9
    frozen = [0.0]  # a's clock: it never sees its own pause, so only etcd can stop it
    with replicas(tmp_path, monkeypatch) as (_, config, _):
        assert config.site.ha is not None
        with SqliteJournal(tmp_path / "a.sqlite") as ja, SqliteJournal(tmp_path / "b.sqlite") as jb:
            lead_a = Leadership(config.site.ha.model_copy(update={"name": "a"}), clock=lambda: frozen[0])
            lead_b = Leadership(config.site.ha.model_copy(update={"name": "b"}))
            a, b = daemon(config, topo, ja, lead_a), daemon(config, topo, jb, lead_b)
            epoch_a = lead_a.step().epoch
            assert not lead_b.step().leading
            for d in (a, b):
                push(d, topo, t0 - 0.5, "gpu/n02/1")
            acted_a = a.step(t0).actions
            assert [(r.target, r.status, r.epoch) for r in acted_a if r.kind == "drain_node"] == [
                ("node/n02", "done", epoch_a)
            ]
            assert b.step(t0).actions == ()  # the follower decides (warm) and carries out nothing
            refused = ask(b, t0, Verb.PAUSE, "fleet", "asked of a follower")
            assert refused.status == 503 and "this replica (b) follows; the leader is a" in refused.detail
            assert jb.operator_actions() == [] and b.status().controls == ()
            assert b.controller.mode == "advise" and b.status().leadership == {
                "me": "b",
                "leading": False,
                "epoch": epoch_a,
                "leader": "a",
                "acting_left_s": 0.0,
                "error": "",
                "replica_lag_s": {},  # no tick announced yet (test_ha_leadership.py checks the lag)
            }
            scraped = b.metrics.render().decode()
            assert "seamguard_ha_leading 0.0" in scraped and f"seamguard_ha_epoch {float(epoch_a)}" in scraped
            assert 'seamguard_ha_info{leader="a",me="b"} 1.0' in scraped
            assert "seamguard_ha_leading 1.0" in a.metrics.render().decode()
            sent = len(Sink.bodies)
            assert sent == 1 and Sink.bodies[0]["epoch"] == epoch_a
            # a freezes (no renewals); its lease expires and b takes over with a higher epoch
            deadline = time.monotonic() + 8
            while not lead_b.step().leading:
                assert time.monotonic() < deadline, "b never took over"
                time.sleep(0.2)
            epoch_b = lead_b.view().epoch
            assert epoch_b > epoch_a
            # a wakes up and sees a new hot GPU: it decides, believes it leads, and is fenced
            push(a, topo, t0 + 9.5, "gpu/n05/0")
            fenced = [r for r in a.step(t0 + 10).actions if r.kind == "drain_node" and r.target == "node/n05"]
            assert [(r.status, r.epoch) for r in fenced] == [("fenced", epoch_a)]
            assert "no longer holds the election key" in fenced[0].detail
            assert len(Sink.bodies) == sent  # the sink never heard of it
            assert [r.status for r in ja.action_results() if r.target == "node/n05"] == ["fenced"]
            assert "node/n05" not in a.safety.quarantined()  # a fenced drain did not happen
            # b, the new leader, acts under its own epoch
            push(b, topo, t0 + 9.5, "gpu/n05/0")
            done = [r for r in b.step(t0 + 10).actions if r.kind == "drain_node" and r.target == "node/n05"]
            assert [(r.status, r.epoch) for r in done] == [("done", epoch_b)]
            assert {r["epoch"] for r in Sink.bodies[sent:]} == {epoch_b}
            for d in (a, b):
                d.dispatcher.close()


def test_a_new_leader_takes_over_the_ledger_from_the_shared_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drains n02 and freezes; b takes over and, reading the shared PostgreSQL journal, holds
    n02 as quarantined instead of draining it again; a's late writes are refused by the journal."""
    from seamguard.journal.postgres import PostgresJournal, StaleEpochError, migrate
    from tests.postgres_server import postgres_server

    topo = build_topology(small_inventory(), small_jobs())
    t0 = 1.0e9
    frozen = [0.0]
    with replicas(tmp_path, monkeypatch) as (_, config, _), postgres_server() as pg:
        assert config.site.ha is not None
        migrate(pg.dsn())
        lead_a = Leadership(config.site.ha.model_copy(update={"name": "a"}), clock=lambda: frozen[0])
        lead_b = Leadership(config.site.ha.model_copy(update={"name": "b"}))
        refused: list[StaleEpochError] = []

        ja = PostgresJournal(pg.dsn(), epoch=lead_a.own_epoch, on_stale=refused.append)
        jb = PostgresJournal(pg.dsn(), epoch=lead_b.own_epoch)
        a, b = daemon(config, topo, ja, lead_a), daemon(config, topo, jb, lead_b)
        lead_a.step()
        lead_b.step()
        for d in (a, b):
            push(d, topo, t0 - 0.5, "gpu/n02/1")
        assert [r.status for r in a.step(t0).actions if r.kind == "drain_node"] == ["done"]
        assert b.step(t0).actions == ()
        deadline = time.monotonic() + 8
        while not lead_b.step().leading:
            assert time.monotonic() < deadline, "b never took over"
            time.sleep(0.2)
        push(b, topo, t0 + 9.5, "gpu/n02/1")  # n02 still hot
        b.step(t0 + 10)
        assert b.safety.quarantined() == ["node/n02"]  # restored from a's journaled drain
        drains = [r for r in Sink.bodies if r["kind"] == "drain_node" and r["target"] == "node/n02"]
        assert len(drains) == 1  # not drained twice
        restored = [n for n in jb.notices() if "earlier run" in n.message]
        assert len(restored) == 1 and "node/n02" in restored[0].message
        # a, frozen in its belief, ticks again: its journal writes are refused, its drain fenced
        results_before = len(jb.action_results())
        push(a, topo, t0 + 19.5, "gpu/n05/0")
        a.step(t0 + 20)
        assert refused and len(jb.action_results()) == results_before
        assert all(r.epoch == lead_b.view().epoch for r in jb.action_results()[results_before:])
        for d in (a, b):
            d.dispatcher.close()
        ja.close()
        jb.close()


def test_a_new_leader_carries_out_what_it_only_advised_while_following(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """a leads but dies before its first tick; b, following, sees n02 go hot and advises its drain.
    Taking over with n02 still quarantined (no new transition), b plans it again and drains it."""
    topo = build_topology(small_inventory(), small_jobs())
    t0 = 1.0e9
    with replicas(tmp_path, monkeypatch) as (_, config, _):
        assert config.site.ha is not None
        with SqliteJournal(tmp_path / "b.sqlite") as jb:
            lead_a = Leadership(config.site.ha.model_copy(update={"name": "a"}))
            lead_b = Leadership(config.site.ha.model_copy(update={"name": "b"}))
            b = daemon(config, topo, jb, lead_b)
            assert lead_a.step().leading and not lead_b.step().leading
            push(b, topo, t0 - 0.5, "gpu/n02/1")
            report = b.step(t0)
            assert report.actions == ()  # advised only
            assert ("gpu/n02/1", "quarantine") in {(t.entity, t.to_state) for t in report.transitions}
            deadline = time.monotonic() + 8
            while not lead_b.step().leading:  # a never renews: it died
                assert time.monotonic() < deadline, "b never took over"
                time.sleep(0.2)
            push(b, topo, t0 + 9.5, "gpu/n02/1")
            drained = [r for r in b.step(t0 + 10).actions if r.kind == "drain_node"]
            assert [(r.target, r.status, r.epoch) for r in drained] == [
                ("node/n02", "done", lead_b.view().epoch)
            ]
            assert [x["target"] for x in Sink.bodies if x["kind"] == "drain_node"] == ["node/n02"]
            again = [r for r in b.step(t0 + 11).actions if r.kind == "drain_node"]
            assert again == []  # planned again once, at the takeover
            b.dispatcher.close()


def test_a_deposed_leader_leaves_haproxy_untouched(tmp_path: Path, haproxy: str) -> None:  # noqa: F811
    """The same two replicas enforcing through a real HAProxy (its runtime API): b's drain shows in
    HAProxy's own server state, and a's, decided after the takeover under its old epoch, never
    does; read back from HAProxy, not from either daemon."""
    from seamguard.actuators.haproxy import HaproxyActuator, HaproxyConfig

    topo = build_topology(small_inventory(), small_jobs())
    t0 = 1.0e9
    frozen = [0.0]
    servers = {"node/n02": "be_app/s1", "node/n05": "be_app/s2"}
    with etcd_cluster(tmp_path) as etcd:
        config = ha_config(
            etcd.endpoints, {"haproxy": {"socket": haproxy, "servers": servers, "mode": "enforce"}}
        )
        assert config.site.ha is not None
        read = HaproxyActuator(HaproxyConfig(socket=haproxy, servers=servers))

        def state(server: str) -> str:
            found = read.server_state("be_app", server)
            assert found is not None
            return found.state

        with SqliteJournal(tmp_path / "a.sqlite") as ja, SqliteJournal(tmp_path / "b.sqlite") as jb:
            lead_a = Leadership(config.site.ha.model_copy(update={"name": "a"}), clock=lambda: frozen[0])
            lead_b = Leadership(config.site.ha.model_copy(update={"name": "b"}))
            a, b = daemon(config, topo, ja, lead_a), daemon(config, topo, jb, lead_b)
            old = lead_a.step().epoch
            assert not lead_b.step().leading
            deadline = time.monotonic() + 8
            while not lead_b.step().leading:  # a never renews
                assert time.monotonic() < deadline, "b never took over"
                time.sleep(0.2)
            push(a, topo, t0 - 0.5, "gpu/n05/0")  # a, still believing it leads, sees n05 hot
            fenced = [r for r in a.step(t0).actions if r.kind == "drain_node"]
            assert [(r.target, r.status, r.epoch) for r in fenced] == [("node/n05", "fenced", old)]
            push(b, topo, t0 - 0.5, "gpu/n02/1")
            done = [r for r in b.step(t0).actions if r.kind == "drain_node"]
            assert [(r.target, r.status) for r in done] == [("node/n02", "done")]
            assert (state("s1"), state("s2")) == ("drain", "ready")  # HAProxy's own record
            for d in (a, b):
                d.dispatcher.close()


def test_a_deposed_leader_leaves_slurm_untouched(tmp_path: Path) -> None:
    """The same, enforcing through a real Slurm (slurmctld and two slurmd on loopback): the new
    leader's drain shows in Slurm's node state, the deposed leader's never does (``scontrol``)."""
    from seamguard.telemetry.sources.slurm_states import parse_node_state
    from tests.slurm_cluster import slurm_cluster
    from tests.test_slurm import state_of

    topo = build_topology(small_inventory(), small_jobs())
    t0 = 1.0e9
    frozen = [0.0]
    with (
        etcd_cluster(tmp_path) as etcd,
        slurm_cluster(tmp_path / "slurm", dead_nodes=0, names=["n02", "n05"]) as sl,
    ):
        slurm = {"scontrol": sl.bins["scontrol"], "squeue": sl.bins["squeue"], "sinfo": sl.bins["sinfo"],
                 "slurm_conf": str(sl.conf), "mode": "enforce"}  # fmt: skip
        config = ha_config(etcd.endpoints, {"slurm": slurm})
        assert config.site.ha is not None

        def drained(node: str) -> bool:
            return "DRAIN" in parse_node_state(state_of(sl.node_line(node))).flags

        with SqliteJournal(tmp_path / "a.sqlite") as ja, SqliteJournal(tmp_path / "b.sqlite") as jb:
            lead_a = Leadership(config.site.ha.model_copy(update={"name": "a"}), clock=lambda: frozen[0])
            lead_b = Leadership(config.site.ha.model_copy(update={"name": "b"}))
            a, b = daemon(config, topo, ja, lead_a), daemon(config, topo, jb, lead_b)
            old = lead_a.step().epoch
            deadline = time.monotonic() + 8
            while not lead_b.step().leading:  # a never renews
                assert time.monotonic() < deadline, "b never took over"
                time.sleep(0.2)
            push(a, topo, t0 - 0.5, "gpu/n05/0")
            fenced = [r for r in a.step(t0).actions if r.kind == "drain_node"]
            assert [(r.target, r.status, r.epoch) for r in fenced] == [("node/n05", "fenced", old)]
            push(b, topo, t0 - 0.5, "gpu/n02/1")
            done = [r for r in b.step(t0).actions if r.kind == "drain_node"]
            assert [(r.target, r.status) for r in done] == [("node/n02", "done")], done
            assert drained("n02") and not drained("n05")  # Slurm's own record
            for d in (a, b):
                d.dispatcher.close()
