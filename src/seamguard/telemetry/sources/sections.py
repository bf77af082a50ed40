"""``sources:`` in the config: which foreign systems the daemon reads, each section opt-in."""

from __future__ import annotations

from pydantic import Field

from seamguard.model.topology import Topology
from seamguard.strict_model import StrictModel
from seamguard.telemetry.sources.base import Source
from seamguard.telemetry.sources.dcgm import DcgmSourceConfig
from seamguard.telemetry.sources.modbus import ModbusSource
from seamguard.telemetry.sources.prometheus_api import PrometheusApiConfig, PrometheusApiSource
from seamguard.telemetry.sources.push import DEFAULT_CAPACITY_ROWS, DEFAULT_MAX_BODY_BYTES, PushSource
from seamguard.telemetry.sources.registers import ModbusConfig
from seamguard.telemetry.sources.scrape import DcgmScrapeSource
from seamguard.telemetry.sources.slurm import SlurmConfig, SlurmSource


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
    push: PushConfig | None = None

    def any(self) -> bool:
        return any(s is not None for s in (self.dcgm, self.prometheus, self.modbus, self.slurm, self.push))


def build_sources(config: SourcesConfig, topology: Topology) -> list[Source]:
    """One source per configured section, in a fixed order (the push source, when configured, is
    built here too; the daemon mounts its router on the HTTP service)."""
    out: list[Source] = []
    if config.dcgm is not None:
        out.append(DcgmScrapeSource(config.dcgm, topology))
    if config.prometheus is not None:
        out.append(PrometheusApiSource(config.prometheus, topology))
    if config.modbus is not None:
        out.append(ModbusSource(config.modbus, topology))
    if config.slurm is not None:
        out.append(SlurmSource(topology, config.slurm))
    if config.push is not None:
        out.append(
            PushSource(
                topology, capacity_rows=config.push.capacity_rows, max_body_bytes=config.push.max_body_bytes
            )
        )
    return out
