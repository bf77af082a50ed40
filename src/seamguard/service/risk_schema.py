"""The wire form of a job's risk (``economics.job_risk.JobRisk``), shared by both ends.

The service writes it through this pydantic model (and FastAPI documents it); the agent reads
it with ``agent.wire``, which checks the same fields and bounds without pydantic
(``tests/test_agent_wire.py`` holds the two together). Infinite values (an MTBF with no
hazard, the time before the engine's first tick) travel as the strings ``"Infinity"`` and
``"-Infinity"``: JSON has no number for them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from seamguard.economics.job_risk import JobRisk
from seamguard.model.states import State


class Wire(BaseModel):
    """Every payload: no unknown keys, frozen, infinities as strings."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="strings")


class SurvivalPayload(Wire):
    host: float = Field(ge=0, le=1)
    peer: float = Field(ge=0, le=1)


class StoragePathPayload(Wire):
    name: str = Field(min_length=1)
    write_gbps: float = Field(ge=0)
    read_gbps: float = Field(ge=0)
    state: str  # a state label: "healthy", "recovery_unsafe", ...

    @field_validator("state")
    @classmethod
    def _known_state(cls, value: str) -> str:
        return State.parse(value).label


class JobRiskPayload(Wire):
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
