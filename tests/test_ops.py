"""Operator controls on a real daemon: a pause, a maintenance window and a pin to healthy keep
seamguard's hands off; a pin to quarantined drains through the safety layer; an actuator in
``approve`` mode waits for a person; everything is journaled with who and why, survives a
restart, and lapses on its own. Pushed telemetry runs one GPU (``HOT``, on n02) hot; the webhook
actuator posts to a loopback receiver that records what reached it."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from seamguard.daemon import Daemon
from seamguard.journal.sqlite import SqliteJournal
from seamguard.model.topology import Topology, build_topology
from seamguard.ops.controls import Verb
from seamguard.ops.desk import Reply, Request
from seamguard.site_config import DaemonConfig, daemon_config_from_mapping
from seamguard.telemetry.sources.build import build_sources
from tests.conftest import small_inventory, small_jobs
from tests.http_stub import Recorder, serve
from tests.test_daemon import HOT, POLICY, payload

T0 = 1.0e9
HOUR = 3600.0
NOW = [T0]  # the push source's clock: moved to each tick's time (stamps are checked against it)


def clock() -> float:
    return NOW[0]


class Received(Recorder):
    received: ClassVar[list[dict[str, Any]]] = []


@pytest.fixture
def topo() -> Topology:
    return build_topology(small_inventory(), small_jobs())


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("SEAMGUARD_WEBHOOK_SECRET", "s")
    Received.received = []
    with serve(Received) as url:
        yield url


def config_for(sink: str, mode: str = "enforce", **webhook: Any) -> DaemonConfig:
    return daemon_config_from_mapping(
        {**POLICY, "actuators": {"webhook": {"url": sink, "mode": mode, **webhook}}}
    )


def daemon_on(config: DaemonConfig, topo: Topology, journal: SqliteJournal) -> Daemon:
    """A daemon that has ticked once on a calm fleet at ``T0 - 2``: until its first tick has taken
    over what the journal holds, it applies no control (tested below)."""
    d = Daemon(config, topo, build_sources(config.site.sources, topo, clock), journal=journal)
    tick(d, T0 - 2, hot=None)
    return d


def tick(d: Daemon, now: float, hot: str | None = HOT) -> list[tuple[str, str, str, str]]:
    """Push one reading of every GPU stamped just before ``now``, step; (kind, target, actuator, status)."""
    assert d.push is not None
    NOW[0] = now
    d.push.ingest(json.dumps(payload(d.topology, now - 0.5, hot=hot)).encode())
    return [(a.kind, a.target, a.actuator, a.status) for a in d.step(now).actions]


def ask(d: Daemon, now: float, verb: Verb, target: str, reason: str = "testing", for_s: float = HOUR,
        state: str = "", who: str = "alice") -> Reply:  # fmt: skip
    """A request as the API hands it over, applied as the daemon's loop applies it between ticks."""
    import threading

    box: list[Reply] = []
    t = threading.Thread(
        target=lambda: box.append(d.desk.submit(Request(who, verb, target, reason, for_s, state), 10))
    )
    t.start()
    assert d.desk.wake.wait(5)
    d.operate(now)
    t.join(5)
    return box[0]


def reached() -> list[tuple[str, str]]:
    return [(b["kind"], b["target"]) for b in Received.received]


def test_a_pause_advises_what_it_would_do_and_the_resume_plans_it_again(
    topo: Topology, sink: str, tmp_path: Path
) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        d = daemon_on(config_for(sink), topo, journal)
        reply = ask(d, T0 - 1, Verb.PAUSE, "fleet", "firmware rollout")
        assert reply.status == 200 and reply.record is not None and reply.record.principal == "alice"
        out = tick(d, T0)
        assert ("drain_node", "node/n02", "operator", "advised") in out
        assert not any(a == "webhook" for _, _, a, _ in out) and reached() == []
        assert d.safety.quarantined() == []  # a paused drain takes no budget and holds nothing
        assert d.status().controls[0]["verb"] == "pause" and d.status().controls[0]["by"] == "alice"
        assert ask(d, T0 + 1, Verb.RESUME, "fleet", "rollout done").status == 200
        tick(d, T0 + 2)  # the resume asks the engine to plan what is still unwell again...
        out = tick(d, T0 + 3)  # ...which it does at the next tick, and now it is carried out
        assert ("drain_node", "node/n02", "webhook", "done") in out and (
            "drain_node",
            "node/n02",
        ) in reached()
        verbs = [(r.principal, r.verb, r.target, r.reason) for r in journal.operator_actions()]
        assert verbs == [
            ("alice", "pause", "fleet", "firmware rollout"),
            ("alice", "resume", "fleet", "rollout done"),
        ]


