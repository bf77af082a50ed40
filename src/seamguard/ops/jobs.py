"""Each running job as an operator weighs it: its checkpoint plan, expected ETTR, what a failure now
would roll back, the risk it slips its deadline (one table for the terminal, ``render``, the console
and ``/v1/fleet``), and the failure mode costing it throughput now (``diagnose.modes``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from seamguard.control.controller import Controller
from seamguard.diagnose.job_signals import job_signals
from seamguard.diagnose.modes import Diagnoser, Finding
from seamguard.ops.diagnosis_view import DiagnosisView, diagnosis_view


def job_rows(controller: Controller) -> list[dict[str, object]]:
    """One row per running job; [] before the engine has planned (no economics yet)."""
    econ, loop = controller.economics, controller.checkpoint_loop
    if econ is None or loop is None or loop.last is None:
        return []
    plans = loop.last.plans
    out: list[dict[str, object]] = []
    for j, rec in enumerate(controller.topology.jobs):
        if not econ.gpus[j] > 0:
            continue
        c = int(plans.choice[j])
        out.append({
            "job": rec.job,
            "gpus": float(econ.gpus[j]),
            "plan": None if c < 0 else f"{loop.last.table.modes[c].value} to {loop.last.table.targets[c]}",
            "every_s": None if c < 0 else _num(float(plans.interval_s[j])),
            "expected_ettr": _num(1.0 - float(econ.expected_waste[j])),
            "rollback_gpu_h": _num(float(econ.rollback_gpu_h[j])),
            "rollback_cost": _num(float(econ.rollback_cost[j])),
            "slip_probability": _num(float(econ.slip_probability[j])),
        })  # fmt: skip
    return out


def _num(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 6)


@dataclass
class JobWatch:
    """The daemon's view of its jobs, replaced whole each tick (the HTTP threads read it without
    the engine's lock): their stakes, and what mode each is in now."""

    diagnoser: Diagnoser = field(default_factory=Diagnoser)
    rows: list[dict[str, object]] = field(default_factory=list)
    view: DiagnosisView = field(default_factory=DiagnosisView)  # findings, parts' and domains' blast radius

    @property
    def findings(self) -> tuple[Finding, ...]:
        return self.view.findings

    def update(self, controller: Controller, now: float) -> None:
        self.rows = job_rows(controller)
        self.view = diagnosis_view(controller, now, self.diagnoser.tick(job_signals(controller, now)))

    def finding(self, job: str) -> Finding | None:
        return next((f for f in self.findings if f.job == job), None)
