"""GPU memory: correctable (single-bit) ECC errors rising before an uncorrectable one.

HBM cells that are about to fail usually announce it with a growing stream of corrected
errors; the rate grows exponentially from ``sbe_start_per_h`` to ``sbe_end_per_h`` (scaled by
severity) over the precursor, a row remap becomes pending halfway, and the uncorrectable error
(XID 48, or 94/95 for SRAM) ends it. Healthy GPUs see ``sbe_per_h`` background corrections and
rare NVLink and PCIe replays. Counters advance by Poisson draws, so they are monotone and
carry real shot noise.
"""

from __future__ import annotations

import math

from pydantic import Field

from seamguard.twin.physics.params import Params


class MemoryParams(Params):
    sbe_per_h: float = Field(default=0.2, ge=0)
    sbe_start_per_h: float = Field(default=1.0, gt=0)
    sbe_end_per_h: float = Field(default=3000.0, gt=0)
    remap_at_progress: float = Field(default=0.5, ge=0, le=1)
    nvlink_per_h: float = Field(default=0.02, ge=0)
    pcie_replay_per_h: float = Field(default=0.05, ge=0)
    pcie_replay_fault_per_min: float = Field(default=50.0, ge=0, description="replays of a downtrained link")


def precursor_sbe_per_h(p: MemoryParams, severity: float, progress: float) -> float:
    end = max(p.sbe_end_per_h * severity, 2.0 * p.sbe_start_per_h)
    return p.sbe_start_per_h * math.exp(math.log(end / p.sbe_start_per_h) * progress)
