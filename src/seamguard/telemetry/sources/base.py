"""The source port: each poll returns a batch in the engine's catalog and what went wrong where.

A source never raises for bad input from the system it reads (garbage text, a target that
times out, a Modbus exception, a failing command): it says so in a notice naming the source,
the place (an URL, a register, a command) and the problem, and returns what it could read, so
the engine keeps running on the rest. A target that stops answering contributes no samples:
its series go stale in the store (``engine.stale_after_s``), never zero.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from seamguard.telemetry.batch import TelemetryBatch

if TYPE_CHECKING:
    from seamguard.model.inventory import JobRecord
    from seamguard.model.world import WorldChange


@dataclass(frozen=True)
class SourceNotice:
    source: str  # the source's name (dcgm, modbus, slurm, prometheus, push...)
    where: str  # the endpoint, register, command or payload field
    message: str  # what was wrong, for an operator

    def __str__(self) -> str:
        return f"{self.source} {self.where}: {self.message}"


@dataclass(frozen=True)
class Collected:
    batch: TelemetryBatch
    notices: tuple[SourceNotice, ...] = ()
    unknown: dict[str, int] = field(default_factory=dict)  # foreign names not in the mapping -> samples


class Source(Protocol):
    name: str

    def collect(self, now: float) -> Collected: ...


@runtime_checkable
class PlacementSource(Protocol):
    """A source that knows where jobs run (Slurm, Kubernetes): the daemon builds its job table from
    every such source's last poll, combined, and follows it as jobs start, grow, shrink and end."""

    def placements(self) -> tuple[JobRecord, ...] | None:
        """The last poll's running jobs; None before a poll or when it could not be read."""
        ...


@runtime_checkable
class WorldFollower(Protocol):
    """A source that resolves names to entity indices and follows a world change itself. A source
    that does not is still read after a change: the daemon re-indexes its samples by entity id."""

    def follow(self, change: WorldChange) -> None: ...


def read_json(text: str) -> Any:
    """A foreign system's JSON, or a ValueError saying in one line why it cannot be read: not JSON,
    an integer past Python's 4,300-digit conversion limit, or nesting thousands deep (which the
    standard parser meets with a RecursionError, not a ValueError)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at character {exc.pos}): {text[:120]!r}") from None
    except ValueError as exc:
        raise ValueError(f"not JSON we can read ({exc})") from None
    except RecursionError:
        raise ValueError("not JSON we can read (nested too deeply)") from None


def bug_text(doing: str, exc: Exception) -> str:
    """What a notice says of an exception no input should cause, caught at a source's boundary
    (a source never raises for its input): what was being done, and that it is a bug to report."""
    return f"{type(exc).__name__}: {exc} while {doing} (a seamguard bug: please report it)"
