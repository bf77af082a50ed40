"""``sources.prometheus``: which Prometheus to ask and what (the source is ``prometheus_api``).

Kept apart from the source so that loading a config never imports the HTTP client."""

from __future__ import annotations

import re
import string
from typing import Self

from pydantic import Field, field_validator, model_validator

from seamguard.model.catalog import SignalKind, signal_catalog
from seamguard.strict_model import HttpUrlText, StrictModel
from seamguard.telemetry.sources.dcgm_config import DcgmReading
from seamguard.telemetry.sources.http_auth import HttpClientAuth


class PromQuery(StrictModel):
    """A PromQL instant query whose result vector feeds one signal."""

    query: str
    signal: str
    entity: str  # template over the result's labels, e.g. "node/{Hostname}" or "link/{instance}"
    scale: float = 1.0
    offset: float = 0.0

    @field_validator("signal")
    @classmethod
    def _known(cls, v: str) -> str:
        sig = signal_catalog().get(v)
        if sig is None:
            raise ValueError(f"unknown signal {v!r}")
        if sig.kind is SignalKind.EVENT:
            raise ValueError(f"{v} is an event signal; a query gives levels, not events")
        return v

    @field_validator("entity")
    @classmethod
    def _template(cls, v: str) -> str:
        fields = [f for _, f, _, _ in string.Formatter().parse(v) if f is not None]
        if "/" not in v or any(not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", f) for f in fields):
            raise ValueError(f"expected a template like node/{{Hostname}} with plain label names, got {v!r}")
        return v


class PrometheusApiConfig(DcgmReading, HttpClientAuth):  # credentials as Prometheus' own clients name them
    name: str = "prometheus"
    url: HttpUrlText  # the server's base URL, e.g. http://prometheus:9090
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    max_bytes: int = Field(default=512 * 2**20, ge=1024)
    dcgm: bool = True  # query every field of the DCGM mapping
    dcgm_selector: str = ""  # extra matchers for the DCGM query, e.g. 'job="dcgm"'
    queries: tuple[PromQuery, ...] = ()
    # vLLM's and Dynamo's serving metrics (data/serving.yaml) onto the serving file's paths and replicas
    serving: bool = False
    serving_selector: str = ""  # extra matchers for the serving query, e.g. 'namespace="llm"'
    replica_from: tuple[str, ...] = (
        "replica",
        "worker_id",
        "pod",
        "target",
    )  # where a series' replica comes from
    # what Prometheus answers is its last scrape of the exporter's last collect: one more interval late
    xid_window_slack_s: float = Field(default=120.0, ge=0, le=3600)

    @field_validator("url")
    @classmethod
    def _base(cls, v: str) -> str:
        return v.rstrip("/")

    @model_validator(mode="after")
    def _something(self) -> Self:
        if not self.dcgm and not self.queries and not self.serving:
            raise ValueError("nothing to query: set dcgm: true, serving: true or list queries")
        texts = [q.query for q in self.queries]
        twice = sorted({t for t in texts if texts.count(t) > 1})
        if twice:  # one request per query text: the second would silently replace the first
            raise ValueError(f"query listed twice: {twice[0]!r}; give each signal its own query")
        return self
