"""Leadership through a real etcd (Debian's 3.4, started on loopback ports of its own): one leader,
epochs that only grow, a leader that stops acting before its lease can expire, a deposed leader's
fenced write refused by etcd itself, and a cluster that loses its quorum stopping all acting."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from seamguard.ha.fence import EtcdFence
from seamguard.ha.leadership import Leadership
from seamguard.ha.settings import HaConfig
from seamguard.model.actions import Action
from tests.etcd_cluster import etcd_cluster

FAST = {"ttl_s": 2, "renew_deadline_s": 1.0, "retry_s": 0.4, "request_timeout_s": 0.4}


def config(endpoints: list[str], name: str, **over: object) -> HaConfig:
    return HaConfig.model_validate({"endpoints": endpoints, "name": name, **FAST, **over})


def drain(epoch: int, target: str = "node/n0001") -> Action:
    return Action("drain_node", target, "test", "quarantine", time.time(), epoch=epoch)


def until(cond: object, timeout_s: float, step: object = None) -> float:
    """Seconds until ``cond()`` holds (calling ``step()`` between tries), or a failure."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if step is not None:
            step()  # type: ignore[operator]
        if cond():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s")


def test_settings_refuse_a_deadline_that_could_outlive_the_lease() -> None:
    with pytest.raises(
        ValidationError, match=r"renew_deadline_s \(8\) \+ 2 x retry_s \(1\.5\) must be under ttl_s"
    ):
        HaConfig.model_validate({"endpoints": ["http://127.0.0.1:2379"], "renew_deadline_s": 8})
    with pytest.raises(ValidationError, match="request_timeout_s"):
        HaConfig.model_validate({"endpoints": ["http://127.0.0.1:2379"], "request_timeout_s": 2})
    with pytest.raises(ValidationError, match="must start with http"):
        HaConfig.model_validate({"endpoints": ["127.0.0.1:2379"]})
    ok = HaConfig.model_validate({"endpoints": ["http://127.0.0.1:2379"]})
    assert ok.renew_deadline_s + 2 * ok.retry_s < ok.ttl_s  # the documented defaults are safe


def test_one_leader_and_a_takeover_with_a_higher_epoch(tmp_path: Path) -> None:
    with etcd_cluster(tmp_path) as etcd:
        a = Leadership(config(etcd.endpoints, "a"))
        b = Leadership(config(etcd.endpoints, "b"))
        va = a.step()
        vb = b.step()
        assert va.leading and va.epoch > 0 and va.leader == "a"
        assert not vb.leading and vb.leader == "a" and vb.epoch == va.epoch
        assert a.may_act(va.epoch) is None
        assert "does not lead" in (b.may_act(va.epoch) or "")
        assert "not the leadership's" in (a.may_act(va.epoch - 1) or "")
        for _ in range(3):  # renewals carry the leadership past the first deadline
            time.sleep(FAST["retry_s"])
            assert a.step().leading and a.view().epoch == va.epoch
        # a stops renewing (paused): it stops acting within renew_deadline_s ...
        stopped = until(lambda: a.may_act(va.epoch) is not None, 3.0)
        assert stopped <= FAST["renew_deadline_s"] + 0.2
        # ... before b can lead: only once the lease expired (ttl_s after the last renewal)
        assert not b.step().leading
        took = until(lambda: b.view().leading, 6.0, b.step)
        assert took + stopped >= FAST["ttl_s"] - 0.5
        vb = b.view()
        assert vb.epoch > va.epoch
        # a wakes up: its renewal finds the lease gone and it follows b
        va2 = a.step()
        assert not va2.leading and va2.leader == "b" and va2.epoch == vb.epoch
        # b resigns (a clean stop): a leads at the next step, with a higher epoch again
        b.resign()
        va3 = a.step()
        assert va3.leading and va3.epoch > vb.epoch


