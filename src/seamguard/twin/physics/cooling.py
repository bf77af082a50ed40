"""Cooling: CDU flow and supply temperature -> rack inlet (thermal inertia) -> GPU temperature.

A CDU's secondary loop feeds its racks' rear-door heat exchangers (air side, the rack inlet)
and the GPUs' cold plates (liquid side). Losing a fraction ``lost`` of the flow starves both:

    inlet_target = supply + approach + inlet_rise_per_lost_flow x lost x rack_heat
    gpu_target   = inlet + idle_rise + (busy_rise - idle_rise + plate_rise_per_lost_flow x lost) x load
                   + offset + extra

where ``rack_heat`` and ``load`` are in [0, 1] (power over full power). Temperatures follow
their targets through first-order lags (``rack_time_constant_s``, ``gpu_time_constant_s``),
integrated exactly for the step, so any step length is stable. The CDU's return runs
``return_delta_c`` above supply at nominal flow and full heat, inversely with flow (the same
heat in less water). Defaults put a busy H100-class GPU at ~68 °C on a 30 °C loop; 45% flow
lost heats it by ~20 °C (the engine's labelled suite uses the same numbers), into the
87 °C software-throttle region.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydantic import Field

from seamguard.twin.physics.params import Params

FloatArray = npt.NDArray[np.float64]


class CoolingParams(Params):
    nominal_flow_lpm: float = Field(default=450.0, gt=0)
    nominal_pressure_kpa: float = Field(default=160.0, gt=0)
    approach_c: float = Field(default=3.0, ge=0, description="rack inlet above supply at full flow")
    inlet_rise_per_lost_flow_c: float = Field(default=22.0, ge=0)
    return_delta_c: float = Field(default=10.0, gt=0, description="return above supply, full heat and flow")
    gpu_rise_busy_c: float = Field(default=35.0, ge=0, description="GPU above inlet at full load")
    gpu_rise_idle_c: float = Field(default=15.0, ge=0)
    plate_rise_per_lost_flow_c: float = Field(default=22.0, ge=0)
    mem_over_gpu_c: float = Field(default=5.0)
    gpu_offset_sd_c: float = Field(default=1.5, ge=0, description="per-GPU spread of thermal resistance")
    rack_time_constant_s: float = Field(default=180.0, gt=0)
    gpu_time_constant_s: float = Field(default=45.0, gt=0)
    min_flow_fraction: float = Field(default=0.05, gt=0, le=1)


def relax(current: FloatArray, target: FloatArray, dt: float, tau: float) -> FloatArray:
    """First-order lag over ``dt`` (exact for a constant target)."""
    return target + (current - target) * float(np.exp(-dt / tau))


def flow_fraction(p: CoolingParams, lost: FloatArray) -> FloatArray:
    return np.clip(1.0 - lost, p.min_flow_fraction, 1.0)


def inlet_target(p: CoolingParams, supply: FloatArray, lost: FloatArray, rack_heat: FloatArray) -> FloatArray:
    return supply + p.approach_c + p.inlet_rise_per_lost_flow_c * np.clip(lost, 0.0, 1.0) * rack_heat


def gpu_target(
    p: CoolingParams,
    inlet: FloatArray,
    lost: FloatArray,
    load: FloatArray,
    offset: FloatArray,
    extra: FloatArray,
) -> FloatArray:
    busy = p.gpu_rise_busy_c - p.gpu_rise_idle_c + p.plate_rise_per_lost_flow_c * np.clip(lost, 0.0, 1.0)
    return inlet + p.gpu_rise_idle_c + busy * load + offset + extra


def return_temperature(
    p: CoolingParams, supply: FloatArray, flow: FloatArray, heat: FloatArray
) -> FloatArray:
    return supply + p.return_delta_c * heat / flow
