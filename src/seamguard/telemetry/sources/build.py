"""The daemon's sources, made from the ``sources:`` section."""

from __future__ import annotations

from seamguard.model.topology import Topology
from seamguard.telemetry.sources.base import Source
from seamguard.telemetry.sources.kubernetes import KubernetesSource
from seamguard.telemetry.sources.modbus import ModbusSource
from seamguard.telemetry.sources.prometheus_api import PrometheusApiSource
from seamguard.telemetry.sources.push import PushSource
from seamguard.telemetry.sources.scrape import DcgmScrapeSource
from seamguard.telemetry.sources.sections import SourcesConfig
from seamguard.telemetry.sources.slurm import SlurmSource


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
    if config.kubernetes is not None:
        out.append(KubernetesSource(topology, config.kubernetes))
    if config.push is not None:
        out.append(
            PushSource(
                topology, capacity_rows=config.push.capacity_rows, max_body_bytes=config.push.max_body_bytes
            )
        )
    return out
