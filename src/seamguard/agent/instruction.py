"""What the advisor tells the training loop, and what it does when it cannot plan."""

from __future__ import annotations

import math
from dataclasses import dataclass

from seamguard.economics.checkpoint_modes import Mode

MEMORY = "memory"  # the target of an in-memory save


@dataclass(frozen=True)
class Instruction:
    """Save with ``mode`` to ``target`` (a storage path's name, or ``"memory"``), starting within
    ``deadline_s`` seconds of training (0: now). ``reason`` is the planner's sentence."""

    mode: Mode
    target: str
    deadline_s: float
    reason: str


@dataclass(frozen=True)
class Fallback:
    """The fixed schedule used while the risk source does not answer: ``mode`` to ``target``
    every ``interval_s`` seconds of training, the timer a job would run without seamguard."""

    target: str
    interval_s: float
    mode: Mode = Mode.FULL

    def __post_init__(self) -> None:
        if not (math.isfinite(self.interval_s) and self.interval_s > 0):
            raise ValueError(
                f"Fallback.interval_s must be a positive number of seconds, got {self.interval_s!r}"
            )
        if not isinstance(self.mode, Mode):
            raise ValueError(
                f"Fallback.mode must be a Mode ({', '.join(m.value for m in Mode)}), got {self.mode!r}"
            )
        if (self.mode is Mode.IN_MEMORY) != (self.target == MEMORY):
            raise ValueError(
                f"Fallback: an in_memory save targets {MEMORY!r} and only it does, got mode "
                f"{self.mode.value} to {self.target!r}"
            )
        if not self.target:
            raise ValueError("Fallback.target must name a storage path")
