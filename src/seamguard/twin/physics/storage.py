"""Storage: load-dependent latency and bandwidth of a checkpoint backend, and congestion collapse.

A backend delivers ``write_gbps``/``read_gbps`` in aggregate. Up to ``congestion_knee``
concurrent checkpoint streams share it fairly; beyond the knee, metadata and lock contention
make the aggregate *fall* (congestion collapse):

    aggregate(c) = bandwidth x fault_factor / (1 + max(0, c / knee - 1) ** collapse_power)

so a synchronised fleet of jobs all saving on the hour turns every save into a stall. The p99
latency seen by clients grows with queueing and with any fault (``storage_tail``: the write tail
grows ``tail_write_ms / write_latency_ms``-fold at severity 1, exponentially with progress;
``dataset_starve``: the read path saturates, the read tail grows ``starve_read_ms /
read_latency_ms``-fold while writes, on their own path, slow by ``starve_write_rise`` only). A
checkpoint of ``size_gb`` takes ``size / (aggregate / c) + overhead_s`` to save, and
``size / read share + overhead_s`` to restore.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from pydantic import Field

from seamguard.twin.physics.params import Params

FloatArray = npt.NDArray[np.float64]
# dataset_starve at severity 1: a read tail of 200 ms (~17x the 12 ms nominal: many jobs' loaders
# queue on the same read path), writes 20% slower (metadata they share); the labelled suite uses
# the same two numbers.
STARVE_READ_MS = 200.0
STARVE_WRITE_RISE = 0.2


class StorageParams(Params):
    write_gbps: float = Field(default=40.0, gt=0)
    read_gbps: float = Field(default=60.0, gt=0)
    write_latency_ms: float = Field(default=25.0, gt=0)
    read_latency_ms: float = Field(default=12.0, gt=0)
    latency_noise: float = Field(default=0.05, ge=0)
    throughput_noise: float = Field(default=0.02, ge=0)
    congestion_knee: float = Field(default=4.0, gt=0, description="concurrent streams before collapse")
    collapse_power: float = Field(default=2.0, gt=0)
    overhead_s: float = Field(default=5.0, ge=0, description="coordination cost of every save/restore")
    tail_write_ms: float = Field(default=3000.0, gt=0)
    tail_read_ms: float = Field(default=500.0, gt=0)
    throughput_loss: float = Field(default=0.5, ge=0, lt=1)
    starve_read_ms: float = Field(default=STARVE_READ_MS, gt=0, description="dataset_starve: read tail")
    starve_write_rise: float = Field(
        default=STARVE_WRITE_RISE, ge=0, description="dataset_starve: writes x(1 + this) at severity 1"
    )
    # Checkpoint copies that do not touch a backend (in_memory, and tiered before its persist).
    host_copy_gbps_per_gpu: float = Field(default=10.0, ge=0, description="device-to-host; 0: no room")
    peer_gbps_per_node: float = Field(default=12.5, ge=0, description="to a buddy node; 0: no peer copy")
    changed_share: float = Field(default=0.3, gt=0, le=1, description="what an incremental save writes")
    incremental_every: int = Field(
        default=4, ge=1, description="incremental mode: a full save every this many"
    )


def congestion(p: StorageParams, streams: FloatArray) -> FloatArray:
    """Aggregate-throughput factor for ``streams`` concurrent transfers (1 up to the knee)."""
    over = np.maximum(streams / p.congestion_knee - 1.0, 0.0)
    return 1.0 / (1.0 + over**p.collapse_power)


def transfer_seconds(size_gb: float, aggregate_gbps: float, streams: float, overhead_s: float) -> float:
    share = aggregate_gbps / max(streams, 1.0)
    return size_gb / max(share, 1e-9) + overhead_s


def memory_copy_seconds(p: StorageParams, size_gb: float, gpus: int, nodes: int) -> float:
    """A copy of the job's state to its own host memory and, with peers, on to buddy nodes:
    what an in-memory or tiered save blocks for (inf: no room in host memory)."""
    host = p.host_copy_gbps_per_gpu * gpus
    if host <= 0:
        return math.inf
    peer = p.peer_gbps_per_node * nodes
    return size_gb / host + (size_gb / peer if peer > 0 else 0.0) + p.overhead_s


def memory_restore_seconds(p: StorageParams, size_gb: float, gpus: int, nodes: int, *, peer: bool) -> float:
    gbps = p.peer_gbps_per_node * nodes if peer else p.host_copy_gbps_per_gpu * gpus
    return size_gb / max(gbps, 1e-9) + p.overhead_s


def tail_factors(p: StorageParams, severity: float, progress: float) -> tuple[float, float, float]:
    """(write latency, read latency, throughput) multipliers of a degrading backend."""
    write = (1.0 + (p.tail_write_ms / p.write_latency_ms - 1.0) * severity) ** progress
    read = (1.0 + (p.tail_read_ms / p.read_latency_ms - 1.0) * severity) ** progress
    throughput = max(1.0 - p.throughput_loss * severity * progress, 0.05)
    return write, read, throughput


def starve_factors(p: StorageParams, severity: float, progress: float) -> tuple[float, float]:
    """(write latency, read latency) multipliers of a backend whose read path is saturated: the
    read tail grows exponentially with progress, as ``tail_factors``'s does, writes barely move,
    and the backend still delivers its full bandwidth (it is busy, not broken), so the throughput
    stays where it was. A checkpoint save, a write, hardly slows: what tells it from storage_tail."""
    read = (1.0 + (p.starve_read_ms / p.read_latency_ms - 1.0) * severity) ** progress
    write = 1.0 + p.starve_write_rise * severity * progress
    return write, read


def queue_latency_factor(p: StorageParams, streams: FloatArray) -> FloatArray:
    """p99 latency grows with the queue: x(1 + c/knee)² with c concurrent streams."""
    return (1.0 + streams / p.congestion_knee) ** 2
