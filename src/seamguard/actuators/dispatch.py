"""Routes each action to the actuators that take its kind, through each one's guard.

An actuator in ``advise`` mode (the default) answers through the log actuator: the action is
journaled ``advised`` under that actuator's name and nothing is touched. ``enforce`` is opt-in per
actuator. A kind no configured actuator takes goes to the log actuator, so no action is lost.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from seamguard.actuators.base import Actuator, Fence
from seamguard.actuators.guard import Guard, GuardConfig, record_of
from seamguard.actuators.haproxy import HaproxyActuator
from seamguard.actuators.kubernetes import KubernetesActuator
from seamguard.actuators.log import ANY_KIND, LogActuator
from seamguard.actuators.sections import ActuatorsConfig, Mode
from seamguard.actuators.slurm import SlurmActuator
from seamguard.actuators.webhook import WebhookActuator
from seamguard.control.safety import SafetyLayer
from seamguard.journal.records import ActionResultRecord, DecisionRecord, NoticeRecord, TransitionRecord
from seamguard.model.action_kinds import QUARANTINE_KINDS, RELEASE_KIND
from seamguard.model.actions import Action, ActionResult, ActionStatus
from seamguard.timeparse import format_time


@dataclass(frozen=True)
class Route:
    actuator: Actuator
    mode: Mode = Mode.ADVISE
    guard: GuardConfig = field(default_factory=GuardConfig)
    approve_within_s: float = 3600.0  # ``approve`` mode: dropped if nobody approves it in this long


@dataclass(frozen=True)
class Awaiting:
    """An action an actuator in ``approve`` mode holds until an operator approves or rejects it."""

    action: Action
    actuator: str
    since: float
    expires: float

    def to_json(self) -> dict[str, object]:
        a = self.action
        return {"key": a.key, "kind": a.kind, "target": a.target, "actuator": self.actuator,
                "reason": a.reason, "since": self.since, "expires": self.expires}  # fmt: skip


# Calls one action may make, at the backend's own per-call timeout: a Slurm action reads the node,
# the reservations, updates, and reads the node back, and its first reads may also try a JSON form
# the installed Slurm refuses (scontrol --json before 23.02) before the form that works; an HAProxy
# one reads, sets weight and state, and reads back. The guard's deadline must cover them, or a
# slow but healthy call is abandoned to a thread that may still act after its retry.
SLURM_CALLS_PER_ACTION = 6
HAPROXY_CALLS_PER_ACTION = 4


def _covering(guard: GuardConfig, calls: int, per_call_s: float) -> GuardConfig:
    need = calls * per_call_s
    return guard if guard.timeout_s >= need else guard.model_copy(update={"timeout_s": need})


def build_routes(config: ActuatorsConfig) -> list[Route]:
    """The configured backends (the webhook secret is read from its environment variable here)."""
    routes: list[Route] = []
    if config.webhook is not None:
        w = config.webhook
        routes.append(Route(WebhookActuator.from_config(w), w.mode, w.guard, w.approve_within_s))
    if config.haproxy is not None:
        h = config.haproxy
        guard = _covering(h.guard, HAPROXY_CALLS_PER_ACTION, h.timeout_s)
        routes.append(Route(HaproxyActuator(h), h.mode, guard, h.approve_within_s))
    if config.kubernetes is not None:
        k = config.kubernetes
        routes.append(Route(KubernetesActuator(k), k.mode, k.guard, k.approve_within_s))
    if config.slurm is not None:
        sl = config.slurm
        guard = _covering(sl.guard, SLURM_CALLS_PER_ACTION, sl.timeout_s)
        routes.append(Route(SlurmActuator(sl), sl.mode, guard, sl.approve_within_s))
    return routes


class Dispatcher:
    """One guard per enforcing actuator; ``dispatch`` new actions, ``due`` each tick for retries."""

    def __init__(self, routes: Sequence[Route], *, seed: int = 0, fence: Fence | None = None) -> None:
        names = [r.actuator.name for r in routes]
        if len(set(names)) != len(names):
            raise ValueError(f"actuator names must be unique, got {names}")
        self.log = LogActuator()
        self.routes = tuple(routes)
        # One seeded RNG per guard, derived from ``seed`` so that runs are reproducible.
        self.guards: dict[str, Guard] = {
            r.actuator.name: Guard(
                r.actuator, r.guard, rng=random.Random(f"{seed}:{r.actuator.name}"), fence=fence
            )
            for r in routes
            if r.mode in (Mode.ENFORCE, Mode.APPROVE)
        }
        self._within = {r.actuator.name: r.approve_within_s for r in routes}
        self._awaiting: dict[str, Awaiting] = {}  # action key @ actuator -> what waits for a person

    def routes_for(self, kind: str) -> list[Route]:
        return [r for r in self.routes if kind in r.actuator.kinds or ANY_KIND in r.actuator.kinds]

    def dispatch(
        self, actions: Iterable[Action], now: float, *, advise: bool = False, why: str = ""
    ) -> list[ActionResultRecord]:
        """``advise=True`` (a storm brake) makes every actuator advise, whatever its mode."""
        out: list[ActionResultRecord] = []
        for action in actions:
            routes = self.routes_for(action.kind)
            if not routes:
                out.append(
                    record_of(self.log.advise(action, now, on_behalf=self.log.name, why="no actuator"))
                )
                continue
            for route in routes:
                name = route.actuator.name
                if advise or route.mode is Mode.ADVISE:
                    reason = why if advise else "advise mode"
                    out.append(record_of(self.log.advise(action, now, on_behalf=name, why=reason)))
                elif route.mode is Mode.APPROVE:
                    out.extend(self._await(action, name, now))
                else:
                    out.extend(self.guards[name].submit(action, now))
        return out

    def due(self, now: float) -> list[ActionResultRecord]:
        out: list[ActionResultRecord] = []
        for guard in self.guards.values():
            out.extend(guard.due(now))
        return out + self._expire(now)

    # ---- approvals (``approve`` mode) ----------------------------------------------------------
    def awaiting(self) -> list[Awaiting]:
        return sorted(self._awaiting.values(), key=lambda w: (w.since, w.action.key, w.actuator))

    def _await(self, action: Action, actuator: str, now: float) -> list[ActionResultRecord]:
        slot = f"{action.key}@{actuator}"
        if slot in self._awaiting:
            return []
        wait = Awaiting(action, actuator, now, now + self._within[actuator])
        self._awaiting[slot] = wait
        detail = f"awaiting an operator's approval until {format_time(wait.expires)}: seamguard ctl approve {action.key}"
        return [record_of(ActionResult(action, actuator, ActionStatus.AWAITING, detail, now))]

    def approve(self, key: str, now: float, by: str) -> list[ActionResultRecord]:
        """Carry out the action ``key`` waits as, through each actuator's guard (and fence)."""
        out: list[ActionResultRecord] = []
        for slot, w in list(self._awaiting.items()):
            if w.action.key == key:
                del self._awaiting[slot]
                out.extend(self.guards[w.actuator].submit(w.action, now))
        return out

    def reject(self, key: str, now: float, why: str) -> list[ActionResultRecord]:
        out: list[ActionResultRecord] = []
        for slot, w in list(self._awaiting.items()):
            if w.action.key == key:
                del self._awaiting[slot]
                out.append(record_of(ActionResult(w.action, w.actuator, ActionStatus.REJECTED, why, now)))
        return out

    def _expire(self, now: float) -> list[ActionResultRecord]:
        out: list[ActionResultRecord] = []
        for slot, w in list(self._awaiting.items()):
            if w.expires <= now:
                del self._awaiting[slot]
                why = f"nobody approved it within {self._within[w.actuator]:g} s"
                out.append(record_of(ActionResult(w.action, w.actuator, ActionStatus.REJECTED, why, now)))
        return out

    def cancel(self, kinds: set[str], targets: set[str], now: float, why: str) -> list[ActionResultRecord]:
        """Drop pending retries of these kinds on these targets (a drain whose node is being
        released must not fire after the resume), each journaled ``cancelled``."""
        out: list[ActionResultRecord] = []
        for guard in self.guards.values():
            for action, _, _ in guard.pending():
                if action.kind in kinds and action.target in targets and guard.cancel(action.key):
                    out.append(record_of(ActionResult(action, guard.name, ActionStatus.CANCELLED, why, now)))
        for slot, w in list(self._awaiting.items()):  # nor may an approval carry it out later
            if w.action.kind in kinds and w.action.target in targets:
                del self._awaiting[slot]
                out.append(record_of(ActionResult(w.action, w.actuator, ActionStatus.CANCELLED, why, now)))
        return out

    def close(self) -> None:
        """Release what the actuators hold (the webhook's HTTP client)."""
        for route in self.routes:
            close = getattr(route.actuator, "close", None)
            if callable(close):
                close()

    def breakers(self, now: float) -> Mapping[str, str]:
        return {name: g.breaker(now).value for name, g in self.guards.items()}


