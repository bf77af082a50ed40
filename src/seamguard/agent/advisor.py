"""The training side of the checkpoint loop: whether to save at this step, how, and where.

The training loop calls ``Advisor.step`` once per step and ``Advisor.saved`` for every save it
makes. The advisor plans with the engine's own functions (``mode_costs`` and
``plan_checkpoint``), from

* the engine's view of the job (its MTBF now, memory-copy survival, each storage path's state
  and throughput), asked of a ``RiskSource`` every ``refresh_s``;
* its own view: the time since the last durable copy, and each path's write throughput as the
  job's own saves measured it, which prices that path while fresh.

Time is the job's training clock: the step times and blocking times the loop reports, so a
plan does not drift with a paused process and tests need no wall clock.

Fail-safe: when the source fails (unreachable, timed out, a bad answer, any error at all: the
job must outlive its advisor's source), the advisor falls back to the fixed schedule of
``Fallback``, says so once, and returns to planning, saying so once, when the source answers.
No instruction ever asks for a blocking save longer than the job's collective timeout: the
planner is given it, and the fallback is held to it too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from seamguard.agent.instruction import MEMORY, Fallback, Instruction
from seamguard.agent.sources import RiskSource, SourceError
from seamguard.agent.throughput import Measurement, priced, write_seconds
from seamguard.economics.checkpoint_modes import (
    JobCheckpoint,
    Mode,
    ModeCost,
    StoragePath,
    Survival,
    mode_costs,
)
from seamguard.economics.checkpoint_planner import CheckpointPlan, plan_checkpoint
from seamguard.economics.job_risk import JobRisk
from seamguard.model.states import State

logger = logging.getLogger("seamguard.agent")


class Advisor:
    """One job's checkpoint advisor; not thread-safe (one training loop drives it)."""

    def __init__(
        self,
        job: str,
        checkpoint: JobCheckpoint,
        source: RiskSource,
        *,
        timeout_s: float,
        fallback: Fallback,
        refresh_s: float = 30.0,
        measured_fresh_s: float = 3 * 3600.0,
        since_durable_s: float = 0.0,
    ) -> None:
        """``timeout_s``: the job's collective timeout, longer than any save may block.
        ``refresh_s``: how often to ask the source (training seconds; 0: every step).
        ``measured_fresh_s``: how long a measured throughput prices its path: a few intervals, so
        that a path abandoned for being slow is tried again once the engine's figure is all
        there is to go on.
        ``since_durable_s``: age of the copy the job started from (0: a fresh start)."""
        if not job:
            raise ValueError("Advisor.job must name the job")
        _check_checkpoint(checkpoint)
        for name, value, least in (
            ("timeout_s", timeout_s, 0.0),
            ("refresh_s", refresh_s, -1.0),
            ("measured_fresh_s", measured_fresh_s, 0.0),
            ("since_durable_s", since_durable_s, -1.0),
        ):
            if not (math.isfinite(value) and value > least):
                kind = "positive" if least == 0 else "at least 0"
                raise ValueError(f"Advisor.{name} must be a finite number of seconds, {kind}, got {value!r}")
        self.job = job
        self.checkpoint = checkpoint
        self.source = source
        self.timeout_s = timeout_s
        self.fallback = fallback
        self.refresh_s = refresh_s
        self.measured_fresh_s = measured_fresh_s
        self.plan: CheckpointPlan | None = None  # the last plan made from the source's risk
        self._clock = 0.0
        self._durable_start = -since_durable_s  # when the last durable copy's save started
        self._risk: JobRisk | None = None  # None while the source fails
        self._known_paths: tuple[StoragePath, ...] = ()  # the last paths the source named
        self._asked_at = -math.inf
        self._failure: str | None = None
        self._unprotected = False
        self._measured: dict[str, Measurement] = {}
        self._issued_at: float | None = None

    # ---- what the loop reads -------------------------------------------------------------
    @property
    def clock_s(self) -> float:
        """Training seconds so far: step times plus the blocking part of saves."""
        return self._clock

    @property
    def since_durable_s(self) -> float:
        return self._clock - self._durable_start

    @property
    def planning(self) -> bool:
        """True while the advisor plans from the source's risk, False on the fixed fallback."""
        return self._risk is not None

    @property
    def measured(self) -> Mapping[str, Measurement]:
        return dict(self._measured)

    # ---- what the loop calls -------------------------------------------------------------
    def step(self, step: int, step_time_s: float) -> Instruction | None:
        """After training step ``step`` took ``step_time_s`` seconds (saves not included): an
        instruction when a save is due before the next step ends, else None."""
        if not (math.isfinite(step_time_s) and step_time_s >= 0):
            raise ValueError(
                f"step {step}: step_time_s must be a finite number of seconds >= 0, got {step_time_s!r}"
            )
        self._clock += step_time_s
        self._ask(step)
        if self._risk is None:
            return self._fallback_instruction(step_time_s)
        return self._planned_instruction(self._risk, step_time_s)

    def saved(
        self, mode: Mode | str, target: str, blocking_s: float, durable_s: float, size_gb: float
    ) -> None:
        """Report a save once its copy is durable (a blocking save when it returns, a tiered one
        when its background persist completes): ``blocking_s`` the job waited, ``durable_s`` from
        its start until durable, ``size_gb`` written to ``target``."""
        try:
            mode = Mode(mode)
        except ValueError:
            raise ValueError(
                f"saved: unknown mode {mode!r}; expected one of {', '.join(m.value for m in Mode)}"
            ) from None
        if not target:
            raise ValueError("saved: target must name a storage path or 'memory'")
        for name, value in (("blocking_s", blocking_s), ("durable_s", durable_s), ("size_gb", size_gb)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"saved: {name} must be a finite number >= 0, got {value!r}")
        if durable_s < blocking_s:
            raise ValueError(
                f"saved: durable_s ({durable_s:g}) cannot be less than blocking_s ({blocking_s:g})"
            )
        self._clock += blocking_s
        self._durable_start = max(self._durable_start, self._clock - durable_s)
        seconds = write_seconds(mode, blocking_s, durable_s)
        if target != MEMORY and seconds > 0 and size_gb > 0:
            self._measured[target] = Measurement(size_gb / seconds, self._clock)
        self._issued_at = None

    # ---- pieces --------------------------------------------------------------------------
    def _ask(self, step: int) -> None:
        if self._clock - self._asked_at < self.refresh_s:
            return
        self._asked_at = self._clock
        try:
            risk = _checked(self.source.risk(self.job), self.job)
        except Exception as exc:  # any failure of the source: the job must outlive it
            reason = str(exc) or type(exc).__name__
            if self._failure is None:
                fb = self.fallback
                logger.warning(
                    "job %s, step %d: risk source failed (%s); checkpointing on the fixed schedule "
                    "(%s to %s every %g s) until it answers",
                    self.job, step, reason, fb.mode.value, fb.target, fb.interval_s,
                )  # fmt: skip
            self._failure, self._risk = reason, None
            return
        if self._failure is not None:
            logger.warning(
                "job %s, step %d: risk source answers again; planning from its hazard", self.job, step
            )
        self._failure, self._risk = None, risk
        self._known_paths = risk.storage

    def _planned_instruction(self, risk: JobRisk, lead_s: float) -> Instruction | None:
        paths = priced(risk.storage, self._measured, self._clock, self.measured_fresh_s)
        costs = mode_costs(self.checkpoint, paths, risk.survival)
        plan = plan_checkpoint(costs, risk.mtbf_s, self.since_durable_s, self.timeout_s)
        self.plan = plan
        if plan.choice is None:
            if not self._unprotected:
                logger.warning("job %s: no checkpoint can protect it now: %s", self.job, plan.reason)
            self._unprotected = True
            return None
        self._unprotected = False
        target = MEMORY if plan.choice.mode is Mode.IN_MEMORY else plan.choice.target
        return self._due(plan.interval_s, lead_s, plan.choice.mode, target, plan.reason)

    def _fallback_instruction(self, lead_s: float) -> Instruction | None:
        fb = self.fallback
        mode, note = fb.mode, ""
        cost = self._fallback_cost(fb.mode)
        if cost is not None and cost.blocking_s > self.timeout_s:
            fits = [
                c
                for c in self._fallback_costs()
                if c.target == cost.target and c.blocking_s <= self.timeout_s and c.validity > 0
            ]
            if not fits:
                if not self._unprotected:
                    logger.warning(
                        "job %s: the fallback %s to %s would block %.0f s, past the %.0f s collective "
                        "timeout, and no other mode to it fits: no save until the source answers",
                        self.job, fb.mode.value, fb.target, cost.blocking_s, self.timeout_s,
                    )  # fmt: skip
                self._unprotected = True
                return None
            mode = min(fits, key=lambda c: c.blocking_s).mode
            note = (
                f" ({fb.mode.value} would block {cost.blocking_s:.0f} s, past the {self.timeout_s:.0f} s "
                f"collective timeout)"
            )
        self._unprotected = False
        reason = (
            f"fallback, the risk source failed ({self._failure}): {mode.value} to {fb.target} every "
            f"{fb.interval_s:g} s{note}"
        )
        return self._due(fb.interval_s, lead_s, mode, fb.target, reason)

    def _fallback_costs(self) -> list[ModeCost]:
        """Every mode on the fallback target, priced from what the advisor last knew of it."""
        fb = self.fallback
        paths = priced(self._known_paths, self._measured, self._clock, self.measured_fresh_s)
        m = self._measured.get(fb.target)
        if fb.target != MEMORY and all(p.name != fb.target for p in paths) and m is not None:
            paths.append(StoragePath(fb.target, m.write_gbps, m.write_gbps, State.HEALTHY))
        return [c for c in mode_costs(self.checkpoint, paths, Survival()) if c.target in (fb.target, MEMORY)]

    def _fallback_cost(self, mode: Mode) -> ModeCost | None:
        target = MEMORY if mode is Mode.IN_MEMORY else self.fallback.target
        return next((c for c in self._fallback_costs() if c.mode is mode and c.target == target), None)

    def _due(
        self, interval_s: float, lead_s: float, mode: Mode, target: str, reason: str
    ) -> Instruction | None:
        """An instruction when the save is due before the next step ends, once per interval: one
        the loop ignored is repeated an interval later, not every step."""
        remaining = interval_s - self.since_durable_s
        if remaining > lead_s:
            return None
        if self._issued_at is not None and self._clock < self._issued_at + interval_s:
            return None
        self._issued_at = self._clock
        return Instruction(mode, target, max(remaining, 0.0), reason)


def _checked(risk: JobRisk, job: str) -> JobRisk:
    if risk.job != job:
        raise SourceError(f"asked for job {job!r}, answered for {risk.job!r}")
    if not risk.mtbf_s > 0:
        raise SourceError(f"mtbf_s must be positive, got {risk.mtbf_s!r}")
    for name in ("host", "peer"):
        value = getattr(risk.survival, name)
        if not 0 <= value <= 1:
            raise SourceError(f"survival.{name} must be a probability in [0, 1], got {value!r}")
    return risk


def _check_checkpoint(c: JobCheckpoint) -> None:
    if not (math.isfinite(c.size_gb) and c.size_gb > 0):
        raise ValueError(f"JobCheckpoint.size_gb must be positive, got {c.size_gb!r}")
    if not 0 < c.changed_share <= 1:
        raise ValueError(f"JobCheckpoint.changed_share must be in (0, 1], got {c.changed_share!r}")
    for name in ("host_copy_gbps", "peer_gbps", "overhead_s"):
        value = getattr(c, name)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"JobCheckpoint.{name} must be a finite number >= 0, got {value!r}")
