"""The guard around one actuator: circuit breaker, retry budget with jittered backoff, timeout, idempotency.

Why hand-written rather than ``tenacity``/``pybreaker``: both sleep and read the wall clock inside
their logic, and the engine's rule is that time is passed in (``now``) so that the twin, replay
and tests drive it deterministically. Retries here are not sleeps: a failed action is scheduled
for ``now + backoff`` and carried out by the first ``due(now)`` at or after that time.

Every attempt is journaled as an ``ActionResultRecord``; an action that fails past its budget is
journaled ``given_up``, never dropped. The same action key submitted twice is carried out once.
"""

from __future__ import annotations

import contextvars
import logging
import random
import threading
from dataclasses import dataclass
from enum import StrEnum

from pydantic import Field

from seamguard.actuators.base import Actuator, Fence, FencedError, last_check
from seamguard.journal.records import ActionResultRecord
from seamguard.model.actions import Action, ActionResult, ActionStatus
from seamguard.strict_model import StrictModel

log = logging.getLogger("seamguard.actuators.guard")

_SETTLED = frozenset(
    {
        ActionStatus.DONE,
        ActionStatus.ALREADY,
        ActionStatus.REFUSED,
        ActionStatus.ADVISED,
        ActionStatus.SKIPPED,
    }
)


class GuardConfig(StrictModel):
    """Per-actuator guard policy (``actuators.<name>.guard`` in the config)."""

    failures_to_open: int = Field(default=5, ge=1, description="consecutive failures that open the breaker")
    cooldown_s: float = Field(default=60.0, gt=0, description="open -> half-open after this long")
    max_attempts: int = Field(default=4, ge=1, description="calls per action before it is given up")
    backoff_base_s: float = Field(default=2.0, gt=0, description="delay before the first retry")
    backoff_max_s: float = Field(default=300.0, gt=0)
    jitter: float = Field(default=0.5, ge=0.0, le=1.0, description="a delay d becomes d*(1-jitter*U[0,1))")
    timeout_s: float = Field(default=10.0, gt=0, description="one call's limit")
    remember_s: float = Field(default=86400.0, gt=0, description="how long a finished action key is kept")


