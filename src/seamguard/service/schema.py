"""The wire form of the engine's economics (``economics.job_value.JobEconomics``); a job's risk,
which the training-side agent reads too (``agent.wire``), is in ``risk_schema``."""

from __future__ import annotations

import math

from seamguard.economics.job_value import JobEconomics
from seamguard.service.risk_schema import Wire


class JobEconomicsPayload(Wire):
    """One running job; a figure that does not apply (no deadline: no slip risk) is null."""

    job: str
    gpus: float
    expected_ettr: float | None
    useful_throughput: float | None
    failure_adjusted_gpus: float | None
    rollback_gpu_h: float | None
    rollback_cost: float | None
    slip_probability: float | None


class EconomicsPayload(Wire):
    ts: float
    fleet: dict[str, float | None]
    jobs: list[JobEconomicsPayload]

    @classmethod
    def from_economics(cls, ts: float, names: list[str], econ: JobEconomics) -> EconomicsPayload:
        rows = [
            JobEconomicsPayload(
                job=name,
                gpus=float(econ.gpus[j]),
                expected_ettr=_num(1.0 - float(econ.expected_waste[j])),
                useful_throughput=_num(float(econ.useful_throughput[j])),
                failure_adjusted_gpus=_num(float(econ.failure_adjusted_gpus[j])),
                rollback_gpu_h=_num(float(econ.rollback_gpu_h[j])),
                rollback_cost=_num(float(econ.rollback_cost[j])),
                slip_probability=_num(float(econ.slip_probability[j])),
            )
            for j, name in enumerate(names)
            if econ.gpus[j] > 0
        ]
        return cls(ts=ts, fleet={k: _num(v) for k, v in econ.fleet().items()}, jobs=rows)


def _num(value: float) -> float | None:
    return None if math.isnan(value) else value