class Gate(Protocol):
    """The operator's controls between the engine and the actuators (``ops.gate.OperatorGate``):
    a protocol here, so that the actuators do not import the operator's layer above them."""

    def frozen(self) -> npt.NDArray[np.bool_]: ...

    def admit(
        self, decisions: Sequence[DecisionRecord], now: float, epoch: int
    ) -> tuple[tuple[DecisionRecord, ...], tuple[ActionResultRecord, ...], tuple[Action, ...]]: ...

    def hold_back(
        self, actions: Sequence[Action], now: float
    ) -> tuple[list[Action], list[ActionResultRecord]]: ...


class ActionJournal(Protocol):
    def append_actions(
        self, results: Sequence[ActionResultRecord], notices: Sequence[NoticeRecord] = ()
    ) -> None: ...


def actuate(
    safety: SafetyLayer,
    dispatcher: Dispatcher,
    now: float,
    decisions: Sequence[DecisionRecord],
    transitions: Sequence[TransitionRecord] = (),
    journal: ActionJournal | None = None,
    gate: Gate | None = None,
) -> tuple[list[ActionResultRecord], list[NoticeRecord]]:
    """One tick of actuation: retries due, the operator's controls (``gate``), the safety layer's
    verdicts, the dispatch, the journal.

    Every outcome (what an operator's control kept back, the safety layer's own refusals, holds
    and cancellations, and each actuator's answer) is returned and, with ``journal``, written in
    one transaction."""
    results: list[ActionResultRecord] = []
    forced: tuple[Action, ...] = ()
    if gate is not None:
        safety.frozen = gate.frozen()
        decisions, kept_back_early, forced = gate.admit(decisions, now, safety.epoch)
        results += kept_back_early
    tick = safety.tick(now, decisions, transitions)
    results += tick.records
    actions = list(tick.actions)
    if gate is not None:
        actions, kept_back = gate.hold_back(actions, now)
        results += kept_back
    actions = [*forced, *actions]  # an operator's own releases pass the hold their pin sets
    released = {a.target for a in actions if a.kind == RELEASE_KIND}
    if released:
        results += dispatcher.cancel(set(QUARANTINE_KINDS), released, now, "the node is released")
    if not tick.braked:  # a storm brake stops retries too; they wait, and go once it lifts
        results += dispatcher.due(now)
    results += dispatcher.dispatch(actions, now, advise=tick.braked, why=tick.brake_reason)
    safety.settle(results)
    if journal is not None:
        journal.append_actions(results, tick.notices)
    return results, list(tick.notices)
