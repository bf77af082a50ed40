"""The actuator port: one action in, one result out, idempotent.

An actuator carries an action (``model.actions``) out and never raises for a failure of the
system it drives; it raises only for a programming error.
"""

from __future__ import annotations

from typing import Protocol

from seamguard.model.actions import Action, ActionResult


class Fence(Protocol):
    """Asked right before every call of an enforcing actuator (``ha.fence.EtcdFence``)."""

    def admit(self, action: Action) -> str | None:
        """None: carry it out; else why not (the action is journaled ``fenced``, never retried)."""
        ...


class Actuator(Protocol):
    """One backend. ``kinds`` lists the action kinds it carries out."""

    name: str
    kinds: frozenset[str]

    def apply(self, action: Action, now: float) -> ActionResult: ...
