"""The actuator port: one action in, one result out, idempotent.

An actuator carries an action (``model.actions``) out and never raises for a failure of the
system it drives; it raises only for a programming error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

from seamguard.model.actions import Action, ActionResult


class FencedError(Exception):
    """Raised by ``before_side_effect`` when the fence's last check refuses: nothing was changed."""


_LAST_CHECK: ContextVar[Callable[[], str | None] | None] = ContextVar("seamguard_last_check", default=None)


def before_side_effect() -> None:
    """Every actuator calls this right before each change it makes to the system it drives (a
    ``scontrol update``, a ``set server``, a POST, a PATCH), after its reads: under ``ha`` the
    leadership is checked once more there, so a replica whose deadline passed during those reads
    changes nothing (``FencedError``, journaled ``fenced``)."""
    check = _LAST_CHECK.get()
    if check is not None and (why := check()) is not None:
        raise FencedError(why)


@contextmanager
def last_check(check: Callable[[], str | None] | None) -> Iterator[None]:
    """``before_side_effect`` asks ``check`` inside this block (the guard sets it per call)."""
    token = _LAST_CHECK.set(check)
    try:
        yield
    finally:
        _LAST_CHECK.reset(token)


class Fence(Protocol):
    """Asked right before every call of an enforcing actuator (``ha.fence.EtcdFence``)."""

    def admit(self, action: Action) -> str | None:
        """None: carry it out; else why not (the action is journaled ``fenced``, never retried)."""
        ...

    def recheck(self, action: Action) -> str | None:
        """The same, without the network: asked again right before each change (``before_side_effect``)."""
        ...


class Actuator(Protocol):
    """One backend. ``kinds`` lists the action kinds it carries out."""

    name: str
    kinds: frozenset[str]

    def apply(self, action: Action, now: float) -> ActionResult: ...
