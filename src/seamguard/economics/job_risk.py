"""What a job's runtime needs from the engine to plan its own saves: made by the checkpoint loop
(``control.checkpoint_loop``), read by the training-side agent (``seamguard.agent``).

A module of its own, with nothing heavier than the checkpoint modes' types below it, so that a
training job importing the agent does not load the engine, its config and its sources.
"""

from __future__ import annotations

from dataclasses import dataclass

from seamguard.economics.checkpoint_modes import StoragePath, Survival


@dataclass(frozen=True)
class JobRisk:
    job: str
    ts: float
    mtbf_s: float
    nominal_mtbf_s: float
    survival: Survival
    storage: tuple[StoragePath, ...]  # every path the job may use, as it delivers now
    top_part: str  # the part adding most to the job's hazard ("" when none)
