"""Reading the service's risk answer (``service.risk_schema.JobRiskPayload``) in a training job.

Written by hand over the standard library's ``json`` rather than through the service's pydantic
model: a training image should not need pydantic (nor its import time) to ask for a job's risk.
The checks are the schema's (no unknown or missing keys, the same bounds, infinities as the
strings ``"Infinity"`` and ``"-Infinity"``); ``tests/test_agent_wire.py`` holds the two to one
another on the payloads the service writes and on malformed ones. Every problem found is named by
its field path (``storage.0.state``), all of them at once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from seamguard.economics.checkpoint_modes import StoragePath, Survival
from seamguard.economics.job_risk import JobRisk
from seamguard.model.states import State

_INFINITIES = {"Infinity": math.inf, "-Infinity": -math.inf}
Bound = Callable[[float], bool]


class WireError(ValueError):
    """A malformed answer; ``problems`` are ``"field.path: what is wrong"``, in field order."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class _Reader:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def mapping(self, value: Any, where: str, keys: tuple[str, ...]) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.problems.append(f"{where or 'body'}: expected an object, got {type(value).__name__}")
            return None
        prefix = f"{where}." if where else ""
        self.problems += [f"{prefix}{k}: unknown key" for k in value if k not in keys]
        self.problems += [f"{prefix}{k}: missing" for k in keys if k not in value]
        return value if all(k in value for k in keys) else None

    def number(self, value: Any, where: str, ok: Bound = math.isfinite, bound: str = "") -> float:
        if isinstance(value, str) and value in _INFINITIES:
            number = _INFINITIES[value]
        elif isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        else:
            self.problems.append(f"{where}: expected a number, got {value!r}")
            return math.nan
        if math.isnan(number) or not ok(number):
            self.problems.append(f"{where}: must be {bound or 'finite'} (got {value!r})")
        return number

    def text(self, value: object, where: str, *, empty: bool = True) -> str:
        if not isinstance(value, str):
            self.problems.append(f"{where}: expected a string, got {value!r}")
            return ""
        if not empty and not value:
            self.problems.append(f"{where}: must not be empty")
        return value

    def state(self, value: Any, where: str) -> State:
        try:
            return State.parse(self.text(value, where))
        except ValueError as exc:
            if isinstance(value, str):
                self.problems.append(f"{where}: {exc}")
            return State.UNKNOWN


def _positive(x: float) -> bool:
    return x > 0


def _not_negative(x: float) -> bool:
    return x >= 0


def _share(x: float) -> bool:
    return 0 <= x <= 1


def _path(r: _Reader, value: Any, where: str) -> StoragePath | None:
    p = r.mapping(value, where, ("name", "write_gbps", "read_gbps", "state"))
    if p is None:
        return None
    return StoragePath(
        r.text(p["name"], f"{where}.name", empty=False),
        r.number(p["write_gbps"], f"{where}.write_gbps", _not_negative, ">= 0"),
        r.number(p["read_gbps"], f"{where}.read_gbps", _not_negative, ">= 0"),
        r.state(p["state"], f"{where}.state"),
    )


def read_risk(body: bytes | str) -> JobRisk:
    """The ``JobRisk`` in ``body`` (the service's JSON); raises ``WireError`` naming each bad field."""
    r = _Reader()
    try:
        data = json.loads(body, parse_constant=lambda name: name)  # bare NaN/Infinity: not JSON
    except ValueError as exc:  # UnicodeDecodeError is one too
        raise WireError([f"body: not JSON: {exc}"]) from None
    top = r.mapping(data, "", ("job", "ts", "mtbf_s", "nominal_mtbf_s", "survival", "storage", "top_part"))
    if top is None:
        raise WireError(r.problems)
    job = r.text(top["job"], "job", empty=False)
    ts = r.number(top["ts"], "ts", lambda _: True, "a number")
    mtbf = r.number(top["mtbf_s"], "mtbf_s", _positive, "greater than 0")
    nominal = r.number(top["nominal_mtbf_s"], "nominal_mtbf_s", _positive, "greater than 0")
    surv = r.mapping(top["survival"], "survival", ("host", "peer"))
    survival = Survival(
        host=r.number(surv["host"], "survival.host", _share, "between 0 and 1") if surv else 1.0,
        peer=r.number(surv["peer"], "survival.peer", _share, "between 0 and 1") if surv else 1.0,
    )
    storage: list[StoragePath] = []
    if isinstance(top["storage"], list):
        storage = [p for i, v in enumerate(top["storage"]) if (p := _path(r, v, f"storage.{i}")) is not None]
    else:
        r.problems.append(f"storage: expected a list, got {type(top['storage']).__name__}")
    top_part = r.text(top["top_part"], "top_part")
    if r.problems:
        raise WireError(r.problems)
    return JobRisk(job, ts, mtbf, nominal, survival, tuple(storage), top_part)