def test_a_pause_of_one_domain_leaves_the_rest_of_the_fleet_acting(
    topo: Topology, sink: str, tmp_path: Path
) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        d = daemon_on(config_for(sink), topo, journal)
        assert ask(d, T0 - 1, Verb.PAUSE, "rack/r0").status == 200  # n00, n01: not the hot GPU's node
        assert ("drain_node", "node/n02", "webhook", "done") in tick(d, T0)
    with SqliteJournal(tmp_path / "k.sqlite") as journal:
        d = daemon_on(config_for(sink), topo, journal)
        assert ask(d, T0 - 1, Verb.PAUSE, "rack/r1").status == 200  # n02's rack
        assert ("drain_node", "node/n02", "operator", "advised") in tick(d, T0)


def test_a_maintenance_window_keeps_hands_off_and_lapses_by_itself(
    topo: Topology, sink: str, tmp_path: Path
) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        d = daemon_on(config_for(sink), topo, journal)
        assert ask(d, T0 - 1, Verb.MAINTENANCE, "node/n02", "DIMM swap", for_s=600).status == 200
        out = tick(d, T0)
        assert ("drain_node", "node/n02", "operator", "skipped") in out and reached() == []
        tick(d, T0 + 601)  # past the window: it lapses, journaled as ended by seamguard
        assert d.status().controls == ()
        lapsed = journal.operator_actions()[-1]
        assert (lapsed.principal, lapsed.verb, lapsed.target) == ("seamguard", "end_maintenance", "node/n02")
        assert "expired" in lapsed.reason and "DIMM swap" in lapsed.reason
        assert ("drain_node", "node/n02", "webhook", "done") in tick(d, T0 + 602)


def test_a_node_pinned_healthy_is_left_alone_and_let_go_if_held(
    topo: Topology, sink: str, tmp_path: Path
) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        d = daemon_on(config_for(sink), topo, journal)
        assert ("drain_node", "node/n02", "webhook", "done") in tick(d, T0)
        assert d.safety.quarantined() == ["node/n02"]
        reply = ask(d, T0 + 1, Verb.PIN, "node/n02", "known benign sensor", state="healthy")
        assert reply.status == 200
        out = tick(d, T0 + 2)
        assert ("resume_node", "node/n02", "webhook", "done") in out  # released at once, no recovery delay
        assert d.safety.quarantined() == []
        for k in range(3, 6):  # still hot: nothing more is done to it
            assert not [o for o in tick(d, T0 + k) if o[1] == "node/n02" and o[2] == "webhook"]


def test_a_pin_to_quarantined_drains_through_the_safety_layer_and_its_end_releases(
    topo: Topology, sink: str, tmp_path: Path
) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        d = daemon_on(config_for(sink), topo, journal)
        assert ask(d, T0 + 1, Verb.PIN, "node/n05", "suspect PSU", state="quarantined").status == 200
        assert ("drain_node", "node/n05", "webhook", "done") in tick(d, T0 + 2, hot=None)
        assert d.safety.quarantined() == ["node/n05"]
        delay = d.config.site.safety.recovery.healthy_for_s
        tick(d, T0 + 3 + delay, hot=None)
        assert d.safety.quarantined() == ["node/n05"]  # healthy to the engine, but pinned: held
        assert ask(d, T0 + 4 + delay, Verb.UNPIN, "node/n05", "PSU replaced").status == 200
        tick(d, T0 + 5 + delay, hot=None)
        out = tick(d, T0 + 6 + 2 * delay, hot=None)  # well, and past its recovery delay: released
        assert ("resume_node", "node/n05", "webhook", "done") in out


