"""What seamguard keeps of Slurm's nodes, jobs and reservations: the same records whichever form
(``--json`` or text) they were read from, so the source and the actuator decide the same way."""

from __future__ import annotations

from dataclasses import dataclass

import hostlist  # type: ignore[import-untyped]

from seamguard.telemetry.sources.slurm_states import is_down

REASON_PREFIX = "seamguard:"  # every reason seamguard sets starts with this; only those it may undo


@dataclass(frozen=True)
class SlurmNode:
    name: str
    base: str  # one of slurm_states.BASE_STATES
    flags: frozenset[str]
    reason: str = ""
    reason_user: str = ""
    reason_time: float | None = None
    features: tuple[str, ...] = ()  # AvailableFeatures
    active_features: tuple[str, ...] = ()
    partitions: tuple[str, ...] = ()
    raw_state: str = ""  # as Slurm printed it (JSON: the complete BASE+FLAG form)

    @property
    def drained(self) -> bool:
        """Drained or draining: no new work is placed on it."""
        return "DRAIN" in self.flags

    @property
    def down(self) -> bool:
        """Slurm runs no work on it: base DOWN (or ERROR), or FAIL, or a rejected registration."""
        return is_down(self.base, self.flags)

    @property
    def not_responding(self) -> bool:
        return "NOT_RESPONDING" in self.flags

    @property
    def reserved(self) -> bool:
        """In a maintenance window or a reservation: seamguard leaves it alone."""
        return bool(self.flags & {"MAINTENANCE", "RESERVED"})

    @property
    def drained_by_seamguard(self) -> bool:
        return self.drained and self.reason.startswith(REASON_PREFIX)


@dataclass(frozen=True)
class SlurmReservation:
    name: str
    nodes: tuple[str, ...]
    flags: frozenset[str]
    state: str  # ACTIVE or INACTIVE
    start: float | None
    end: float | None  # inf: never ends (JSON's infinite end time)

    @property
    def maintenance(self) -> bool:
        return "MAINT" in self.flags

    @property
    def active(self) -> bool:
        return self.state == "ACTIVE"


@dataclass(frozen=True)
class SlurmJob:
    job_id: str  # as squeue's %i prints it: 17, 17_3 (array task), 17_[1-9%2], 17+1 (het)
    name: str
    state: str  # RUNNING, PENDING, COMPLETING, ... (squeue's %T: a flag such as COMPLETING wins)
    partition: str
    user: str
    nodes: tuple[str, ...]  # expanded
    start: float | None
    end: float | None  # None: no end time (unlimited)


def expand_hostlist(text: str) -> list[str]:
    """``n[001-003,007]`` -> names. Uses python-hostlist (Slurm's own syntax) rather than one
    ``scontrol show hostnames`` process per job list; raises ValueError on a malformed list."""
    if text in ("", "(null)", "None"):
        return []
    try:
        return [str(h) for h in hostlist.expand_hostlist(text)]
    except hostlist.BadHostlist as exc:
        raise ValueError(f"bad hostlist {text!r}: {exc}") from None
