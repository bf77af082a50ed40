"""A bounded fault-injection loop over three replicas on real components: a three-member etcd
cluster, one PostgreSQL journal, an enforcing webhook whose receiver keeps every action. At least
200 faults are injected from a fixed seed while hot GPUs come and go: a replica killed (replaced
by a fresh one), paused (nothing of it runs), its renewals stalled while its engine keeps acting,
an etcd member stopped and started, PostgreSQL restarted, the journal slowed. Then the world
cools and every quarantine is left to end. A checker reads the recorded history: the actions the
receiver got, in order, and the shared journal. It asserts zero actions from a stale epoch, zero
carried-out actions missing from the journal, no node drained twice without a resume between,
and every drained node resumed exactly once at the end; the counts are printed."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from seamguard.daemon import Daemon
from seamguard.ha.leadership import Leadership
from seamguard.journal.base import JournalUnavailableError
from seamguard.journal.buffered import BufferedJournal
from seamguard.journal.postgres import PostgresJournal, StaleEpochError, migrate
from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology, build_topology
from seamguard.site_config import DaemonConfig, daemon_config_from_mapping
from seamguard.telemetry.sources.build import build_sources
from tests.conftest import small_inventory
from tests.etcd_cluster import EtcdCluster, etcd_cluster
from tests.ha_replicas import Sink, sink_server
from tests.postgres_server import PostgresServer, postgres_server

INJECTIONS = 200
SEED = 17
FAST = {"ttl_s": 2, "renew_deadline_s": 1.0, "retry_s": 0.4, "request_timeout_s": 0.4}
KINDS = ("kill", "pause", "stall", "etcd_member", "postgres_restart", "slow_journal")


@dataclass
class Replica:
    name: str
    daemon: Daemon
    leadership: Leadership
    journal: PostgresJournal
    paused_until: int = -1  # iteration: nothing of it runs before
    stalled_until: int = -1  # iteration: its renewals do not run before (its engine does)
    slow_until: int = -1
    refused: list[StaleEpochError] = field(default_factory=list)
    slow: list[bool] = field(default_factory=lambda: [False])  # its journal's writes are throttled


@dataclass
class World:
    """The engine's clock and which GPUs run hot (one per hot node), pushed to every replica."""

    now: float = 1.0e9
    hot: dict[str, int] = field(default_factory=dict)  # node -> iteration it cools at

    def payload(self, topo: Topology) -> bytes:
        gpus = [f"gpu/{n}" for n in topo.names[EntityKind.GPU]]
        hot = {f"gpu/{n}/0" for n in self.hot}
        temps = [97.0 if g in hot else 60.0 for g in gpus]
        bits = [64.0 if g in hot else 0.0 for g in gpus]
        ts = self.now - 0.5
        return json.dumps({"entity": gpus + gpus, "signal": ["gpu.temp_c"] * len(gpus) + ["gpu.throttle_reasons"] * len(gpus),
                           "timestamp": [ts] * (2 * len(gpus)), "value": temps + bits}).encode()  # fmt: skip


def site(url: str, endpoints: list[str]) -> DaemonConfig:
    return daemon_config_from_mapping({
        "engine": {"tick_s": 1, "stale_after_s": 10, "observe_every_s": 60},
        "classifier": {"min_dwell_s": 3},
        "sources": {"push": {}},
        "actuators": {"webhook": {"url": url, "mode": "enforce", "kinds": ["drain_node", "resume_node"]}},
        "safety": {"budgets": {"max_nodes": 16, "max_fleet_pct": 100.0, "domain_pct": 100.0, "per_hour": 100_000,
                               "per_hour_pct": 100.0, "partitions": {"fleet": {"min_in_service_pct": 0.0}}},
                   "recovery": {"healthy_for_s": 4, "repeat_factor": 1.0}},
        "ha": {"endpoints": endpoints, **FAST},
    })  # fmt: skip


