"""The agent's reader of the risk answer against the service's pydantic schema: what the service
writes the agent reads back unchanged, and what the schema refuses the agent refuses too, naming
the same field."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from pydantic import ValidationError

from seamguard.agent.wire import WireError, read_risk
from seamguard.economics.checkpoint_modes import StoragePath, Survival
from seamguard.economics.job_risk import JobRisk
from seamguard.model.states import State
from seamguard.service.risk_schema import JobRiskPayload

RISKS = [
    JobRisk("train", 1.0, 3600.0, 7200.0, Survival(0.9, 1.0),
            (StoragePath("ckpt0", 40.0, 60.0, State.HEALTHY), StoragePath("ckpt1", 0.0, 5.0, State.DEGRADED)),
            "gpu/n0001/3"),
    JobRisk("before-first-tick", -math.inf, math.inf, math.inf, Survival(), (), ""),
    JobRisk("j", 17.5, 1e-3, 5.0, Survival(0.0, 0.5), (StoragePath("s", 1.0, 1.0, State.RECOVERY_UNSAFE),), "x"),
]  # fmt: skip


@pytest.mark.parametrize("risk", RISKS, ids=lambda r: r.job)
def test_what_the_service_writes_the_agent_reads_back(risk: JobRisk) -> None:
    body = JobRiskPayload.from_risk(risk).model_dump_json()
    assert read_risk(body) == risk
    assert read_risk(body.encode()) == risk


def good() -> dict[str, Any]:
    return JobRiskPayload.from_risk(RISKS[0]).model_dump(mode="json")


def with_(path: str, value: Any) -> dict[str, Any]:
    data = good()
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is DELETE:
        del node[last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
    return data


DELETE = object()
BAD = [
    ("mtbf_s", -5.0),
    ("mtbf_s", 0),
    ("nominal_mtbf_s", "-Infinity"),
    ("mtbf_s", "lots"),
    ("mtbf_s", None),
    ("job", ""),
    ("job", 7),
    ("survival.host", 1.5),
    ("survival.peer", -0.1),
    ("survival.extra", 1.0),
    ("storage.0.state", "wobbly"),
    ("storage.0.write_gbps", -1.0),
    ("storage.0.read_gbps", "-Infinity"),
    ("storage.0.name", ""),
    ("storage.1.speed", 3.0),
    ("storage", {"name": "x"}),
    ("top_part", DELETE),
    ("survival", DELETE),
    ("colour", "blue"),
]


@pytest.mark.parametrize(
    ("path", "value"), BAD, ids=[f"{p}=" + ("(deleted)" if v is DELETE else repr(v)) for p, v in BAD]
)
def test_what_the_schema_refuses_the_agent_refuses_naming_the_field(path: str, value: Any) -> None:
    body = json.dumps(with_(path, value))
    with pytest.raises(ValidationError) as schema:
        JobRiskPayload.model_validate_json(body)
    with pytest.raises(WireError) as wire:
        read_risk(body)
    by_schema = {".".join(str(p) for p in e["loc"]) for e in schema.value.errors()}
    assert any(n == path or n.startswith(f"{path}.") for n in by_schema), by_schema
    assert [p.split(":")[0] for p in wire.value.problems] == [path], wire.value.problems


def test_every_problem_is_named_at_once() -> None:
    data = with_("mtbf_s", -1.0)
    data["storage"][0]["state"] = "wobbly"
    with pytest.raises(WireError) as err:
        read_risk(json.dumps(data))
    assert err.value.problems == [
        "mtbf_s: must be greater than 0 (got -1.0)",
        "storage.0.state: unknown state 'wobbly'; expected one of healthy, degraded, recovery_unsafe, "
        "quarantine, harmful, failed, unknown",
    ]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"\xff\xfe", "body: not JSON"),
        (b"[1, 2]", "body: expected an object, got list"),
        (json.dumps(good()).replace('"ts": 1.0', '"ts": NaN').encode(), "^ts: expected a number, got 'NaN'$"),
    ],
)
def test_a_body_that_is_no_risk_object_is_refused(body: bytes, problem: str) -> None:
    with pytest.raises(WireError, match=problem):
        read_risk(body)
