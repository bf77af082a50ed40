"""The wire form of a job's risk (``control.checkpoint_loop.JobRisk``), shared by both ends, and of
the engine's economics (``economics.job_value.JobEconomics``).

The service writes it and the agent's HTTP source reads it through the same pydantic model, so a
malformed answer fails with the name of the field at fault. Infinite values (an MTBF with no
hazard, the time before the engine's first tick) travel as the strings ``"Infinity"`` and
``"-Infinity"``: JSON has no number for them.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator

from seamguard.control.checkpoint_loop import JobRisk
from seamguard.economics.checkpoint_modes import StoragePath, Survival
from seamguard.economics.job_value import JobEconomics
from seamguard.model.states import State


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="strings")


class SurvivalPayload(_Wire):
    host: float = Field(ge=0, le=1)
    peer: float = Field(ge=0, le=1)


class StoragePathPayload(_Wire):
    name: str = Field(min_length=1)
    write_gbps: float = Field(ge=0)
    read_gbps: float = Field(ge=0)
    state: str  # a state label: "healthy", "recovery_unsafe", ...

    @field_validator("state")
    @classmethod
    def _known_state(cls, value: str) -> str:
        return State.parse(value).label


class JobRiskPayload(_Wire):
    job: str = Field(min_length=1)
    ts: float  # engine time of the tick it describes (-Infinity before the first)
    mtbf_s: float = Field(gt=0)
    nominal_mtbf_s: float = Field(gt=0)
    survival: SurvivalPayload
    storage: list[StoragePathPayload]
    top_part: str

    @classmethod
    def from_risk(cls, risk: JobRisk) -> JobRiskPayload:
        return cls(
            job=risk.job,
            ts=risk.ts,
            mtbf_s=risk.mtbf_s,
            nominal_mtbf_s=risk.nominal_mtbf_s,
            survival=SurvivalPayload(host=risk.survival.host, peer=risk.survival.peer),
            storage=[
                StoragePathPayload(
                    name=p.name, write_gbps=p.write_gbps, read_gbps=p.read_gbps, state=p.state.label
                )
                for p in risk.storage
            ],
            top_part=risk.top_part,
        )

    def to_risk(self) -> JobRisk:
        return JobRisk(
            job=self.job,
            ts=self.ts,
            mtbf_s=self.mtbf_s,
            nominal_mtbf_s=self.nominal_mtbf_s,
            survival=Survival(host=self.survival.host, peer=self.survival.peer),
            storage=tuple(
                StoragePath(p.name, p.write_gbps, p.read_gbps, State.parse(p.state)) for p in self.storage
            ),
            top_part=self.top_part,
        )


class JobEconomicsPayload(_Wire):
    """One running job; a figure that does not apply (no deadline: no slip risk) is null."""

    job: str
    gpus: float
    expected_ettr: float | None
    useful_throughput: float | None
    failure_adjusted_gpus: float | None
    rollback_gpu_h: float | None
    rollback_cost: float | None
    slip_probability: float | None


class EconomicsPayload(_Wire):
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
