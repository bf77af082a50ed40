"""Where the advisor gets a job's risk: one small protocol, with in-process and static sources.

A source returns the engine's ``JobRisk`` for a job (its MTBF now, how likely a memory copy is to
survive, each storage path's throughput and state) or raises ``SourceError`` saying why not.
The HTTP source is in ``agent.http_source``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from seamguard.economics.checkpoint_modes import StoragePath, Survival
from seamguard.economics.job_risk import JobRisk

if TYPE_CHECKING:  # the engine itself is only needed by an in-process source's caller
    from seamguard.control.controller import Controller


class SourceError(RuntimeError):
    """The source could not say what the job's risk is now (unreachable, timed out, bad answer)."""


class RiskSource(Protocol):
    def risk(self, job: str) -> JobRisk:
        """The job's risk now; raises ``SourceError`` when that cannot be had."""
        ...


class ControllerSource:
    """The engine in this process. ``lock`` is the one held around ``Controller.tick``."""

    def __init__(self, controller: Controller, lock: threading.Lock | None = None) -> None:
        self.controller = controller
        self.lock = lock if lock is not None else threading.Lock()

    def risk(self, job: str) -> JobRisk:
        with self.lock:
            try:
                return self.controller.job_risk(job)
            except KeyError as exc:
                raise SourceError(f"the engine has no job {job!r} in its job table") from exc
            except LookupError as exc:  # an engine that has no risk to give
                raise SourceError(str(exc)) from exc


@dataclass(frozen=True)
class StaticSource:
    """Fixed risk, for a job run without an engine: an MTBF, memory-copy survival and paths
    as their operator knows them. The advisor still measures the paths as it saves."""

    mtbf_s: float
    paths: tuple[StoragePath, ...]
    survival: Survival = field(default_factory=Survival)

    def __post_init__(self) -> None:
        if not self.mtbf_s > 0:
            raise ValueError(f"StaticSource.mtbf_s must be positive (inf: never fails), got {self.mtbf_s!r}")
        names = [p.name for p in self.paths]
        if len(set(names)) != len(names):
            raise ValueError(f"StaticSource.paths names a path twice: {', '.join(names)}")
        for p in self.paths:
            if not (p.write_gbps > 0 and p.read_gbps > 0):
                raise ValueError(f"StaticSource path {p.name!r}: write_gbps and read_gbps must be positive")
        for name in ("host", "peer"):
            value = getattr(self.survival, name)
            if not 0 <= value <= 1:
                raise ValueError(
                    f"StaticSource.survival.{name} must be a probability in [0, 1], got {value!r}"
                )

    def risk(self, job: str) -> JobRisk:
        return JobRisk(job, 0.0, self.mtbf_s, self.mtbf_s, self.survival, self.paths, "")
