"""The guard: breaker opens and half-opens, retries back off with jitter, give-up is journaled, idempotent."""

from __future__ import annotations

import random
import threading

import pytest

from seamguard.actuators.dispatch import Dispatcher, Route
from seamguard.actuators.guard import Breaker, Guard, GuardConfig, backoff
from seamguard.actuators.sections import Mode
from seamguard.model.actions import Action, ActionResult, ActionStatus


class Scripted:
    """An actuator whose answers follow a script (then succeed): drives the guard's failure paths."""

    name = "scripted"
    kinds = frozenset({"drain_node"})

    def __init__(self, failures: int = 0, hang: threading.Event | None = None) -> None:
        self.failures = failures
        self.hang = hang
        self.calls: list[tuple[str, float]] = []

    def apply(self, action: Action, now: float) -> ActionResult:
        self.calls.append((action.key, now))
        if self.hang is not None:
            self.hang.wait(5.0)
        if len(self.calls) <= self.failures:
            return ActionResult(action, self.name, ActionStatus.FAILED, f"boom {len(self.calls)}", now)
        return ActionResult(action, self.name, ActionStatus.DONE, "drained", now)


def act(target: str = "node/n01", at: float = 0.0) -> Action:
    return Action("drain_node", target, "quarantine", "quarantine", decided_at=at, epoch=3)


CFG = GuardConfig(failures_to_open=3, cooldown_s=60.0, max_attempts=4, backoff_base_s=2.0, jitter=0.5)


def test_retries_back_off_with_seeded_jitter_then_succeed() -> None:
    actuator = Scripted(failures=2)
    g = Guard(actuator, CFG.model_copy(update={"failures_to_open": 10}), rng=random.Random(7))
    (first,) = g.submit(act(), 100.0)
    assert (first.status, first.attempt) == ("failed", 1) and "retry 2/4" in first.detail
    ((_, _, due1),) = g.pending()
    expected = random.Random(7)
    d1 = 2.0 * (1 - 0.5 * expected.random())
    assert due1 == 100.0 + d1 and 1.0 <= d1 <= 2.0
    assert g.due(due1 - 0.01) == []  # not yet
    (second,) = g.due(due1)
    ((_, _, due2),) = g.pending()
    d2 = 4.0 * (1 - 0.5 * expected.random())
    assert (second.status, second.attempt) == ("failed", 2) and due2 == due1 + d2 and 2.0 <= d2 <= 4.0
    (third,) = g.due(due2)
    assert (third.status, third.attempt, third.epoch) == ("done", 3, 3) and g.pending() == []
    assert len(actuator.calls) == 3


def test_backoff_is_capped() -> None:
    cfg = GuardConfig(backoff_base_s=1.0, backoff_max_s=10.0, jitter=0.0)
    assert [backoff(cfg, k, random.Random(0)) for k in (1, 2, 3, 4, 5, 6)] == [1, 2, 4, 8, 10, 10]


def test_give_up_past_the_retry_budget_is_journaled() -> None:
    actuator = Scripted(failures=100)
    g = Guard(actuator, CFG.model_copy(update={"failures_to_open": 100}), rng=random.Random(1))
    out = g.submit(act(), 0.0)
    t = 0.0
    while g.pending():
        t = g.pending()[0][2]
        out += g.due(t)
    assert [r.status for r in out] == ["failed", "failed", "failed", "given_up"]
    assert [r.attempt for r in out] == [1, 2, 3, 4]
    assert "gave up after 4 attempts: boom 4" in out[-1].detail
    # Given up means handled: the same key is not tried again.
    (again,) = g.submit(act(), t + 1)
    assert again.status == "already" and "given_up" in again.detail and len(actuator.calls) == 4


