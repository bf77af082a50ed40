"""Fenced actions: each one recorded in etcd under the leader's epoch before an actuator runs it.

Leader election does not stop a leader that was paused (a long GC, a frozen VM, SIGSTOP) from
waking up after its lease expired and acting on what it decided before. So every action passes
``EtcdFence.admit`` right before its actuator's call (``actuators.guard``):

1. this replica still leads under the action's epoch and its own deadline has not passed
   (``Leadership.may_act``, no network);
2. the action is written to etcd in a transaction whose compare holds only while the election key
   still has that epoch and names this replica (``etcd.is_current``): a deposed leader's write fails
   however late it arrives, since a new leadership has recreated the key at a higher revision;
3. the deadline is checked again, right before the call, and once more inside the actuator right
   before each change it makes, after its reads (``recheck``, ``actuators.base.before_side_effect``).

The record is the latest action per kind and target (``<key>/actions/<kind>/<target>``), so etcd
holds at most one per node and kind, and a new leader can read what the last one began.
"""

from __future__ import annotations

import json

from seamguard.ha.etcd import EtcdUnavailableError, b64, is_current, succeeded
from seamguard.ha.leadership import Leadership
from seamguard.model.actions import Action


class EtcdFence:
    def __init__(self, leadership: Leadership) -> None:
        self.leadership = leadership

    def record_key(self, action: Action) -> str:
        return f"{self.leadership.config.key}/actions/{action.kind}/{action.target}"

    def admit(self, action: Action) -> str | None:
        """None: go ahead; else why the action must not be carried out (it is not retried)."""
        lead = self.leadership
        why = lead.may_act(action.epoch)
        if why is not None:
            return why
        value = json.dumps({"key": action.key, "epoch": action.epoch, "leader": lead.name,
                            "decided_at": action.decided_at, "reason": action.reason[:500]})  # fmt: skip
        try:
            response = lead.etcd.txn(
                is_current(lead.config.key, action.epoch, lead.name),
                [{"request_put": {"key": b64(self.record_key(action)), "value": b64(value)}}],
            )
        except EtcdUnavailableError as exc:
            return f"not recorded in etcd, so not carried out: {exc}"
        if not succeeded(response):
            return f"epoch {action.epoch} no longer holds the election key: a newer leader acts"
        return lead.may_act(action.epoch)

    def recheck(self, action: Action) -> str | None:
        """Right before each change an actuator makes (``actuators.base.before_side_effect``)."""
        return self.leadership.may_act(action.epoch)