def test_an_approve_mode_actuator_waits_for_a_person(topo: Topology, sink: str, tmp_path: Path) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        d = daemon_on(config_for(sink, mode="approve"), topo, journal)
        out = tick(d, T0)
        assert ("drain_node", "node/n02", "webhook", "awaiting_approval") in out and reached() == []
        [waiting] = d.status().awaiting
        assert waiting["target"] == "node/n02" and d.status().mode == "act"
        assert ask(d, T0 + 1, Verb.APPROVE, "no-such-key").status == 404
        reply = ask(d, T0 + 1, Verb.APPROVE, str(waiting["key"]), "checked the node", who="bob")
        assert reply.status == 200 and [(r.kind, r.status) for r in reply.results] == [("drain_node", "done")]
        assert reached() == [("drain_node", "node/n02")] and d.status().awaiting == ()
        done = journal.action_results(target="node/n02", status="done")
        assert [r.kind for r in done] == ["drain_node"]
        assert journal.operator_actions()[-1].principal == "bob"


def test_a_rejected_or_expired_approval_leaves_the_safety_ledger(
    topo: Topology, sink: str, tmp_path: Path
) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        d = daemon_on(config_for(sink, mode="approve", approve_within_s=600), topo, journal)
        tick(d, T0)
        assert d.safety.quarantined() == ["node/n02"]  # the budget is reserved while it waits
        [waiting] = d.status().awaiting
        reply = ask(d, T0 + 1, Verb.REJECT, str(waiting["key"]), "not during the launch")
        assert [(r.status, r.detail) for r in reply.results] == [
            ("rejected", "rejected by alice: not during the launch")
        ]
        assert d.safety.quarantined() == [] and reached() == []
    with SqliteJournal(tmp_path / "k.sqlite") as journal:
        d = daemon_on(config_for(sink, mode="approve", approve_within_s=600), topo, journal)
        tick(d, T0)
        out = tick(d, T0 + 601)
        assert ("drain_node", "node/n02", "webhook", "rejected") in out
        assert d.safety.quarantined() == [] and d.status().awaiting == ()


