"""The state model, job classes and admission verdicts shared by every layer.

States are small integers so that a whole fleet's states fit in one numpy array; the
order is the display order, not a severity ladder (``harmful`` and ``recovery_unsafe``
mean different things, neither is "worse").
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class State(IntEnum):
    HEALTHY = 0
    DEGRADED = 1
    RECOVERY_UNSAFE = 2
    QUARANTINE = 3
    HARMFUL = 4
    FAILED = 5
    UNKNOWN = 6

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> State:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown state {text!r}; expected one of {', '.join(STATE_LABELS)}") from None


STATE_LABELS: tuple[str, ...] = tuple(s.label for s in State)
# States that ask nothing of anyone: a quarantine's cause here counts as recovered.
CALM_STATES: frozenset[State] = frozenset({State.HEALTHY, State.UNKNOWN})

# The order an operator's roll-up reads states in (a node is as unwell as its worst GPU): a display
# order, not the state model's; unknown sits just above healthy, since a part nobody hears from is
# worth a look but is not known to be unwell.
ROLLUP_SEVERITY: dict[State, int] = {State.HEALTHY: 0, State.UNKNOWN: 1, State.DEGRADED: 2, State.RECOVERY_UNSAFE: 3,
                                     State.QUARANTINE: 4, State.HARMFUL: 5, State.FAILED: 6}  # fmt: skip

# States in which an entity is out of normal service (the planner removes or fences it).
OUT_OF_SERVICE: frozenset[State] = frozenset({State.QUARANTINE, State.HARMFUL, State.FAILED})


class JobClass(StrEnum):
    SYNC_TRAINING = "sync_training"
    PIPELINE_TRAINING = "pipeline_training"
    ASYNC_BATCH_INFERENCE = "async_batch_inference"
    ONLINE_PREFILL = "online_prefill"
    ONLINE_DECODE = "online_decode"
    CHECKPOINT_PATH = "checkpoint_path"
    EXPLORATORY = "exploratory"

    @classmethod
    def parse(cls, text: str) -> JobClass:
        try:
            return cls(text.strip())
        except ValueError:
            allowed = ", ".join(c.value for c in cls)
            raise ValueError(f"unknown job class {text!r}; expected one of {allowed}") from None


# Classes whose ranks wait for each other every step: one slow rank stalls them all,
# which is what makes failure amplification (FAE) grow with job size.
TRAINING_CLASSES: frozenset[JobClass] = frozenset({JobClass.SYNC_TRAINING, JobClass.PIPELINE_TRAINING})
SYNCHRONOUS_CLASSES: frozenset[JobClass] = frozenset(
    {JobClass.SYNC_TRAINING, JobClass.PIPELINE_TRAINING, JobClass.ONLINE_PREFILL}
)


class Admission(StrEnum):
    ADMIT = "admit"
    AVOID = "avoid"
    DENY = "deny"
