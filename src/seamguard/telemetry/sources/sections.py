"""``sources:`` in the config: which foreign systems the daemon reads, each section opt-in.

Models only: loading a config imports no client library (``build`` makes the sources)."""

from __future__ import annotations

from pydantic import Field

from seamguard.strict_model import StrictModel
from seamguard.telemetry.sources.dcgm_config import DcgmSourceConfig
from seamguard.telemetry.sources.kubernetes_config import KubernetesSourceConfig
from seamguard.telemetry.sources.prometheus_config import PrometheusApiConfig
from seamguard.telemetry.sources.registers import ModbusConfig
from seamguard.telemetry.sources.slurm_commands import SlurmConfig

DEFAULT_MAX_BODY_BYTES = 16 << 20  # a pushed payload past this is refused (413)
DEFAULT_CAPACITY_ROWS = 2_000_000  # rows queued between ticks; past this a push is refused (503)


class PushConfig(StrictModel):
    """``POST /v1/push`` on the daemon's HTTP service, for fleets that push rather than being scraped."""

    path: str = "/v1/push"
    capacity_rows: int = Field(default=DEFAULT_CAPACITY_ROWS, ge=1, description="rows queued between ticks")
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1)


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