def test_breaker_opens_after_consecutive_failures_and_half_opens_after_cooldown() -> None:
    actuator = Scripted(failures=4)
    g = Guard(actuator, CFG.model_copy(update={"max_attempts": 10}), rng=random.Random(2))
    for i in range(3):
        g.submit(act(f"node/n0{i}"), 10.0)
    assert g.breaker(10.0) is Breaker.OPEN and len(actuator.calls) == 3
    # While open, nothing reaches the actuator; the action waits for the half-open time.
    (blocked,) = g.submit(act("node/n09"), 20.0)
    assert blocked.attempt == 0 and "circuit open" in blocked.detail and "half-open at 70" in blocked.detail
    assert len(actuator.calls) == 3
    assert g.breaker(69.9) is Breaker.OPEN and g.breaker(70.0) is Breaker.HALF_OPEN
    # Half-open: one trial; it fails (the 4th scripted failure) and the breaker opens again.
    trial = g.due(70.0)
    assert trial[0].status == "failed" and trial[0].attempt >= 1
    assert g.breaker(70.0) is Breaker.OPEN and len(actuator.calls) == 4
    assert all("circuit open" in r.detail for r in trial[1:])  # the rest waited without a call
    # Next half-open trial succeeds: closed, and the waiting actions go through.
    out = g.due(130.0)
    assert g.breaker(130.0) is Breaker.CLOSED and out[0].status == "done"
    while g.pending():
        out = g.due(max(p[2] for p in g.pending()))
    assert {k for k, _ in actuator.calls} == {act(f"node/n0{i}").key for i in (0, 1, 2, 9)}


def test_same_action_key_is_carried_out_once() -> None:
    actuator = Scripted()
    d = Dispatcher([Route(actuator, Mode.ENFORCE, CFG)])
    first = d.dispatch([act()], 0.0)
    second = d.dispatch([act(), act()], 5.0)
    assert [r.status for r in first] == ["done"] and [r.status for r in second] == ["already", "already"]
    assert len(actuator.calls) == 1
    # A new decision (new decided_at) on the same target is a new action.
    d.dispatch([act(at=9.0)], 9.0)
    assert len(actuator.calls) == 2


def test_a_call_past_its_timeout_is_a_failure_and_retried() -> None:
    release = threading.Event()
    actuator = Scripted(hang=release)
    g = Guard(actuator, CFG.model_copy(update={"timeout_s": 0.2}), rng=random.Random(3))
    (r,) = g.submit(act(), 0.0)
    release.set()
    assert r.status == "failed" and "no answer within 0.2 s" in r.detail and g.pending()


def test_kinds_nobody_takes_go_to_the_log_actuator() -> None:
    d = Dispatcher([Route(Scripted(), Mode.ENFORCE)])
    (r,) = d.dispatch([Action("checkpoint_now", "job/train", "hazard", "degraded", 1.0)], 1.0)
    assert (r.actuator, r.status) == ("log", "advised") and "would checkpoint_now job/train" in r.detail


def test_actuators_config_is_advise_by_default_and_strict() -> None:
    import pytest
    from pydantic import ValidationError

    from seamguard.actuators.dispatch import build_routes
    from seamguard.actuators.sections import ActuatorsConfig

    cfg = ActuatorsConfig.model_validate(
        {"haproxy": {"socket": "/run/haproxy.sock", "servers": {"node/n1": "be/s1"}},
         "kubernetes": {"host": "http://127.0.0.1:1", "mode": "enforce", "guard": {"max_attempts": 2}}}
    )  # fmt: skip
    routes = {r.actuator.name: r for r in build_routes(cfg)}
    assert routes["haproxy"].mode is Mode.ADVISE and routes["kubernetes"].mode is Mode.ENFORCE
    assert routes["kubernetes"].guard.max_attempts == 2
    with pytest.raises(ValidationError, match="weigth"):
        ActuatorsConfig.model_validate({"haproxy": {"socket": "s", "servers": {}, "weigth": 3}})


