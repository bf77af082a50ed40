"""The source port: each poll returns a batch in the engine's catalog and what went wrong where.

A source never raises for bad input from the system it reads (garbage text, a target that
times out, a Modbus exception, a failing command): it says so in a notice naming the source,
the place (an URL, a register, a command) and the problem, and returns what it could read, so
the engine keeps running on the rest. A target that stops answering contributes no samples:
its series go stale in the store (``engine.stale_after_s``), never zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from seamguard.telemetry.batch import TelemetryBatch


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
