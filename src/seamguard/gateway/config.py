"""The gateway's config file: a ``gateway:`` section, validated strictly like the daemon's sections.

Keys are stored as SHA-256 digests only, in the form and under the name rules of the daemon's
bearer tokens (``service.sections``: ``checked_name``, ``checked_digest``, ``zoned``; ``seamguard gateway --new-key``
prints a secret and its digest), so one key, one way. Every refusal names the file and the key
path (``gateway.keys.1.tenant: ...``), cross-field rules included.
"""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from seamguard.errors import InputError
from seamguard.service.sections import (
    AuthConfig,
    ConnectionLimits,
    TlsConfig,
    checked_digest,
    checked_name,
    zoned,
)
from seamguard.strict_model import HttpUrlText, StrictModel, format_validation
from seamguard.yaml_input import load_yaml, read_yaml_text

SECTION = "gateway"


class Period(StrEnum):
    """How often a budget refills: at the start of each UTC hour, day or week, or never."""

    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    TOTAL = "total"  # a fixed allowance

    @property
    def seconds(self) -> float | None:
        return {"hour": 3600.0, "day": 86400.0, "week": 604800.0}.get(self.value)

    def start(self, now: float) -> float:
        """The unix start of the period ``now`` falls in (0 for a fixed allowance)."""
        span = self.seconds
        return 0.0 if span is None else math.floor(now / span) * span


class Budget(StrictModel):
    tokens: int = Field(ge=1)  # prompt + completion tokens per period
    period: Period = Period.DAY


class Rate(StrictModel):
    """A token bucket in requests: ``per_s`` sustained, ``burst`` at once after idling."""

    per_s: float = Field(gt=0, allow_inf_nan=False)
    burst: float = Field(default=1.0, ge=1, allow_inf_nan=False)


class KeyEntry(StrictModel):
    name: str  # what the journal and the metrics record: never the key
    tenant: str
    digest: str  # "sha256:<64 hex>" of the secret the client sends as a bearer token
    budget: Budget
    rate: Rate | None = None
    expires: datetime | None = None

    _n = field_validator("name", "tenant")(checked_name)
    _digest = field_validator("digest")(checked_digest)
    _zoned = field_validator("expires")(zoned)


class Tenant(StrictModel):
    name: str
    rate: Rate | None = None  # shared by every key of the tenant

    _n = field_validator("name")(checked_name)


class Upstream(StrictModel):
    name: str
    url: HttpUrlText  # the server's root: http://vllm-0:8000 (``/v1/...`` is appended)
    models: tuple[str, ...] = Field(min_length=1)  # model names it serves, as clients send them
    api_key_file: Path | None = None  # the upstream's own key (vLLM --api-key); clients' keys never go on
    connect_timeout_s: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    read_timeout_s: float = Field(default=300.0, gt=0, allow_inf_nan=False)  # between two bytes

    _n = field_validator("name")(checked_name)


class BreakerConfig(StrictModel):
    failures_to_open: int = Field(default=5, ge=1)  # consecutive failures (5xx, no answer)
    recovery_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)  # open -> half-open
    half_open_probes: int = Field(default=1, ge=1)  # trial requests in half-open; all must succeed


class RetryConfig(StrictModel):
    """Finagle's ``RetryBudget`` / Linkerd's retry budget: within ``ttl_s``, retries may be
    ``percent`` of the requests plus ``min_per_s`` a second."""

    ttl_s: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    min_per_s: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    percent: float = Field(default=20.0, ge=0, le=100, allow_inf_nan=False)
    max_attempts: int = Field(default=3, ge=1)  # calls per request, the first included


class ZombieConfig(StrictModel):
    idle_s: float = Field(default=14 * 86400.0, gt=0, allow_inf_nan=False)  # idle this long, then spends
    failures: int = Field(default=20, ge=1)  # consecutive failed requests (4xx, 5xx, expired key)
    refuse: bool = False  # refuse a flagged key's requests (403) while the flag holds
    hold_s: float = Field(default=3600.0, gt=0, allow_inf_nan=False)  # how long a flag holds


