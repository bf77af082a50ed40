"""The routing plan's HAProxy weights as decisions (issue 20, ``serving.weights``): the hysteresis
rule (``WeightKeeper``), the config, and a daemon whose decode replicas are servers of a real
HAProxy: a degraded KV-transfer path takes its replica's weight down through the operator's gate,
the safety layer, the dispatcher and the journal, and back once the path is healthy again."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from seamguard.actuators.haproxy import HaproxyActuator, HaproxyConfig
from seamguard.control.planner import plan
from seamguard.daemon import Daemon
from seamguard.errors import InputError
from seamguard.journal.records import ActionResultRecord, OperatorRecord
from seamguard.journal.sqlite import SqliteJournal
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import read_inventory
from seamguard.model.states import State
from seamguard.model.topology import Topology, build_topology
from seamguard.serving.weights import WeightKeeper
from seamguard.site_config import daemon_config_from_mapping
from seamguard.telemetry.sources.base import Collected
from tests.test_controller import normal_batch, with_readings
from tests.test_daemon import write_inventory
from tests.test_haproxy import haproxy  # noqa: F401  (the fixture: a real haproxy on loopback)
from tests.test_serving_paths import write_serving

# ---- the rule -----------------------------------------------------------------------------------


def moved(keeper: WeightKeeper, now: float, targets: dict[str, int], groups: dict[str, str] | None = None,
          holds: Any = None) -> dict[str, int]:  # fmt: skip
    """The moves due; by default every replica a server of one backend."""
    moves, _ = keeper.due(now, targets, groups or dict.fromkeys(targets, "be"), holds or (lambda _: False))
    return {m.replica: m.weight for m in moves}


def test_a_replica_never_weighed_is_set_once_then_only_moves_of_min_change_count() -> None:
    k = WeightKeeper(min_change=16, min_interval_s=0)
    assert moved(k, 0, {"replica/a": 256, "replica/b": 256}) == {"replica/a": 256, "replica/b": 256}
    assert moved(k, 1, {"replica/a": 256, "replica/b": 256}) == {}  # nothing moved
    assert moved(k, 2, {"replica/a": 241, "replica/b": 256}) == {}  # 15 < 16: noise
    assert moved(k, 3, {"replica/a": 240, "replica/b": 271 - 15}) == {"replica/a": 240}  # 16: a move
    assert k.last["replica/a"].weight == 240


def test_at_most_one_decision_per_replica_per_min_interval() -> None:
    k = WeightKeeper(min_change=16, min_interval_s=60)
    assert moved(k, 100, {"replica/a": 256, "replica/b": 256}) == {"replica/a": 256, "replica/b": 256}
    assert moved(k, 130, {"replica/a": 64, "replica/b": 256}) == {}  # 30 s after the last: waits
    assert moved(k, 159.9, {"replica/a": 0, "replica/b": 256}) == {}  # even a move to 0 waits
    assert moved(k, 160, {"replica/a": 0, "replica/b": 256}) == {"replica/a": 0}
    assert moved(k, 170, {"replica/a": 256, "replica/b": 256}) == {}  # back: not before 220
    assert moved(k, 220, {"replica/a": 256, "replica/b": 256}) == {"replica/a": 256}


def test_moves_to_and_from_zero_count_whatever_their_size() -> None:
    k = WeightKeeper(min_change=16, min_interval_s=0)
    moved(k, 0, {"replica/a": 10, "replica/b": 256})
    assert moved(k, 1, {"replica/a": 0, "replica/b": 256}) == {"replica/a": 0}  # 10 -> 0: out of service
    assert moved(k, 2, {"replica/a": 1, "replica/b": 256}) == {"replica/a": 1}  # 0 -> 1: back in
    assert moved(k, 3, {"replica/a": 12, "replica/b": 256}) == {}  # 1 -> 12: noise again


def test_the_last_server_of_a_backend_is_never_taken_to_zero() -> None:
    k = WeightKeeper(min_change=16, min_interval_s=0)
    groups = {"replica/a": "be", "replica/b": "be", "replica/c": "other"}
    moved(k, 0, {"replica/a": 100, "replica/b": 256, "replica/c": 256}, groups)
    moves, kept = k.due(1, {"replica/a": 0, "replica/b": 0, "replica/c": 0}, groups)
    # b, weighted most, keeps its weight; c is the only server of its backend: it keeps its too
    assert {m.replica: m.weight for m in moves} == {"replica/a": 0}
    assert [(x.replica, x.group, x.weight) for x in kept] == [
        ("replica/b", "be", 256),
        ("replica/c", "other", 256),
    ]
    moves, kept = k.due(2, {"replica/a": 0, "replica/b": 0, "replica/c": 0}, groups)
    assert moves == [] and [x.replica for x in kept] == ["replica/b", "replica/c"]  # every tick
    # one server going to 0 in the tick another comes back is fine: the backend keeps a server
    assert moved(k, 3, {"replica/a": 256, "replica/b": 0, "replica/c": 0}, groups) == {
        "replica/a": 256,
        "replica/b": 0,
    }


def test_an_unknown_weight_counts_as_none_for_the_backend_rule() -> None:
    k = WeightKeeper(min_change=16, min_interval_s=60)
    groups = {"replica/a": "be", "replica/b": "be"}
    moved(k, 0, {"replica/a": 256, "replica/b": 256}, groups)
    k.settle([ActionResultRecord(1, "set_weight", "replica/b", "haproxy", "given_up", "x", 0, 0.0, 4)], True)
    assert k.last["replica/b"].weight is None  # did not take: not known
    moves, kept = k.due(60, {"replica/a": 0, "replica/b": 0}, groups)
    assert [(m.replica, m.weight) for m in moves] == [("replica/b", 0)] and [x.replica for x in kept] == [
        "replica/a"
    ]


def test_what_did_not_take_is_decided_again_and_an_operator_hold_waits_for_the_control() -> None:
    k = WeightKeeper(min_change=16, min_interval_s=30)
    moved(k, 0, {"replica/a": 256, "replica/b": 256})
    moved(k, 30, {"replica/a": 0, "replica/b": 128})

    def res(target: str, actuator: str, status: str) -> ActionResultRecord:
        return ActionResultRecord(31, "set_weight", target, actuator, status, "", 0, 30.0, 0)

    k.settle([res("replica/a", "operator", "advised"), res("replica/b", "haproxy", "advised")], False)
    assert k.last["replica/b"].weight == 128  # advise mode: the preview stands, not decided again
    held = {"replica/a"}
    assert moved(k, 90, {"replica/a": 0, "replica/b": 128}, holds=lambda r: r in held) == {}
    held.clear()  # the pause ended: decided again, the same weight
    assert moved(k, 91, {"replica/a": 0, "replica/b": 128}, holds=lambda r: r in held) == {"replica/a": 0}
    k.settle([res("replica/b", "haproxy", "advised")], True)  # enforcing: advised = a storm brake
    assert moved(k, 92, {"replica/a": 0, "replica/b": 128}) == {"replica/b": 128}
    k.settle([res("replica/b", "haproxy", "failed")], True)  # the guard retries it: still known
    assert k.last["replica/b"].weight == 128


# ---- the config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "says"),
    [
        ({"min_change": 0}, "serving.weights.min_change"),
        ({"min_interval_s": -1}, "serving.weights.min_interval_s"),
        ({"scale": 300}, "serving.weights.scale"),
        ({"scale": 100, "min_change": 120}, "min_change: 120 is over scale 100"),
        ({"min_chang": 3}, "serving.weights.min_chang"),
    ],
)
def test_bad_weights_config_names_the_field(weights: dict[str, Any], says: str) -> None:
    with pytest.raises(InputError) as err:
        daemon_config_from_mapping({"serving": {"weights": weights}})
    assert says in str(err.value), str(err.value)


def test_weights_are_off_unless_configured() -> None:
    assert daemon_config_from_mapping({}).site.serving.weights is None
    on = daemon_config_from_mapping({"serving": {"weights": {}}}).site.serving.weights
    assert on is not None and (on.min_change, on.min_interval_s, on.scale) == (16, 60.0, 256)


# ---- a daemon and a real HAProxy ---------------------------------------------------------------


@dataclass
class PathSource:
    """Every gauge steady; each path's KV-transfer time as set in ``slow`` (10 ms otherwise)."""

    topo: Topology
    slow: dict[str, float] = field(default_factory=dict)
    name: str = "test"
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(3))

    def collect(self, now: float) -> Collected:
        readings = {(f"path/{p}", "path.kv_transfer_ms"): self.slow.get(p, 10.0)
                    for p in self.topo.names[EntityKind.PATH]}  # fmt: skip
        readings.update(
            {(f"replica/{r}", "replica.queue_depth"): 2.0 for r in self.topo.names[EntityKind.REPLICA]}
        )
        return Collected(with_readings(self.topo, normal_batch(self.topo, now, self.rng), now, readings))


