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


@dataclass(frozen=True)
class Route:
    actuator: Actuator
    mode: Mode = Mode.ADVISE
    guard: GuardConfig = field(default_factory=GuardConfig)


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
        routes.append(
            Route(WebhookActuator.from_config(config.webhook), config.webhook.mode, config.webhook.guard)
        )
    if config.haproxy is not None:
        h = config.haproxy
        routes.append(
            Route(HaproxyActuator(h), h.mode, _covering(h.guard, HAPROXY_CALLS_PER_ACTION, h.timeout_s))
        )
    if config.kubernetes is not None:
        k = config.kubernetes
        routes.append(Route(KubernetesActuator(k), k.mode, k.guard))
    if config.slurm is not None:
        sl = config.slurm
        routes.append(
            Route(SlurmActuator(sl), sl.mode, _covering(sl.guard, SLURM_CALLS_PER_ACTION, sl.timeout_s))
        )
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
            if r.mode is Mode.ENFORCE
        }

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
                else:
                    out.extend(self.guards[name].submit(action, now))
        return out

    def due(self, now: float) -> list[ActionResultRecord]:
        out: list[ActionResultRecord] = []
        for guard in self.guards.values():
            out.extend(guard.due(now))
        return out

    def cancel(self, kinds: set[str], targets: set[str], now: float, why: str) -> list[ActionResultRecord]:
        """Drop pending retries of these kinds on these targets (a drain whose node is being
        released must not fire after the resume), each journaled ``cancelled``."""
        out: list[ActionResultRecord] = []
        for guard in self.guards.values():
            for action, _, _ in guard.pending():
                if action.kind in kinds and action.target in targets and guard.cancel(action.key):
                    out.append(record_of(ActionResult(action, guard.name, ActionStatus.CANCELLED, why, now)))
        return out

    def close(self) -> None:
        """Release what the actuators hold (the webhook's HTTP client)."""
        for route in self.routes:
            close = getattr(route.actuator, "close", None)
            if callable(close):
                close()

    def breakers(self, now: float) -> Mapping[str, str]:
        return {name: g.breaker(now).value for name, g in self.guards.items()}


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
) -> tuple[list[ActionResultRecord], list[NoticeRecord]]:
    """One tick of actuation: retries due, the safety layer's verdicts, the dispatch, the journal.

    Every outcome (the safety layer's own refusals, holds and cancellations, and each actuator's
    answer) is returned and, with ``journal``, written in one transaction."""
    tick = safety.tick(now, decisions, transitions)
    results = list(tick.records)
    released = {a.target for a in tick.actions if a.kind == RELEASE_KIND}
    if released:
        results += dispatcher.cancel(set(QUARANTINE_KINDS), released, now, "the node is released")
    if not tick.braked:  # a storm brake stops retries too; they wait, and go once it lifts
        results += dispatcher.due(now)
    results += dispatcher.dispatch(tick.actions, now, advise=tick.braked, why=tick.brake_reason)
    safety.settle(results)
    if journal is not None:
        journal.append_actions(results, tick.notices)
    return results, list(tick.notices)
