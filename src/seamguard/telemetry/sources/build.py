"""The daemon's sources, made from the ``sources:`` section."""

from __future__ import annotations

import time
from collections.abc import Callable

from seamguard.model.topology import Topology
from seamguard.telemetry.sources.base import Source
from seamguard.telemetry.sources.kubernetes import KubernetesSource
from seamguard.telemetry.sources.modbus import ModbusSource
from seamguard.telemetry.sources.prometheus_api import PrometheusApiSource
from seamguard.telemetry.sources.push import PushSource
from seamguard.telemetry.sources.push_checks import TimeWindow
from seamguard.telemetry.sources.push_limits import RateLimit
from seamguard.telemetry.sources.scrape import DcgmScrapeSource
from seamguard.telemetry.sources.sections import SourcesConfig
from seamguard.telemetry.sources.slurm import SlurmSource


def build_sources(
    config: SourcesConfig, topology: Topology, clock: Callable[[], float] = time.time
) -> list[Source]:
    """One source per configured section, in a fixed order (the push source, when configured, is
    built here too; the daemon mounts its router on the HTTP service). ``clock`` is the daemon's:
    pushed stamps are checked against it."""
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
    if (push := config.push) is not None:
        out.append(
            PushSource(
                topology,
                capacity_rows=push.capacity_rows,
                max_body_bytes=push.max_body_bytes,
                body_timeout_s=push.body_timeout_s,
                window=TimeWindow(push.max_future_s, push.max_age_s),
                rate_limit=RateLimit(push.rate_limit_rows_per_s, push.burst_rows),
                max_queue_share=push.max_queue_share,
                clock=clock,
            )
        )
    return out