def test_a_deposed_leader_that_still_believes_it_leads_cannot_record_an_action(tmp_path: Path) -> None:
    """The second fence: a paused leader whose clock never saw the pause (its check passed just
    before it froze) still cannot write, since etcd compares the election key's revision."""
    frozen = [0.0]
    with etcd_cluster(tmp_path) as etcd:
        a = Leadership(config(etcd.endpoints, "a"), clock=lambda: frozen[0])
        b = Leadership(config(etcd.endpoints, "b"))
        old = a.step().epoch
        fence_a = EtcdFence(a)
        assert fence_a.admit(drain(old)) is None  # the leader's action is recorded and admitted
        until(lambda: b.view().leading, 6.0, b.step)  # a's lease expires (a never renews)
        new = b.view().epoch
        assert a.may_act(old) is None  # a's frozen clock says it may still act ...
        why = fence_a.admit(drain(old, "node/n0002"))
        assert why is not None and "no longer holds the election key" in why  # ... etcd says no
        assert EtcdFence(b).admit(drain(new, "node/n0002")) is None
        record = b.etcd.read("/seamguard/leader/actions/drain_node/node/n0002")
        assert record is not None and f'"epoch": {new}' in record.value and '"leader": "b"' in record.value
        assert EtcdFence(b).admit(drain(old, "node/n0003")) is not None  # an action of an older epoch


@pytest.mark.slow
def test_three_members_survive_one_loss_and_stop_acting_without_quorum(tmp_path: Path) -> None:
    with etcd_cluster(tmp_path, size=3) as etcd:
        a = Leadership(config(etcd.endpoints, "a"))
        epoch = a.step().epoch
        assert epoch > 0
        etcd.stop(etcd.members[0])  # the first endpoint: requests fail over to the others
        # If the lost member was etcd's own raft leader, the other two elect one first (on a loaded
        # machine that can outlast the 1 s deadline: then the lease lapses and a new one is taken).
        etcd.wait_healthy(etcd.members[1:])
        until(lambda: a.view().leading, 10.0, a.step)
        epoch = a.view().epoch
        for _ in range(8):  # two members keep working: every renewal goes through
            time.sleep(FAST["retry_s"])
            view = a.step()
            assert view.leading and view.epoch == epoch, view
        assert EtcdFence(a).admit(drain(epoch)) is None
        etcd.stop(etcd.members[1])  # two of three gone: no quorum
        until(lambda: not a.view().leading, 5.0, a.step)
        view = a.view()
        assert view.error.startswith("etcd ")  # and the daemon can say why
        assert a.may_act(epoch) is not None
        assert EtcdFence(a).admit(drain(epoch, "node/n0009")) is not None
        etcd.start(etcd.members[1])  # quorum back: leadership resumes (the same lease, or a new one)
        etcd.wait_healthy([etcd.members[1], etcd.members[2]])
        until(lambda: a.view().leading, 15.0, a.step)


def test_each_replica_announces_its_tick_and_the_status_gives_its_lag(tmp_path: Path) -> None:
    with etcd_cluster(tmp_path) as etcd:
        a = Leadership(config(etcd.endpoints, "a"))
        b = Leadership(config(etcd.endpoints, "b"))
        a.ticked(1000.0)
        b.ticked(990.0)  # b's engine is ten seconds behind
        a.step()
        b.step()
        assert a.step().lag_s() == {"a": 0.0, "b": 10.0}
        assert a.view().to_json()["replica_lag_s"] == {"a": 0.0, "b": 10.0}
        from seamguard.service.metrics import _leadership_metrics

        lag = next(m for m in _leadership_metrics(a.view()) if m.name == "seamguard_ha_replica_lag_seconds")
        assert {s.labels["replica"]: s.value for s in lag.samples} == {"a": 0.0, "b": 10.0}
        # b dies: its announcement goes with its lease
        until(lambda: "b" not in a.view().lag_s(), 6.0, a.step)
        assert a.view().lag_s() == {"a": 0.0}


def test_what_others_write_under_the_replicas_prefix_is_bounded_and_never_trusted(tmp_path: Path) -> None:
    """Anyone who can write to etcd could add keys under the announcements: a replica reads at most
    MAX_REPLICAS of them, cuts names, and skips values that are not a tick time."""
    from seamguard.ha.leadership import MAX_REPLICAS, NAME_CHARS

    with etcd_cluster(tmp_path) as etcd:
        a = Leadership(config(etcd.endpoints, "a"))
        a.ticked(5.0)
        a.step()
        lease = a.etcd.grant(30)
        prefix = "/seamguard/leader/replicas/"
        a.etcd.announce(prefix + "junk", "not a tick", lease)
        a.etcd.announce(prefix + "z" * 5000, "1.0", lease)
        for i in range(MAX_REPLICAS + 10):
            a.etcd.announce(f"{prefix}flood{i:03d}", "2.0", lease)
        lag = a.step().lag_s()
        assert len(lag) <= MAX_REPLICAS and "junk" not in lag
        assert max(len(name) for name in lag) <= NAME_CHARS