class Estimate(StrictModel):
    """How a request's tokens are reserved before the upstream counts them."""

    bytes_per_token: float = Field(default=4.0, gt=0, allow_inf_nan=False)  # prompt: body bytes / this
    default_max_tokens: int = Field(default=1024, ge=1)  # completion cap set when a request has none


class Limits(StrictModel):
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    body_timeout_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)  # a request's body, whole
    max_response_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)  # a non-streamed answer
    max_event_bytes: int = Field(default=1024 * 1024, ge=1024)  # one server-sent event of a stream
    max_streams: int = Field(default=256, ge=1)  # streams relayed at once (taken at admission)
    max_streams_per_key: int | None = Field(default=None, ge=1)  # of them, one key's at once (None: no bound)
    max_stream_s: float = Field(default=3600.0, gt=0, allow_inf_nan=False)  # a stream's whole life
    client_stall_s: float = Field(default=60.0, gt=0, allow_inf_nan=False)  # a client not reading
    overrun: float = Field(
        default=4.0, ge=1, allow_inf_nan=False
    )  # cut a stream charged this × its reservation


class GatewayConfig(StrictModel):
    journal: Path  # the gateway's own SQLite journal: spent tokens and its decisions
    keys: tuple[KeyEntry, ...] = Field(min_length=1)
    tenants: tuple[Tenant, ...] = Field(min_length=1)
    upstreams: tuple[Upstream, ...] = Field(min_length=1)
    auth: AuthConfig = AuthConfig()  # seamguard tokens (viewer, admin) that may read /metrics
    tls: TlsConfig | None = None
    connections: ConnectionLimits = ConnectionLimits()
    flush_s: float = Field(default=1.0, gt=0, le=60, allow_inf_nan=False)  # settled spend written this often
    estimate: Estimate = Estimate()
    limits: Limits = Limits()
    breaker: BreakerConfig = BreakerConfig()
    retry: RetryConfig = RetryConfig()
    zombie: ZombieConfig = ZombieConfig()


def _cross_checks(cfg: GatewayConfig) -> list[tuple[str, str]]:
    """(key path, problem) for what one field cannot say alone: duplicates, unknown tenants."""
    out: list[tuple[str, str]] = []
    tenants: dict[str, int] = {}
    for i, t in enumerate(cfg.tenants):
        if t.name in tenants:
            out.append((f"tenants.{i}.name", f"{t.name!r} already given as tenants.{tenants[t.name]}"))
        tenants.setdefault(t.name, i)
    names: dict[str, int] = {}
    digests: dict[str, int] = {}
    for i, k in enumerate(cfg.keys):
        if k.name in names:
            out.append((f"keys.{i}.name", f"{k.name!r} already given as keys.{names[k.name]}"))
        if k.digest in digests:
            out.append((f"keys.{i}.digest", f"the same digest as keys.{digests[k.digest]}"))
        if k.tenant not in tenants:
            out.append((f"keys.{i}.tenant", f"{k.tenant!r} is not one of tenants ({', '.join(tenants)})"))
        names.setdefault(k.name, i)
        digests.setdefault(k.digest, i)
    ups: dict[str, int] = {}
    for i, u in enumerate(cfg.upstreams):
        if u.name in ups:
            out.append((f"upstreams.{i}.name", f"{u.name!r} already given as upstreams.{ups[u.name]}"))
        ups.setdefault(u.name, i)
    return out


class GatewayFile(StrictModel):
    """The file: one ``gateway:`` section (so it can later sit in the daemon's site file)."""

    gateway: GatewayConfig


def gateway_config(data: Any, where: str) -> GatewayConfig:
    """The ``gateway:`` section of ``data`` validated; InputError naming ``where`` and each key."""
    try:
        cfg = GatewayFile.model_validate(data).gateway
    except ValidationError as exc:
        raise format_validation(where, exc) from None
    problems = _cross_checks(cfg)
    if problems:
        raise InputError(where, "; ".join(f"key {SECTION}.{k}: {why}" for k, why in problems))
    return cfg


def load_gateway_config(path: Path) -> GatewayConfig:
    """The gateway's config file, within ``yaml_input``'s bounds."""
    return gateway_config(load_yaml(read_yaml_text(path, "config"), str(path)), str(path))
