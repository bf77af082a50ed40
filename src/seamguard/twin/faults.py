"""The twin's fault kinds and the concrete faults of one run (declared plus sampled from hazards).

A fault starts at ``onset``, shows a *gray phase* for ``ramp`` seconds (its precursor: what a
seam-aware controller can see coming), and may end *hard* at ``onset + ramp`` (a GPU off the
bus, a host down, a link down, a job crash). Facility faults (a CDU, a leaf switch, a storage
backend, a rack's power) last ``duration`` and are fixed by their own teams; component faults
last until the node carrying them is drained and repaired. The twin alone knows these records:
policies see telemetry, never faults (only ``oracle`` reads them).

``FAULT_KINDS`` is the one table of fault kinds: the twin's physics (``effects``, the hard
events), the labelled detection suite (``labelled``) and the scope function (``scope``) all draw
from it, and tests check each of them models every kind, so a new kind is added here first.

A *transient* hard failure (``FaultKind.down_s`` > 0: ``node_reboot``) heals by itself: the host is
down for ``down_s`` x severity from ``hard_at`` (``Fault.back_at``), its jobs crash with it, and it
comes back whole with no repair (drained meanwhile by a prolog check, its "repair" is the rest of
the reboot: ``repair_s``). It has no gray phase (``gray`` is False), and it is not ``benign``: the
host really is down, so an engine that sees it failed while it reboots is right, not a false
quarantine; one that keeps it out after ``back_at`` is not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from seamguard.model.entities import EntityKind, kind_of
from seamguard.model.topology import Topology


class HardEffect(StrEnum):
    NONE = "none"
    GPU = "gpu"  # the GPU dies (an XID); its node's jobs crash
    NODE = "node"  # the host dies (heartbeat lost)
    LINK = "link"  # the uplink goes down; the node's jobs crash
    JOB_CRASH = "job_crash"  # a software fault: the job dies, no hardware at fault
    JOB_HANG = "job_hang"  # a collective hangs until the watchdog fires
    SDC = "sdc"  # silent data corruption: found later, checkpoints after it are bad


@dataclass(frozen=True)
class FaultKind:
    name: str
    target: EntityKind
    hard: HardEffect
    xid: int | None  # the XID a hard GPU failure reports
    facility: bool  # fixed by its own team after `duration`, not by repairing a node
    benign: bool = False
    description: str = ""
    hard_by_default: bool = True  # False: gray unless a scenario says `hard: true`
    observable: bool = True  # False: no telemetry shows it (silent data corruption)
    down_s: float = 0.0  # > 0: a transient hard failure, down this long x severity, then whole again
    serving: bool = (
        False  # acts on a disaggregated serving deployment's KV transfers (``twin.serving``) alone
    )


REBOOT_S = 300.0  # a host's reboot at severity 1: firmware, kernel, drivers and health checks
FAULT_KINDS: dict[str, FaultKind] = {
    k.name: k
    for k in (
        FaultKind("cdu_flow_loss", EntityKind.CDU, HardEffect.NONE, None, True,
                  description="a CDU pump loses flow (severity = fraction of flow lost)"),
        FaultKind("supply_temp_rise", EntityKind.CDU, HardEffect.NONE, None, True,
                  description="facility water arrives warmer (severity x 10 °C)"),
        FaultKind("psu_loss", EntityKind.RACK, HardEffect.NONE, None, True,
                  description="a rack loses power supplies (limit x (1 - severity/2)): power brake under load"),
        FaultKind("hbm_ecc", EntityKind.GPU, HardEffect.GPU, 48, False,
                  description="HBM correctables rise over the ramp, then a double-bit error (XID 48)"),
        FaultKind("sram_ecc", EntityKind.GPU, HardEffect.GPU, 95, False,
                  description="SRAM correctables rise, then an uncontained ECC error (XID 95)"),
        FaultKind("gpu_hard", EntityKind.GPU, HardEffect.GPU, 79, False,
                  description="a faulty GPU: PCIe/NVLink replays and slowing over the ramp, then off the bus (XID 79)"),
        FaultKind("gsp_error", EntityKind.GPU, HardEffect.GPU, 119, False,
                  description="the GPU system processor stops answering (XID 119)"),
        FaultKind("thermal_interface", EntityKind.GPU, HardEffect.GPU, 79, False, hard_by_default=False,
                  description="a cold plate or thermal interface degrades: the GPU heats by severity x 15 °C over the ramp"),
        FaultKind("hw_thermal", EntityKind.GPU, HardEffect.NONE, None, False,
                  description="a cold plate fails at once: +15 °C x severity, hardware slowdown"),
        FaultKind("pcie_downtrain", EntityKind.GPU, HardEffect.NONE, None, False,
                  description="the GPU's PCIe link trains down: the rank is 30% x severity slower"),
        FaultKind("link_gray", EntityKind.LINK, HardEffect.LINK, None, False, hard_by_default=False,
                  description="a node uplink retransmits and turns latency-toxic; hard: true ends it down"),
        FaultKind("link_down", EntityKind.LINK, HardEffect.LINK, None, False,
                  description="a node uplink goes down"),
        FaultKind("switch_congestion", EntityKind.SWITCH, HardEffect.NONE, None, True,
                  description="a leaf switch's buffers fill: every link under it slows"),
        FaultKind("kv_path_degraded", EntityKind.SWITCH, HardEffect.NONE, None, True, serving=True,
                  description="the leaf's spine uplinks that carry KV-cache transfers between serving pools "
                              "degrade: a transfer across them takes x(1 + 4 x severity), jitters (+60 ms sd) and "
                              "fails (15% x severity); both ends stay healthy"),
        FaultKind("storage_tail", EntityKind.STORAGE, HardEffect.NONE, None, True,
                  description="a checkpoint backend's tail latency explodes and its throughput falls"),
        FaultKind("dataset_starve", EntityKind.STORAGE, HardEffect.NONE, None, True,
                  description="a backend's read path saturates: read latency x17 at severity 1, writes barely "
                              "slower; every job reading from it runs 40% x severity slower, job-wide"),
        FaultKind("node_crash", EntityKind.NODE, HardEffect.NODE, None, False,
                  description="the host goes down (hardware, kernel, unplanned maintenance)"),
        FaultKind("node_reboot", EntityKind.NODE, HardEffect.NODE, None, False, down_s=REBOOT_S,
                  description="the host reboots (a kernel panic, a watchdog, a maintenance reboot): down "
                              "5 min x severity, then back whole; its jobs crash and restart"),
        FaultKind("software_crash", EntityKind.JOB, HardEffect.JOB_CRASH, None, True,
                  description="the job dies of a software fault; no hardware is at fault"),
        FaultKind("job_hang", EntityKind.JOB, HardEffect.JOB_HANG, None, True,
                  description="a collective hangs until the watchdog (NCCL timeout) fires"),
        FaultKind("input_stall", EntityKind.JOB, HardEffect.NONE, None, True,
                  description="the job's input pipeline cannot feed its GPUs: every rank waits, steps 50% x "
                              "severity longer, GPUs idle in proportion; no part at fault"),
        FaultKind("sdc", EntityKind.GPU, HardEffect.SDC, None, False, observable=False,
                  description="silent data corruption: found by the training team later"),
        FaultKind("slow_gpu", EntityKind.GPU, HardEffect.NONE, None, False, benign=True,
                  description="benign: a GPU 8% x severity slower than its peers, steady"),
        FaultKind("exporter_silent", EntityKind.NODE, HardEffect.NONE, None, True, benign=True,
                  description="benign: a node's exporter goes silent for the ramp"),
        FaultKind("counter_reset", EntityKind.GPU, HardEffect.NONE, None, False, benign=True,
                  description="benign: a driver reload restarts the GPU's error counters from zero"),
    )
}  # fmt: skip


@dataclass(frozen=True)
class Fault:
    """One concrete fault of a run. Times are absolute unix seconds."""

    fid: int
    kind: str
    target: str  # entity id
    local: int  # the target's index within its kind
    onset: float
    ramp: float
    severity: float
    duration: float  # how long a facility fault lasts; inf for component faults
    hard: bool  # ends hard at onset + ramp
    xid: int | None
    source: str  # "declared" or the hazard category that produced it
    repair_s: float

    def __post_init__(self) -> None:
        if self.spec.down_s > 0:  # a reboot's "repair" (a prolog check drained it) is the reboot itself
            object.__setattr__(self, "repair_s", self.down_for)

    @property
    def down_for(self) -> float:
        """How long a transient hard failure keeps its target down (0: not transient)."""
        return self.spec.down_s * self.severity

    @property
    def back_at(self) -> float:
        """When a transient hard failure's target is whole again by itself (inf: it needs a repair)."""
        return self.hard_at + self.down_for if self.down_for > 0 and self.hard else math.inf

    @property
    def spec(self) -> FaultKind:
        return FAULT_KINDS[self.kind]

    @property
    def hard_at(self) -> float:
        return self.onset + self.ramp if self.hard else math.inf

    @property
    def end(self) -> float:
        """When the condition ends by itself (facility faults); component faults need a repair."""
        return self.onset + self.duration

    @property
    def benign(self) -> bool:
        return self.spec.benign

    @property
    def gray(self) -> bool:
        """Has a phase a policy could act on before (or instead of) a hard failure."""
        return not self.benign and self.spec.down_s <= 0 and (self.ramp > 0 or not self.hard)

    def progress(self, t: float) -> float:
        if t < self.onset:
            return 0.0
        if self.ramp <= 0:
            return 1.0
        return min((t - self.onset) / self.ramp, 1.0)