class Harness:
    def __init__(self, config: DaemonConfig, topo: Topology, pg: PostgresServer, world: World) -> None:
        self.config, self.topo, self.pg, self.world = config, topo, pg, world
        self.made = 0
        self.replicas: list[Replica] = [self.fresh() for _ in range(3)]
        self.crashes = 0

    def fresh(self) -> Replica:
        assert self.config.site.ha is not None
        self.made += 1
        name = f"r{self.made}"
        lead = Leadership(self.config.site.ha.model_copy(update={"name": name}))
        refused: list[StaleEpochError] = []

        # as seamguard run opens it (daemon_run.open_journal): fenced by the epoch this replica led under
        journal = PostgresJournal(self.pg.dsn(), epoch=lead.own_epoch, on_stale=refused.append)
        slow = [False]
        insert = journal._insert

        def throttled(batches: Any) -> None:  # a slow disk under the journal: each write waits
            if slow[0]:
                time.sleep(0.2)
            insert(batches)

        journal._insert = throttled  # type: ignore[method-assign]
        clock = lambda: self.world.now  # noqa: E731 - the pushed stamps are checked against the engine's time
        daemon = Daemon(self.config, self.topo, build_sources(self.config.site.sources, self.topo, clock),
                        journal=BufferedJournal(journal), leadership=lead)  # fmt: skip
        return Replica(name, daemon, lead, journal, refused=refused, slow=slow)

    def step(self, i: int) -> None:
        body = self.world.payload(self.topo)
        for k, r in enumerate(list(self.replicas)):
            if r.paused_until > i:
                continue
            if r.stalled_until <= i:
                r.leadership.step()
            r.slow[0] = r.slow_until > i
            assert r.daemon.push is not None
            r.daemon.push.ingest(body)
            try:
                r.daemon.step(self.world.now)
            except (
                JournalUnavailableError
            ):  # the engine's journal write met a dead database: the process exits
                self.crashes += 1
                self.replicas[k] = self.fresh_after(r)

    def fresh_after(self, r: Replica) -> Replica:
        r.daemon.dispatcher.close()
        r.journal.close()
        return self.fresh()

    def leader(self) -> Replica | None:
        leading = [r for r in self.replicas if r.leadership.view().leading and r.paused_until < 0]
        return leading[0] if len(leading) == 1 else None


@contextmanager
def components(tmp_path: Path) -> Iterator[tuple[EtcdCluster, PostgresServer, str]]:
    with etcd_cluster(tmp_path, size=3) as etcd, postgres_server() as pg, sink_server() as url:
        migrate(pg.dsn())
        yield etcd, pg, url


def check(journal: PostgresJournal) -> dict[str, int]:
    """The history's properties, counted (each must be zero but ``actions``, ``drains``, ``resumes``)."""
    with Sink.lock:
        bodies = list(Sink.bodies)
    # The receiver honours the payload's idempotency key, as the webhook's contract asks
    # (docs/actuators.md): a retry of a call whose answer timed out is one action, not two.
    seen: set[str] = set()
    got = [b for b in bodies if not (b["key"] in seen or seen.add(b["key"]))]
    stale = sum(1 for k, b in enumerate(got) if any(int(x["epoch"]) > int(b["epoch"]) for x in got[:k]))
    done = {(r.kind, r.target, r.epoch, round(r.decided_at, 3)) for r in journal.action_results(status="done")
            if r.actuator == "webhook"}  # fmt: skip
    missing = sum(
        1 for b in got if (b["kind"], b["target"], int(b["epoch"]), round(b["decided_at"], 3)) not in done
    )
    drained: dict[str, bool] = {}
    twice = unmatched = 0
    for b in got:
        if b["kind"] == "drain_node":
            twice += drained.get(b["target"], False)
            drained[b["target"]] = True
        elif b["kind"] == "resume_node":
            unmatched += not drained.get(b["target"], False)
            drained[b["target"]] = False
    kinds = Counter(b["kind"] for b in got)
    return {"actions": len(got), "drains": kinds["drain_node"], "resumes": kinds["resume_node"],
            "stale_epoch_actions": stale, "missing_from_journal": missing, "drained_twice": twice,
            "resumed_without_drain": unmatched, "still_drained": sum(drained.values())}  # fmt: skip


def history(journal: PostgresJournal) -> dict[str, int]:
    """``check``, asked again when its read met a connection a database restart broke (the
    journal raises once on it, then opens a new one)."""
    try:
        return check(journal)
    except JournalUnavailableError:
        return check(journal)


def settled(journal: PostgresJournal) -> bool:
    """No node left drained in the receiver's history."""
    return history(journal)["still_drained"] == 0


