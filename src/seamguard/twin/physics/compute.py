"""Compute: GPU clocks, throttling and the per-rank step time (stragglers).

* Same-SKU spread: each GPU's speed is drawn once, ``N(1, sku_sd)`` clipped to ±``sku_clip``;
  the defaults give the ~8% fastest-to-slowest spread measured across identical H100s.
* DVFS: the boost clock moves by ``dvfs_per_c`` per °C around the GPU's own temperature at the
  supply setpoint, within ±``dvfs_range``: the mechanism behind Llama 3's diurnal 1-2% swing.
* Thermal throttling: from ``sw_thermal_c`` the clock drops ``clock_drop_per_c`` per °C (software
  slowdown, NVML bit 0x20), hardware slowdown (0x40) from ``hw_thermal_c``; at ``trip_c`` the GPU
  shuts down (the driver reports it as fallen off the bus, XID 79).
* A rank's step time is the job's nominal step over its speed and clock factor, times any fault
  multiplier (a PCIe link downtrained to a lower width or generation starves the GPU of data).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydantic import Field

from seamguard.twin.physics.params import Params

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

BIT_IDLE, BIT_POWER_CAP, BIT_HW_SLOWDOWN, BIT_SYNC_BOOST = 0x1, 0x4, 0x8, 0x10
BIT_SW_THERMAL, BIT_HW_THERMAL, BIT_POWER_BRAKE = 0x20, 0x40, 0x80


class ComputeParams(Params):
    sm_clock_mhz: float = Field(default=1980.0, gt=0)
    sku_sd: float = Field(default=0.015, ge=0)
    sku_clip: float = Field(default=0.04, ge=0, lt=0.5)
    dvfs_per_c: float = Field(default=0.005, ge=0)
    dvfs_range: float = Field(default=0.03, ge=0, lt=0.5)
    sw_thermal_c: float = Field(default=87.0)
    hw_thermal_c: float = Field(default=89.0)
    clock_drop_per_c: float = Field(default=0.04, ge=0)
    min_clock_factor: float = Field(default=0.5, gt=0, le=1)
    trip_c: float = Field(default=97.0)
    util_busy_pct: float = Field(default=97.0, ge=0, le=100)
    power_cap_probability: float = Field(
        default=0.02, ge=0, le=1, description="benign 0x4 bit per busy GPU-tick"
    )
    sync_boost_probability: float = Field(default=0.05, ge=0, le=1, description="benign 0x10 bit")


def sku_speed(p: ComputeParams, rng: np.random.Generator, n: int) -> FloatArray:
    """Relative time per unit of work (1.0 nominal, 1.03 = 3% slower)."""
    return np.clip(rng.normal(1.0, p.sku_sd, n), 1.0 - p.sku_clip, 1.0 + p.sku_clip)


def dvfs_factor(p: ComputeParams, temp: FloatArray, reference: FloatArray) -> FloatArray:
    return np.clip(1.0 - p.dvfs_per_c * (temp - reference), 1.0 - p.dvfs_range, 1.0 + p.dvfs_range)


def thermal_throttle(p: ComputeParams, temp: FloatArray) -> tuple[FloatArray, IntArray]:
    """Clock factor and NVML bits from temperature alone."""
    over = temp - p.sw_thermal_c
    factor = np.where(
        over >= 0, np.clip(1.0 - p.clock_drop_per_c * (over + 1.0), p.min_clock_factor, 1.0), 1.0
    )
    bits = np.where(over >= 0, BIT_SW_THERMAL, 0) | np.where(temp >= p.hw_thermal_c, BIT_HW_THERMAL, 0)
    return factor, bits.astype(np.int64)


def rank_time_factor(speed: FloatArray, clock: FloatArray, fault_mult: FloatArray) -> FloatArray:
    """Time per step relative to the job's nominal step (compute-bound: inversely with clock)."""
    return speed * fault_mult / np.maximum(clock, 1e-3)