def test_controls_survive_a_restart(topo: Topology, sink: str, tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with SqliteJournal(path) as journal:
        d = daemon_on(config_for(sink), topo, journal)
        assert ask(d, T0 + 1, Verb.PAUSE, "fleet", "change freeze", for_s=HOUR).status == 200
        assert ask(d, T0 + 1, Verb.PIN, "node/n02", "benign", state="healthy", for_s=60).status == 200
        d.dispatcher.close()
    with SqliteJournal(path) as journal:
        d = Daemon(
            config_for(sink), topo, build_sources(config_for(sink).site.sources, topo, clock), journal=journal
        )
        out = tick(d, T0 + 120)  # the pin lapsed while it was down; the pause stands
        assert [(c["verb"], c["target"]) for c in d.status().controls] == [("pause", "fleet")]
        assert ("drain_node", "node/n02", "operator", "advised") in out and reached() == []
        assert any("change freeze" in n.message for n in journal.notices() if n.source == "operator")


def test_a_control_waits_for_the_first_tick_to_take_over_the_journal(
    topo: Topology, sink: str, tmp_path: Path
) -> None:
    """Before its first tick a daemon does not know the pins and pauses an earlier run left: it
    applies no request until that tick, which applies it (so nothing is decided over them)."""
    import threading

    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        config = config_for(sink)
        d = Daemon(config, topo, build_sources(config.site.sources, topo, clock), journal=journal)
        box: list[Reply] = []
        t = threading.Thread(
            target=lambda: box.append(d.desk.submit(Request("alice", Verb.PAUSE, "fleet", "early", HOUR), 10))
        )
        t.start()
        assert d.desk.wake.wait(5)
        assert d.operate(T0 - 1) == [] and box == []
        out = tick(d, T0)
        t.join(5)
        assert box[0].status == 200 and ("drain_node", "node/n02", "operator", "advised") in out


def test_refusals_name_what_is_wrong(topo: Topology, sink: str, tmp_path: Path) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        d = daemon_on(config_for(sink), topo, journal)
        unknown = ask(d, T0, Verb.PAUSE, "rack/nope")
        assert unknown.status == 404 and "rack/nope" in unknown.detail
        assert ask(d, T0, Verb.PIN, "fleet", state="healthy").status == 422
        assert ask(d, T0, Verb.PIN, "node/n01", state="sideways").status == 422
        nothing = ask(d, T0, Verb.RESUME, "fleet")
        assert nothing.status == 404 and "no pause of 'fleet'" in nothing.detail
        assert journal.operator_actions() == []  # nothing refused was journaled
        assert all(math.isnan(r.until) for r in journal.operator_actions())


def test_advise_mode_says_its_quarantines_are_what_it_would_hold(
    topo: Topology, sink: str, tmp_path: Path
) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        d = daemon_on(config_for(sink, mode="advise"), topo, journal)
        tick(d, T0)
        st = d.status_json()
        assert st["mode"] == "advise" and st["quarantined"] == ("node/n02",) and st["storm_brake"] is None
        assert (
            st["quarantined_means"] == "would be held: advise mode, nothing was drained" and reached() == []
        )
    with SqliteJournal(tmp_path / "k.sqlite") as journal:
        d = daemon_on(config_for(sink), topo, journal)
        tick(d, T0)
        assert d.status_json()["quarantined_means"] == "held out of service by an actuator"


def test_a_flood_of_controls_is_refused_past_the_bound_not_queued(
    topo: Topology, sink: str, tmp_path: Path
) -> None:
    import threading

    from seamguard.ops.desk import MAX_WAITING

    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        d = daemon_on(config_for(sink), topo, journal)
        replies: list[Reply] = []
        waiting = [threading.Thread(target=lambda: replies.append(d.desk.submit(
            Request("alice", Verb.PAUSE, "fleet", "flood", HOUR), 10))) for _ in range(MAX_WAITING)]  # fmt: skip
        for w in waiting:
            w.start()
        while len(d.desk._queue) < MAX_WAITING:
            threading.Event().wait(0.01)
        over = d.desk.submit(Request("alice", Verb.PAUSE, "fleet", "one more", HOUR), 10)
        assert over.status == 429 and "64 controls already wait" in over.detail
        d.operate(T0)
        for w in waiting:
            w.join(10)
        assert [r.status for r in replies] == [200] * MAX_WAITING
        assert len(journal.operator_actions()) == MAX_WAITING  # each applied once; the refused one not at all


def tick2(d: Daemon, now: float, hot: tuple[str, ...]) -> list[tuple[str, str, str, str]]:
    """Like ``tick``, with several GPUs hot."""
    assert d.push is not None
    NOW[0] = now
    body = payload(d.topology, now - 0.5, hot=None)
    gpus = body["entity"][: len(body["entity"]) // 2]
    for g in hot:
        i = gpus.index(g)
        body["value"][i], body["value"][len(gpus) + i] = 97.0, 64.0
    d.push.ingest(json.dumps(body).encode())
    return [(a.kind, a.target, a.actuator, a.status) for a in d.step(now).actions]


def test_a_queued_drain_waits_while_its_node_is_in_maintenance(
    topo: Topology, sink: str, tmp_path: Path
) -> None:
    """The budget refuses the second drain (one an hour) and queues it; a maintenance window on its
    node keeps the queue from draining it when the budget frees, until the window ends."""
    config = daemon_config_from_mapping(
        {
            **POLICY,
            "actuators": {"webhook": {"url": sink, "mode": "enforce"}},
            "safety": {
                "budgets": {
                    "per_hour": 1,
                    "max_fleet_pct": 100.0,
                    "domain_pct": 100.0,
                    "partitions": {"fleet": {"min_in_service_pct": 0.0}},
                }
            },
        }
    )
    hot = ("gpu/n02/1", "gpu/n05/0")
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        d = daemon_on(config, topo, journal)
        out = tick2(d, T0, hot)
        [queued] = [a.target for a in d.safety.queued()]
        assert ("drain_node", queued, "safety", "refused") in out
        assert ask(d, T0 + 1, Verb.MAINTENANCE, queued, "PSU swap", for_s=2 * HOUR).status == 200
        out = tick2(d, T0 + HOUR + 60, hot)  # the hour's budget is free again
        assert not [o for o in out if o[1] == queued and o[2] == "webhook"] and (
            queued,
            "drain_node",
        ) not in [(b["target"], b["kind"]) for b in Received.received]
        assert [a.target for a in d.safety.queued()] == [queued]
        out = tick2(d, T0 + 2 * HOUR + 60, hot)  # the window lapsed: the queue drains it now
        assert ("drain_node", queued, "webhook", "done") in out


def test_a_held_node_is_not_released_while_paused(topo: Topology, sink: str, tmp_path: Path) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        d = daemon_on(config_for(sink), topo, journal)
        assert ("drain_node", "node/n02", "webhook", "done") in tick(d, T0)
        assert ask(d, T0 + 1, Verb.PAUSE, "fleet", "change freeze", for_s=2 * HOUR).status == 200
        delay = d.config.site.safety.recovery.healthy_for_s
        for k in range(2, 6):  # well again, and past its recovery delay
            out = tick(d, T0 + k * delay, hot=None)
            assert not [o for o in out if o[0] == "resume_node" and o[2] == "webhook"], out
        assert d.safety.quarantined() == ["node/n02"]
        assert ask(d, T0 + 6 * delay, Verb.RESUME, "fleet", "freeze over").status == 200
        assert ("resume_node", "node/n02", "webhook", "done") in tick(d, T0 + 6 * delay + 1, hot=None)


def test_a_node_pinned_healthy_before_it_heats_is_never_drained(
    topo: Topology, sink: str, tmp_path: Path
) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        d = daemon_on(config_for(sink), topo, journal)
        assert ask(d, T0 - 1, Verb.PIN, "gpu/n02/1", "known benign sensor", state="healthy").status == 200
        out = tick(d, T0)
        assert ("drain_node", "node/n02", "operator", "skipped") in out and reached() == []
        assert d.safety.quarantined() == []


def test_a_queued_drain_of_a_node_pinned_healthy_never_goes_out(
    topo: Topology, sink: str, tmp_path: Path
) -> None:
    config = daemon_config_from_mapping(
        {**POLICY, "actuators": {"webhook": {"url": sink, "mode": "enforce"}},
         "safety": {"budgets": {"per_hour": 1, "max_fleet_pct": 100.0, "domain_pct": 100.0,
                                "partitions": {"fleet": {"min_in_service_pct": 0.0}}}}}
    )  # fmt: skip
    hot = ("gpu/n02/1", "gpu/n05/0")
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        d = daemon_on(config, topo, journal)
        tick2(d, T0, hot)
        [queued] = [a.target for a in d.safety.queued()]
        assert (
            ask(d, T0 + 1, Verb.PIN, queued, "vendor says benign", state="healthy", for_s=4 * HOUR).status
            == 200
        )
        for k in (1, 2, 3):  # the hour's budget frees; the pin holds it back
            out = tick2(d, T0 + k * HOUR + 60, hot)
            assert not [o for o in out if o[1] == queued and o[2] == "webhook"], out


def test_the_operator_state_is_exported_as_metrics(topo: Topology, sink: str, tmp_path: Path) -> None:
    def sample(d: Daemon, name: str, **labels: str) -> float | None:
        return d.metrics.registry.get_sample_value(name, labels or None)

    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        d = daemon_on(config_for(sink, mode="approve"), topo, journal)
        assert sample(d, "seamguard_acting") == 1.0 and sample(d, "seamguard_awaiting_approval") == 0.0
        tick(d, T0)
        assert sample(d, "seamguard_awaiting_approval") == 1.0  # the drain
        assert ask(d, T0 + 1, Verb.PAUSE, "rack/r0", "rollout").status == 200
        # at once, not at the next tick
        assert sample(d, "seamguard_operator_controls", control="pause") == 1.0
        assert sample(d, "seamguard_operator_controls", control="pin") == 0.0
    with SqliteJournal(tmp_path / "k.sqlite") as journal:
        assert sample(daemon_on(config_for(sink, mode="advise"), topo, journal), "seamguard_acting") == 0.0


def test_a_node_vouched_repaired_is_released_at_once_on_its_first_quarantine(
    topo: Topology, sink: str, tmp_path: Path
) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        d = daemon_on(config_for(sink), topo, journal)
        assert ("drain_node", "node/n02", "webhook", "done") in tick(d, T0)
        assert ask(d, T0 + 1, Verb.REPAIRED, "rack/r1", "GPU swapped").status == 422  # one node, not a rack
        assert ask(d, T0 + 1, Verb.REPAIRED, "node/nope", "GPU swapped").status == 404
        reply = ask(d, T0 + 60, Verb.REPAIRED, "node/n02", "GPU swapped, RMA 88", who="carol")
        assert reply.status == 200 and "repaired node/n02" in reply.detail
        out = tick(d, T0 + 61, hot=None)  # far inside the recovery delay: released all the same
        assert ("resume_node", "node/n02", "webhook", "done") in out and d.safety.quarantined() == []
        assert d.controller.states[topo.index[HOT]] == 0  # healthy: the engine forgot the hot GPU
        last = journal.operator_actions()[-1]
        assert (last.principal, last.verb, last.target) == ("carol", "repaired", "node/n02")
        assert any(
            t.reason.startswith("operator: repaired by carol") for t in journal.transitions(entity=HOT)
        )