class Breaker(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class _Pending:
    action: Action
    attempts: int  # calls made so far
    next_at: float


def backoff(config: GuardConfig, attempt: int, rng: random.Random) -> float:
    """Delay after the ``attempt``-th failed call: exponential, capped, jittered downwards."""
    delay = min(config.backoff_max_s, config.backoff_base_s * 2.0 ** (attempt - 1))
    return delay * (1.0 - config.jitter * rng.random())


def call_with_timeout(actuator: Actuator, action: Action, now: float, timeout_s: float) -> ActionResult:
    """Run ``apply`` in a daemon thread and stop waiting after ``timeout_s``.

    A Python thread cannot be killed; a call that overruns keeps running in the background and
    its late result is ignored. Actuators are idempotent (they read the state back), so the
    retry that follows finds the work done if the late call did it."""
    box: list[ActionResult | BaseException] = []

    def run() -> None:
        try:
            box.append(actuator.apply(action, now))
        except BaseException as exc:  # handed to the caller below, journaled as a failure
            box.append(exc)

    # the caller's context (the fence's last check, ``before_side_effect``) goes with the call
    worker = threading.Thread(target=contextvars.copy_context().run, args=(run,), name=f"seamguard-{actuator.name}",
                              daemon=True)  # fmt: skip
    worker.start()
    worker.join(timeout_s)
    if not box:
        return ActionResult(
            action, actuator.name, ActionStatus.FAILED, f"no answer within {timeout_s:g} s", now
        )
    out = box[0]
    if isinstance(out, FencedError):
        return ActionResult(
            action, actuator.name, ActionStatus.FENCED, f"fenced right before the change: {out}", now
        )
    if isinstance(out, BaseException):
        log.error("actuator %s raised on %s %s: %r", actuator.name, action.kind, action.target, out)
        return ActionResult(action, actuator.name, ActionStatus.FAILED, f"actuator raised {out!r}", now)
    return out


class Guard:
    """Guards one actuator. ``submit`` a new action, call ``due`` every tick for the retries."""

    def __init__(self, actuator: Actuator, config: GuardConfig, *, rng: random.Random | None = None,
                 fence: Fence | None = None) -> None:  # fmt: skip
        self.actuator = actuator
        self.config = config
        self.fence = fence  # high availability: the leader's epoch checked before every call
        self.rng = rng if rng is not None else random.Random(0)
        self._failures = 0  # consecutive
        self._opened_at: float | None = None
        self._pending: dict[str, _Pending] = {}
        self._finished: dict[str, tuple[float, str]] = {}  # key -> (when, status) it settled or was given up

    @property
    def name(self) -> str:
        return self.actuator.name

    def breaker(self, now: float) -> Breaker:
        if self._opened_at is None:
            return Breaker.CLOSED
        return Breaker.HALF_OPEN if now >= self._opened_at + self.config.cooldown_s else Breaker.OPEN

    def pending(self) -> list[tuple[Action, int, float]]:
        """Actions waiting for a retry: (action, calls made, when the next is due)."""
        return [(p.action, p.attempts, p.next_at) for p in self._pending.values()]

    def submit(self, action: Action, now: float) -> list[ActionResultRecord]:
        self._forget(now)
        if action.key in self._pending:
            return []  # already waiting for its retry: the same action is one action
        if action.key in self._finished:
            when, status = self._finished[action.key]
            return [
                _record(action, self.name, ActionStatus.ALREADY, now, 0,
                        f"action key {action.key} already handled at {when:.0f} ({status}): not repeated")
            ]  # fmt: skip
        return [self._attempt(_Pending(action, 0, now), now)]

    def due(self, now: float) -> list[ActionResultRecord]:
        """Carry out every retry whose time has come, oldest first."""
        ready = sorted((p for p in self._pending.values() if p.next_at <= now), key=lambda p: p.next_at)
        out: list[ActionResultRecord] = []
        for p in ready:
            del self._pending[p.action.key]
            out.append(self._attempt(p, now))
        return out

    def cancel(self, key: str) -> Action | None:
        """Drop a pending retry (its cause recovered); the caller journals why."""
        p = self._pending.pop(key, None)
        return None if p is None else p.action

    # -- inside ----------------------------------------------------------------------------
    def _attempt(self, p: _Pending, now: float) -> ActionResultRecord:
        action, cfg = p.action, self.config
        if self.fence is not None:
            why = self.fence.admit(action)
            if why is not None:  # a deposed leader's action (or a retry of one) is never carried out
                self._finished[action.key] = (now, ActionStatus.FENCED.value)
                log.error("actuator %s: %s %s fenced: %s", self.name, action.kind, action.target, why)
                return _record(action, self.name, ActionStatus.FENCED, now, p.attempts, why)
        state = self.breaker(now)
        if state is Breaker.OPEN:
            assert self._opened_at is not None
            p.next_at = self._opened_at + cfg.cooldown_s
            self._pending[action.key] = p
            return _record(action, self.name, ActionStatus.FAILED, now, 0,
                           f"not tried: circuit open after {self._failures} consecutive failures;"
                           f" half-open at {p.next_at:.0f}")  # fmt: skip
        p.attempts += 1
        fence = self.fence
        with last_check(None if fence is None else lambda: fence.recheck(action)):
            result = call_with_timeout(self.actuator, action, now, cfg.timeout_s)
        if result.status is ActionStatus.FENCED:  # refused at the last moment: nothing was changed
            self._finished[action.key] = (now, ActionStatus.FENCED.value)
            return _record(action, self.name, ActionStatus.FENCED, now, p.attempts, result.detail)
        if result.status in _SETTLED:
            self._failures = 0
            self._opened_at = None
            self._finished[action.key] = (now, result.status.value)
            return _record(action, self.name, result.status, result.finished_at, p.attempts, result.detail)
        self._failures += 1
        if state is Breaker.HALF_OPEN or self._failures >= cfg.failures_to_open:
            if self._opened_at is None or state is Breaker.HALF_OPEN:
                log.error("actuator %s: circuit open after %d consecutive failures (last: %s)",
                          self.name, self._failures, result.detail)  # fmt: skip
            self._opened_at = now
        if p.attempts >= cfg.max_attempts:
            self._finished[action.key] = (now, ActionStatus.GIVEN_UP.value)
            log.error("actuator %s gave up on %s %s after %d attempts: %s",
                      self.name, action.kind, action.target, p.attempts, result.detail)  # fmt: skip
            return _record(action, self.name, ActionStatus.GIVEN_UP, now, p.attempts,
                           f"gave up after {p.attempts} attempts: {result.detail}")  # fmt: skip
        p.next_at = now + backoff(cfg, p.attempts, self.rng)
        self._pending[action.key] = p
        return _record(action, self.name, ActionStatus.FAILED, now, p.attempts,
                       f"{result.detail}; retry {p.attempts + 1}/{cfg.max_attempts} at {p.next_at:.1f}")  # fmt: skip

    def _forget(self, now: float) -> None:
        horizon = now - self.config.remember_s
        if self._finished and min(t for t, _ in self._finished.values()) < horizon:
            self._finished = {k: v for k, v in self._finished.items() if v[0] >= horizon}


def _record(
    action: Action, actuator: str, status: ActionStatus, ts: float, attempt: int, detail: str
) -> ActionResultRecord:
    return ActionResultRecord(
        ts=ts,
        kind=action.kind,
        target=action.target,
        actuator=actuator,
        status=status.value,
        detail=detail,
        epoch=action.epoch,
        decided_at=action.decided_at,
        attempt=attempt,
    )


def record_of(result: ActionResult, attempt: int = 0) -> ActionResultRecord:
    """The journal record of one actuator answer."""
    return _record(result.action, result.actuator, result.status, result.finished_at, attempt, result.detail)
