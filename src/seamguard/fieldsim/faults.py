"""The field suite's fault shapes, each a frozen record of one fault and its time profile.

Shapes are this suite's own: a cold plate's thermal resistance creeping up super-linearly, an
optic's retransmit rate growing exponentially, HBM correctable errors arriving in bursts whose
rate climbs until an uncorrectable one, a pump whose wear lowers flow and head together along
the system curve... Indices are local to the entity kind the fault sits on. Time profiles are
vectorised over arrays of sample times; ``Effects`` (effects.py) sums them over the fleet.

The shapes are independent renderings, but not independent kinds: each names (``realises``) the
kind of the project's one table (``twin.faults.FAULT_KINDS``) it is a field-like version of,
and a test checks the name and the target entity kind against that table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
HW_SLOWDOWN, HW_POWER_BRAKE = 0x8, 0x80


def _ramp(t: FloatArray, onset: float, ramp_s: float) -> FloatArray:
    return np.asarray(np.clip((t - onset) / ramp_s, 0.0, 1.0), dtype=np.float64)


@dataclass(frozen=True)
class ColdPlate:
    """A degrading cold plate: the GPU's thermal resistance grows over ``ramp_s`` to ``rth_max``
    times nominal, so it creeps away from its peers until the driver throttles it."""

    kind: ClassVar[str] = "cold_plate"
    realises: ClassVar[str] = "thermal_interface"  # its kind in twin.faults.FAULT_KINDS
    sudden: ClassVar[bool] = False
    gpu: int
    onset: float
    ramp_s: float
    rth_max: float

    def rth_mult(self, t: FloatArray) -> FloatArray:
        return 1.0 + (self.rth_max - 1.0) * _ramp(t, self.onset, self.ramp_s) ** 1.6


@dataclass(frozen=True)
class FailingOptic:
    """A failing transceiver: retransmits grow as exp((t - onset) / tau) over the link's baseline;
    the job starts paying once they reach ``cost_ratio`` times baseline."""

    kind: ClassVar[str] = "failing_optic"
    realises: ClassVar[str] = "link_gray"  # its kind in twin.faults.FAULT_KINDS
    sudden: ClassVar[bool] = False
    link: int  # node local index (link/<node>)
    onset: float
    tau_s: float
    cost_ratio: float
    latency_gain: float  # latency up by this share once retransmits are 100x baseline
    max_ratio: float = 400.0

    def ratio(self, t: FloatArray) -> FloatArray:
        x = np.clip(t - self.onset, 0.0, None) / self.tau_s
        return np.asarray(np.minimum(np.exp(np.minimum(x, 50.0)), self.max_ratio), dtype=np.float64)

    @property
    def impact(self) -> float:
        return self.onset + self.tau_s * math.log(self.cost_ratio)

    def latency_mult(self, t: FloatArray) -> FloatArray:
        return 1.0 + self.latency_gain * np.clip(np.log(self.ratio(t)) / math.log(100.0), 0.0, 1.0)

    def slowdown(self, t: FloatArray) -> FloatArray:
        """Step-time factor of the node's ranks: retransmits past the cost ratio stall collectives."""
        over = np.log(np.maximum(self.ratio(t) / self.cost_ratio, 1.0))
        return np.asarray(1.0 + np.minimum(0.05 * over, 0.3), dtype=np.float64)


@dataclass(frozen=True)
class HbmDecay:
    """HBM wearing out: bursts of corrected (single-bit) errors at a climbing rate, then an
    uncorrectable one at ``impact`` (XID 48 and the DBE counter)."""

    kind: ClassVar[str] = "hbm_decay"
    realises: ClassVar[str] = "hbm_ecc"  # its kind in twin.faults.FAULT_KINDS
    sudden: ClassVar[bool] = False
    gpu: int
    onset: float  # the first burst
    impact: float  # XID 48 + one DBE
    burst_t: tuple[float, ...]
    burst_n: tuple[int, ...]

    def sbe_between(self, t0: FloatArray, t1: FloatArray) -> FloatArray:
        """Corrected errors that arrived in (t0, t1], per sample."""
        times = np.asarray(self.burst_t)
        cum = np.concatenate(([0.0], np.cumsum(np.asarray(self.burst_n, dtype=np.float64))))
        hi = np.searchsorted(times, t1, side="right")
        lo = np.searchsorted(times, t0, side="right")
        return np.asarray(cum[hi] - cum[lo], dtype=np.float64)


