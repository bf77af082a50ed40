"""``sources:`` in the config: which foreign systems the daemon reads, each section opt-in.

Models only: loading a config imports no client library (``build`` makes the sources)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from seamguard.strict_model import StrictModel
from seamguard.telemetry.sources.dcgm_config import DcgmSourceConfig
from seamguard.telemetry.sources.kubernetes_config import KubernetesSourceConfig
from seamguard.telemetry.sources.prometheus_config import PrometheusApiConfig
from seamguard.telemetry.sources.registers import ModbusConfig
from seamguard.telemetry.sources.slurm_commands import SlurmConfig

DEFAULT_MAX_BODY_BYTES = 16 << 20  # a pushed payload past this is refused (413)
DEFAULT_BODY_TIMEOUT_S = 60.0  # a body still arriving after this is refused (408): 16 MiB at ~2 Mbit/s
DEFAULT_CAPACITY_ROWS = 2_000_000  # rows queued between ticks; past this a push is refused (503)
# Sized in docs/facilities.md ("Limits"): 100,000 GPUs pushing ~10 signals every 10 s through four
# principals is 25,000 rows/s each; a principal may push four times that, in batches up to a burst.
DEFAULT_MAX_FUTURE_S = 300.0  # exporter clock skew of a minute or two, with room
DEFAULT_MAX_AGE_S = 3600.0  # a backlog flushed after an outage of up to an hour
DEFAULT_RATE_ROWS_PER_S = 100_000.0
DEFAULT_BURST_ROWS = 1_000_000
DEFAULT_MAX_QUEUE_SHARE = 0.5  # one principal may hold half the queue: a flood leaves the rest room
# A literal path: the access table and the router must read it alike, so no template ({x},
# {x:path}), no empty or dot segment, no trailing slash, nothing that percent-decoding changes.
PUSH_PATH_RE = re.compile(r"(/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+")


class PushConfig(StrictModel):
    """``POST /v1/push`` on the daemon's HTTP service, for fleets that push rather than being scraped."""

    path: str = "/v1/push"
    capacity_rows: int = Field(default=DEFAULT_CAPACITY_ROWS, ge=1, description="rows queued between ticks")
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1)
    body_timeout_s: float = Field(
        default=DEFAULT_BODY_TIMEOUT_S, gt=0, allow_inf_nan=False, description="to receive a whole body"
    )
    max_future_s: float = Field(
        default=DEFAULT_MAX_FUTURE_S, ge=0, allow_inf_nan=False, description="stamps ahead of the clock"
    )
    max_age_s: float = Field(
        default=DEFAULT_MAX_AGE_S, gt=0, allow_inf_nan=False, description="stamps behind the clock"
    )
    rate_limit_rows_per_s: float = Field(default=DEFAULT_RATE_ROWS_PER_S, gt=0, allow_inf_nan=False)
    burst_rows: int = Field(
        default=DEFAULT_BURST_ROWS, ge=1, description="rows one principal may push at once"
    )
    max_queue_share: float = Field(
        default=DEFAULT_MAX_QUEUE_SHARE, gt=0, le=1, description="of capacity_rows, per principal"
    )

    @field_validator("path")
    @classmethod
    def _literal_path(cls, v: str) -> str:
        if not PUSH_PATH_RE.fullmatch(v):
            raise ValueError(
                f"{v!r} is not a literal path: '/' then segments of letters, digits and . _ ~ -, "
                "no template ({...}), empty or dot segment, or trailing slash"
            )
        return v  # one the service already serves is refused with the service's routes (``site_config``)


class SourcesConfig(StrictModel):
    dcgm: DcgmSourceConfig | None = None  # scrape DCGM exporters directly
    prometheus: PrometheusApiConfig | None = None  # or ask a Prometheus that scrapes them
    modbus: ModbusConfig | None = None  # the facilities BMS
    slurm: SlurmConfig | None = None  # node states and job placements
    kubernetes: KubernetesSourceConfig | None = None  # job placements from GPU pods
    push: PushConfig | None = None

    def any(self) -> bool:
        return any(
            s is not None
            for s in (self.dcgm, self.prometheus, self.modbus, self.slurm, self.kubernetes, self.push)
        )