@pytest.mark.slow
def test_two_hundred_faults_leave_a_clean_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEAMGUARD_WEBHOOK_SECRET", "s")
    rng = random.Random(SEED)
    topo = build_topology(small_inventory(nodes=16, gpus=2, racks_per_cdu=2, nodes_per_rack=4), ())
    nodes = list(topo.names[EntityKind.NODE])
    world = World()
    injected: Counter[str] = Counter()
    with components(tmp_path) as (etcd, pg, url):
        h = Harness(site(url, etcd.endpoints), topo, pg, world)
        stopped_member: tuple[int, int] | None = None  # (member, iteration it comes back)
        i = 0
        while sum(injected.values()) < INJECTIONS:
            i += 1
            world.now += 1.0
            for n in [n for n, until in world.hot.items() if until <= i]:
                del world.hot[n]
            if rng.random() < 0.5 and len(world.hot) < 6:
                world.hot[rng.choice(nodes)] = i + rng.randint(4, 15)
            if stopped_member is not None and stopped_member[1] <= i:
                etcd.start(etcd.members[stopped_member[0]])
                stopped_member = None
            for r in h.replicas:
                if 0 <= r.paused_until <= i:
                    r.paused_until = -1
            if i % 2 == 0:  # a fault every other tick
                kind = rng.choice(KINDS)
                target = (
                    h.leader() if rng.random() < 0.7 else None
                )  # mostly the leader: that is where it bites
                r = target or rng.choice(h.replicas)
                if kind == "kill":
                    h.replicas[h.replicas.index(r)] = h.fresh_after(r)
                elif kind == "pause":
                    r.paused_until = i + rng.randint(2, 6)
                elif kind == "stall":
                    r.stalled_until = i + rng.randint(2, 6)
                elif kind == "etcd_member":
                    if stopped_member is not None:
                        continue
                    m = rng.randrange(3)
                    etcd.stop(etcd.members[m])
                    stopped_member = (m, i + rng.randint(2, 6))
                elif kind == "postgres_restart":
                    pg.stop(fast=rng.random() < 0.5)
                    pg.start()
                else:
                    r.slow_until = i + rng.randint(2, 6)
                injected[kind] += 1
            h.step(i)
            time.sleep(0.15)  # leases run on real time
        if stopped_member is not None:
            etcd.start(etcd.members[stopped_member[0]])
        # The world cools and the fleet settles: every quarantine ends.
        world.hot.clear()
        for r in h.replicas:
            r.paused_until = r.stalled_until = r.slow_until = -1
        deadline = time.monotonic() + 120
        while True:
            i += 1
            world.now += 1.0
            h.step(i)
            time.sleep(0.1)
            lead = h.leader()
            if lead is not None and not lead.daemon.safety.quarantined() and settled(lead.journal):
                break
            assert time.monotonic() < deadline, "not settled within 120 s"
        counts = history(h.replicas[0].journal)
        refused = sum(len(r.refused) for r in h.replicas)
        with capsys.disabled():
            print(f"\nHA fault injection: {dict(injected)} over {i} ticks; {h.crashes} replica exits on a lost "
                  f"database; journal writes refused as stale {refused}; history {counts}")  # fmt: skip
        for r in h.replicas:
            r.daemon.dispatcher.close()
            r.journal.close()
    assert sum(injected.values()) >= INJECTIONS and all(injected[k] > 10 for k in KINDS)
    assert counts["drains"] >= 20 and counts["resumes"] == counts["drains"], counts
    assert counts["stale_epoch_actions"] == 0
    assert counts["missing_from_journal"] == 0
    assert counts["drained_twice"] == 0 and counts["resumed_without_drain"] == 0
    assert counts["still_drained"] == 0


def test_the_checker_finds_each_violation() -> None:
    """The checker itself bites: a history with one of each fault is counted as such."""

    class Empty:
        def action_results(self, status: str | None = None) -> list[Any]:
            return []

    Sink.reset()
    with Sink.lock:
        Sink.bodies = [
            {"kind": "drain_node", "target": "node/a", "epoch": 5, "decided_at": 1.0, "key": "k1"},
            {
                "kind": "drain_node",
                "target": "node/a",
                "epoch": 5,
                "decided_at": 1.0,
                "key": "k1",
            },  # a retry: one
            {
                "kind": "drain_node",
                "target": "node/a",
                "epoch": 5,
                "decided_at": 2.0,
                "key": "k2",
            },  # drained twice
            {
                "kind": "resume_node",
                "target": "node/b",
                "epoch": 5,
                "decided_at": 3.0,
                "key": "k3",
            },  # never drained
            {
                "kind": "drain_node",
                "target": "node/c",
                "epoch": 4,
                "decided_at": 4.0,
                "key": "k4",
            },  # a stale epoch
        ]
    counts = check(Empty())  # type: ignore[arg-type]
    assert counts["stale_epoch_actions"] == 1 and counts["drained_twice"] == 1
    assert counts["resumed_without_drain"] == 1 and counts["missing_from_journal"] == 4
    assert counts["still_drained"] == 2
    Sink.reset()