@dataclass(frozen=True)
class FallenOffBus:
    """XID 79: the GPU drops off PCIe; its exporter series stop after the event."""

    kind: ClassVar[str] = "xid79"
    realises: ClassVar[str] = "gpu_hard"  # its kind in twin.faults.FAULT_KINDS
    sudden: ClassVar[bool] = True
    gpu: int
    onset: float


@dataclass(frozen=True)
class PumpWear:
    """A CDU pump losing head: flow falls as h and pressure as h^2 (on the system curve), so
    the loop's temperature rise and every cold plate under it warm up."""

    kind: ClassVar[str] = "pump_wear"
    realises: ClassVar[str] = "cdu_flow_loss"  # its kind in twin.faults.FAULT_KINDS
    sudden: ClassVar[bool] = False
    cdu: int
    onset: float
    ramp_s: float
    floor: float  # health (share of nominal flow) at the end of the ramp

    def health(self, t: FloatArray) -> FloatArray:
        return 1.0 - (1.0 - self.floor) * _ramp(t, self.onset, self.ramp_s) ** 1.3


@dataclass(frozen=True)
class StorageDecay:
    """A backend losing capacity (a failing controller, a rebuilding array): tail latency up and
    delivered throughput down at unchanged demand; saves take longer."""

    kind: ClassVar[str] = "storage_decay"
    realises: ClassVar[str] = "storage_tail"  # its kind in twin.faults.FAULT_KINDS
    sudden: ClassVar[bool] = False
    storage: int
    onset: float
    ramp_s: float
    floor: float  # share of nominal capacity at the end of the ramp

    def health(self, t: FloatArray) -> FloatArray:
        return 1.0 - (1.0 - self.floor) * _ramp(t, self.onset, self.ramp_s)


@dataclass(frozen=True)
class Straggler:
    """A GPU whose clocks drop (a failing VRM: hw_slowdown, or the power brake) from one moment
    on: its rank runs 1/clock_factor slower, every step."""

    kind: ClassVar[str] = "straggler"
    realises: ClassVar[str] = "hw_thermal"  # its kind in twin.faults.FAULT_KINDS
    sudden: ClassVar[bool] = True
    gpu: int
    onset: float
    clock_factor: float
    bit: int


@dataclass(frozen=True)
class NodeDeath:
    """The node stops: its exporters go silent and its heartbeat ages without bound."""

    kind: ClassVar[str] = "node_death"
    realises: ClassVar[str] = "node_crash"  # its kind in twin.faults.FAULT_KINDS
    sudden: ClassVar[bool] = True
    node: int
    onset: float


@dataclass(frozen=True)
class LeafCongestion:
    """A leaf switch congested for good (a mis-set ECN threshold, a hot elephant flow): latency
    on all its links up and held, buffers full, the jobs on it a little slower."""

    kind: ClassVar[str] = "leaf_congestion"
    realises: ClassVar[str] = "switch_congestion"  # its kind in twin.faults.FAULT_KINDS
    sudden: ClassVar[bool] = False
    switch: int
    onset: float
    ramp_s: float
    latency_gain: float
    buffer_pct: float
    step_gain: float

    def level(self, t: FloatArray) -> FloatArray:
        return _ramp(t, self.onset, self.ramp_s)

    @property
    def impact(self) -> float:
        """Latency half as high again: where collectives start to wait."""
        return self.onset + self.ramp_s * min(1.0, 0.5 / self.latency_gain)


Fault = (
    ColdPlate
    | FailingOptic
    | HbmDecay
    | FallenOffBus
    | PumpWear
    | StorageDecay
    | Straggler
    | NodeDeath
    | LeafCongestion
)
FAULT_KINDS: tuple[str, ...] = tuple(
    c.kind
    for c in (
        ColdPlate,
        FailingOptic,
        HbmDecay,
        FallenOffBus,
        PumpWear,
        StorageDecay,
        Straggler,
        NodeDeath,
        LeafCongestion,
    )
)