def test_the_guard_deadline_covers_every_call_one_action_makes() -> None:
    """A Slurm action makes up to six scontrol/sinfo calls at its own timeout (four, and the JSON
    forms an older Slurm refuses on the first read): the guard waits for all of them, unless it
    was told to wait longer still."""
    from seamguard.actuators.dispatch import build_routes
    from seamguard.actuators.sections import ActuatorsConfig

    cfg = ActuatorsConfig.model_validate(
        {"slurm": {"timeout_s": 10, "mode": "enforce"},
         "haproxy": {"socket": "s", "servers": {}, "timeout_s": 2, "guard": {"timeout_s": 30}}}
    )  # fmt: skip
    routes = {r.actuator.name: r for r in build_routes(cfg)}
    assert routes["slurm"].guard.timeout_s == 60.0
    assert routes["haproxy"].guard.timeout_s == 30.0


class EpochFence:
    """A fence that admits only one epoch, deposed at will (``ha.fence.EtcdFence`` against a real
    etcd is tests/test_ha_leadership.py): what the guard does with the answer."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.asked: list[str] = []

    def admit(self, action: Action) -> str | None:
        self.asked.append(action.key)
        return self.recheck(action)

    def recheck(self, action: Action) -> str | None:
        return None if action.epoch == self.epoch else f"epoch {action.epoch} deposed by {self.epoch}"


def test_a_fenced_action_is_never_carried_out_nor_retried() -> None:
    actuator = Scripted(failures=1)
    fence = EpochFence(3)
    g = Guard(actuator, CFG, rng=random.Random(1), fence=fence)
    (first,) = g.submit(act(), 10.0)  # epoch 3 leads: tried, fails, a retry is scheduled
    assert first.status == "failed" and len(actuator.calls) == 1
    fence.epoch = 4  # a new leader took over before the retry came due
    ((_, _, due),) = g.pending()
    (retry,) = g.due(due)
    assert (retry.status, retry.epoch) == ("fenced", 3) and "deposed by 4" in retry.detail
    assert len(actuator.calls) == 1 and g.pending() == []  # the actuator never saw the retry
    (again,) = g.submit(act(), due + 1.0)  # the same action once more: already handled
    assert again.status == "already" and len(actuator.calls) == 1
    (late,) = g.submit(act("node/n02", at=5.0), due + 2.0)  # a new action of the old epoch
    assert late.status == "fenced" and len(actuator.calls) == 1
    new = Action("drain_node", "node/n02", "quarantine", "quarantine", decided_at=6.0, epoch=4)
    (done,) = g.submit(new, due + 3.0)
    assert done.status == "done" and len(actuator.calls) == 2 and len(fence.asked) == 4


def test_the_dispatcher_hands_its_fence_to_every_enforcing_guard() -> None:
    fence = EpochFence(9)
    d = Dispatcher([Route(Scripted(), Mode.ENFORCE)], fence=fence)
    (r,) = d.dispatch([act()], 0.0)
    assert r.status == "fenced" and fence.asked == [act().key]


class DeposedDuringTheCall(EpochFence):
    """Admits (the etcd record went through), then the leadership is lost while the actuator
    reads: the last check, right before the change, refuses."""

    def admit(self, action: Action) -> str | None:
        self.asked.append(action.key)
        return None

    def recheck(self, action: Action) -> str | None:
        return "deadline passed while the actuator read the cluster"


def test_a_leadership_lost_during_the_actuators_reads_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real webhook receiver hears nothing: the last check sits right before the POST."""
    from seamguard.actuators.webhook import WebhookActuator, WebhookConfig
    from tests.http_stub import Ok, serve

    heard: list[int] = []

    class Counting(Ok):
        def do_POST(self) -> None:  # noqa: N802 - the handler's own name
            heard.append(1)
            super().do_POST()

    with serve(Counting) as url:
        webhook = WebhookActuator(WebhookConfig(url=url), b"s")
        g = Guard(webhook, CFG, rng=random.Random(1), fence=DeposedDuringTheCall(3))
        (r,) = g.submit(act(), 5.0)
        assert (r.status, r.attempt) == ("fenced", 1) and "fenced right before the change" in r.detail
        assert heard == [] and g.pending() == []
        unfenced = Guard(webhook, CFG, rng=random.Random(1))
        assert unfenced.submit(act(), 6.0)[0].status == "done" and heard == [1]  # the receiver works
        webhook.close()