def serving_topology(tmp_path: Path) -> Topology:
    inv = write_inventory(tmp_path / "inv.csv")
    write_serving(inv)  # prefill p0 (n00), p1 (n01) -> decode d0 (n04), d1 (n05)
    return build_topology(read_inventory(inv))


SERVERS = {"replica/d0": "be_app/s1", "replica/d1": "be_app/s2"}


def weight_of(sock: str, server: str) -> int:
    state = HaproxyActuator(HaproxyConfig(socket=sock, servers={})).server_state("be_app", server)
    assert state is not None
    return state.weight


def test_a_degraded_path_lowers_its_replicas_haproxy_weight_and_health_restores_it(
    haproxy: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    topo = serving_topology(tmp_path)
    config = daemon_config_from_mapping({
        "actuators": {"haproxy": {"socket": haproxy, "servers": SERVERS, "mode": "enforce"}},
        "serving": {"weights": {"min_interval_s": 300}},
    })  # fmt: skip
    source = PathSource(topo)
    journal = SqliteJournal(tmp_path / "journal.sqlite")
    daemon = Daemon(config, topo, [source], journal=journal)
    t = 1000.0
    daemon.step(t)  # first sight: both replicas set to the plan's weight (256 each: nothing measured)
    assert (weight_of(haproxy, "s1"), weight_of(haproxy, "s2"), weight_of(haproxy, "s3")) == (256, 256, 100)
    source.slow["pre~d1"] = 400.0  # d1's KV transfers take 400 ms: its path degrades, both ends healthy
    lowered = None
    for _ in range(20):
        t += 30.0
        report = daemon.step(t)
        if any(
            a.kind == "set_weight" and a.target == "replica/d1" and a.status == "done" for a in report.actions
        ):
            lowered = t
            break
    assert lowered is not None, "d1's weight was never lowered"
    assert weight_of(haproxy, "s2") == 0 and weight_of(haproxy, "s1") == 256  # the other serves all
    decisions = [d for d in journal.decisions("replica/d1") if d.action == "set_weight"]
    assert decisions[-1].ts == lowered and decisions[-1].cause == "path/pre~d1"
    assert "256->0" in decisions[-1].reason and "path/pre~d1 degraded" in decisions[-1].reason
    results = [r for r in journal.action_results() if r.kind == "set_weight" and r.target == "replica/d1"]
    assert results[-1].status == "done" and "weight 256->0" in results[-1].detail

    source.slow.clear()  # healthy again: restored, but not within min_interval of the last move
    restored = None
    for _ in range(60):
        t += 30.0
        report = daemon.step(t)
        if any(
            a.kind == "set_weight" and a.target == "replica/d1" and a.status == "done" for a in report.actions
        ):
            restored = t
            break
    assert restored is not None, "d1's weight was never restored"
    assert restored >= lowered + 300
    assert weight_of(haproxy, "s2") == 256
    last = [d for d in journal.decisions("replica/d1") if d.action == "set_weight"][-1]
    assert "0->256" in last.reason and last.state == "healthy"
    journal.close()


def test_a_pause_on_the_replicas_node_holds_its_weight_until_it_ends(tmp_path: Path) -> None:
    """Advise mode (no actuator configured): the decisions go to the log actuator; a pause on d1's
    node keeps its weight decision back (journaled by the operator's gate), and it is decided
    again once the pause ends."""
    topo = serving_topology(tmp_path)
    config = daemon_config_from_mapping({"serving": {"weights": {"min_interval_s": 0}}})
    source = PathSource(topo)
    daemon = Daemon(config, topo, [source])
    t = 1000.0
    first = daemon.step(t)
    advised = {(a.target, a.actuator, a.status) for a in first.actions if a.kind == "set_weight"}
    assert advised == {(f"replica/{r}", "log", "advised") for r in ("p0", "p1", "d0", "d1")}
    daemon.desk.controls.apply(OperatorRecord(t, "alice", "pause", "node/n05", "test", t + 3600, ""))
    source.slow["pre~d1"] = 400.0
    held: list[ActionResultRecord] = []
    for _ in range(20):
        t += 30.0
        held = [a for a in daemon.step(t).actions if a.kind == "set_weight" and a.target == "replica/d1"]
        if held:
            break
    assert [(a.actuator, a.status) for a in held] == [("operator", "advised")]
    assert "not carried out: node/n05 paused by alice" in held[0].detail
    for _ in range(3):  # the pause still holds: not decided again
        t += 30.0
        assert not [a for a in daemon.step(t).actions if a.kind == "set_weight" and a.target == "replica/d1"]
    daemon.desk.controls.apply(OperatorRecord(t, "alice", "resume", "node/n05", "done", math.nan, ""))
    t += 30.0
    again = [a for a in daemon.step(t).actions if a.kind == "set_weight" and a.target == "replica/d1"]
    assert [(a.actuator, a.status) for a in again] == [("log", "advised")]
    assert [d.params for d in daemon.recent_decisions if d.entity == "replica/d1"][-1] == (("weight", "0"),)


def test_set_weight_lands_on_the_replica_and_a_replica_is_held_by_its_nodes(tmp_path: Path) -> None:
    """A planner's ``set_weight`` on a replica targets the replica (the id the HAProxy map uses; under
    ``lands: node`` a replica, on no node of its own, gave no target at all), and the safety layer
    and the operator's gate see a replica as the nodes it runs on."""
    topo = serving_topology(tmp_path)
    cfg = daemon_config_from_mapping({"actions": {"replica": {"degraded": ["set_weight"]}}}).policy
    got = plan(cfg, topo, None, now=1.0, gidx=topo.index["replica/d0"], state=State.DEGRADED,  # type: ignore[arg-type]
               previous=State.HEALTHY, reason="slow", evidence=(), mode="advise", epoch=0)  # fmt: skip
    assert [(d.entity, d.action) for d in got] == [("replica/d0", "set_weight")]
    daemon = Daemon(daemon_config_from_mapping({}), topo, [PathSource(topo)])
    nodes = daemon.safety.nodes_of("replica/d0")
    assert [daemon.safety.node_names[n] for n in nodes.tolist()] == ["n04"]
    assert not daemon.desk.gate.holds("replica/d0")
    daemon.desk.controls.apply(OperatorRecord(1.0, "alice", "maintenance", "node/n04", "swap", 3600.0, ""))
    assert daemon.desk.gate.holds("replica/d0") and not daemon.desk.gate.holds("replica/d1")  # d1 runs on n05
