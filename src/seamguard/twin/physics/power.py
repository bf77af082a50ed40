"""Power: GPU board power, rack power, and the power brake when a rack exceeds its supply.

GPU power scales with load and clock between ``gpu_idle_w`` and ``gpu_busy_w``. A rack draws its
GPUs plus ``node_overhead_kw`` per node. When a rack's demand exceeds its limit (a lost power
supply lowers it), the PSUs assert the power brake: every busy GPU of the rack runs at
``brake_clock`` with NVML bit 0x80 (hw_power_brake) until demand fits again.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydantic import Field

from seamguard.twin.physics.params import Params

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class PowerParams(Params):
    gpu_busy_w: float = Field(default=650.0, gt=0)
    gpu_idle_w: float = Field(default=90.0, ge=0)
    node_overhead_kw: float = Field(default=1.5, ge=0)
    rack_limit_headroom: float = Field(default=1.3, gt=0, description="rack limit over its full-load draw")
    brake_clock: float = Field(default=0.7, gt=0, le=1)


def gpu_power(p: PowerParams, load: FloatArray, clock: FloatArray) -> FloatArray:
    return p.gpu_idle_w + (p.gpu_busy_w - p.gpu_idle_w) * load * np.minimum(clock, 1.0)


def rack_power_kw(
    p: PowerParams,
    gpu_w: FloatArray,
    gpu_rack: IntArray,
    nodes_per_rack: FloatArray,
    alive: npt.NDArray[np.bool_],
) -> FloatArray:
    n_rack = nodes_per_rack.size
    gpus = np.bincount(gpu_rack, weights=np.where(alive, gpu_w, 0.0), minlength=n_rack) / 1000.0
    return gpus + p.node_overhead_kw * nodes_per_rack


def full_rack_kw(p: PowerParams, gpus_per_rack: FloatArray, nodes_per_rack: FloatArray) -> FloatArray:
    return gpus_per_rack * p.gpu_busy_w / 1000.0 + p.node_overhead_kw * nodes_per_rack


def power_brake(demand_kw: FloatArray, limit_kw: FloatArray) -> npt.NDArray[np.bool_]:
    return demand_kw > limit_kw