MAX_SEVERITY = 2.0


def hard_default(kind: str, hard: bool | None) -> bool:
    """Whether a fault of ``kind`` ends hard: never for kinds without a hard effect, else as asked."""
    spec = FAULT_KINDS[kind]
    if spec.hard is HardEffect.NONE:
        return False
    return spec.hard_by_default if hard is None else hard


def declare(
    topology: Topology,
    kind: str,
    target: str,
    onset: float,
    *,
    ramp: float = 0.0,
    severity: float = 1.0,
    duration: float = math.inf,
    hard: bool | None = None,
    fid: int = -1,
    source: str = "declared",
    repair_s: float = math.inf,
) -> Fault:
    """One checked fault on ``topology`` (absolute times): a typo would otherwise inject nothing."""
    spec = FAULT_KINDS.get(kind)
    if spec is None:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
    try:
        got = kind_of(target)
    except ValueError as exc:
        raise ValueError(f"fault {kind}: {exc}") from None
    if got is not spec.target:
        raise ValueError(
            f"fault {kind}: target {target!r} is a {got.value}, expected a {spec.target.value} id"
        )
    gidx = topology.lookup(target)
    if gidx is None:
        raise ValueError(f"fault {kind}: target {target!r} is not in the topology")
    for name, value in (("onset", onset), ("ramp", ramp)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"fault {kind} on {target}: {name} must be >= 0, got {value}")
    if kind == "exporter_silent" and ramp <= 0:
        raise ValueError(f"fault {kind} on {target}: needs ramp > 0 (how long the exporter stays silent)")
    if not (math.isfinite(severity) and 0 < severity <= MAX_SEVERITY):
        raise ValueError(
            f"fault {kind} on {target}: severity must be in (0, {MAX_SEVERITY:g}], got {severity}"
        )
    if not duration > 0:
        raise ValueError(f"fault {kind} on {target}: duration must be positive, got {duration}")
    return Fault(fid, kind, target, int(topology.local[gidx]), onset, ramp, severity,
                 duration if spec.facility else math.inf, hard_default(kind, hard), spec.xid, source, repair_s)  # fmt: skip


def sort_faults(faults: Sequence[Fault]) -> tuple[Fault, ...]:
    ordered = sorted(faults, key=lambda f: (f.onset, f.target, f.kind))
    return tuple(
        Fault(
            i,
            f.kind,
            f.target,
            f.local,
            f.onset,
            f.ramp,
            f.severity,
            f.duration,
            f.hard,
            f.xid,
            f.source,
            f.repair_s,
        )
        for i, f in enumerate(ordered)
    )


def poisson_onsets(
    rng: np.random.Generator, rate_per_s: np.ndarray, start: float, end: float
) -> tuple[np.ndarray, np.ndarray]:
    """(component index, onset) of a Poisson process per component with the given rates."""
    counts = rng.poisson(rate_per_s * (end - start))
    which = np.repeat(np.arange(rate_per_s.size), counts)
    onsets = rng.uniform(start, end, which.size)
    return which, onsets
