"""Diurnal ambient swing: the facility water supply follows the outside air through the day.

Llama 3's 54-day run saw a 1-2% diurnal throughput swing from mid-day heat (Dubey et al. 2024,
§3.3.4); a cooling tower's approach to wet-bulb moves the supply temperature by about 1-2 °C
over a day, which ``physics.compute.dvfs_per_c`` turns into clock changes.
"""

from __future__ import annotations

import math

from pydantic import Field

from seamguard.twin.physics.params import Params

DAY_S = 86400.0


class AmbientParams(Params):
    supply_c: float = Field(default=30.0, description="facility water supply setpoint, °C")
    diurnal_amplitude_c: float = Field(
        default=0.75, ge=0, description="half the peak-to-peak daily swing, °C"
    )
    peak_hour_utc: float = Field(default=15.0, ge=0, lt=24, description="hour of the daily peak (UTC)")


def supply_temperature(p: AmbientParams, t: float) -> float:
    """Facility supply temperature at unix time ``t`` (before any CDU fault)."""
    phase = 2 * math.pi * ((t % DAY_S) / 3600.0 - p.peak_hour_utc) / 24.0
    return p.supply_c + p.diurnal_amplitude_c * math.cos(phase)
