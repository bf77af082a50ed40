"""Benign happenings that look like trouble: the engine must take no action on any of them.

Placed per seed by suite.py, outside every fault's reach. Fleet-wide confounders (latency
spikes, inlet sensor noise, storage throughput falling after a save, jobs warming up) are part
of the noise and workload models and need no record here; they are labelled all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class InputStall:
    """Every rank of one job slower at once (the data loader starved): no part is at fault.
    ``missed_node`` misses its scrape just after the stall ends."""

    kind: ClassVar[str] = "input_stall"
    job: int  # job record index
    start: float
    end: float
    factor: float
    missed_node: int


@dataclass(frozen=True)
class ClockSkew:
    """One node's exporter clock off by ``offset_s`` (its samples carry that error)."""

    kind: ClassVar[str] = "clock_skew"
    node: int
    offset_s: float


@dataclass(frozen=True)
class LatchedFlow:
    """A CDU flow transmitter stuck at one reading while the loop itself is fine."""

    kind: ClassVar[str] = "latched_flow_sensor"
    cdu: int
    start: float
    fraction: float  # the stuck reading as a share of the CDU's nominal flow


@dataclass(frozen=True)
class CounterReset:
    """A driver reload: the node's GPU exporters are silent ``gap_s``, then counters restart at 0."""

    kind: ClassVar[str] = "counter_reset"
    node: int
    at: float
    gap_s: float = 60.0


@dataclass(frozen=True)
class FeedStop:
    """A rack's BMS feed stops for good: its facilities samples cease."""

    kind: ClassVar[str] = "bms_feed_stop"
    rack: int
    at: float


@dataclass(frozen=True)
class Glitch:
    """One physically impossible reading (a GPU at 0 or 255 °C, a CDU at 0 kPa), once."""

    kind: ClassVar[str] = "out_of_range_reading"
    signal: str
    local: int  # index within the signal's entity kind
    at: float  # the first sample at or after this time carries ``value``
    value: float


@dataclass(frozen=True)
class AppXid:
    """An application's own XID (a page fault in user code): NVIDIA says restart the app."""

    kind: ClassVar[str] = "application_xid"
    gpu: int
    at: float
    code: int


Confounder = InputStall | ClockSkew | LatchedFlow | CounterReset | FeedStop | Glitch | AppXid
