"""The embedded default actuator: it says what it would do and does nothing.

It needs nothing installed, so a fresh install decides and journals from its first tick. In
advise mode every actuator answers through it (``advise``): the journal then shows, per backend,
the exact action that enforce mode would have carried out.
"""

from __future__ import annotations

import logging

from seamguard.model.actions import Action, ActionResult, ActionStatus

log = logging.getLogger("seamguard.actuators.log")

ANY_KIND = "*"  # in ``kinds``: the actuator takes every action kind


def describe(action: Action) -> str:
    params = "".join(f" {k}={v}" for k, v in action.params)
    return f"{action.kind} {action.target}{params} ({action.state}: {action.reason})"


class LogActuator:
    """Logs each action at INFO and answers ``advised``."""

    name = "log"
    kinds: frozenset[str] = frozenset({ANY_KIND})

    def apply(self, action: Action, now: float) -> ActionResult:
        return self.advise(action, now, on_behalf=self.name)

    def advise(self, action: Action, now: float, *, on_behalf: str, why: str = "") -> ActionResult:
        """What ``on_behalf`` would do, logged and returned as ``advised`` (``why``: advise mode, a brake)."""
        detail = f"would {describe(action)}" + (f" [{why}]" if why else "")
        log.info("%s: %s", on_behalf, detail)
        return ActionResult(action, on_behalf, ActionStatus.ADVISED, detail, now)
