"""What one run of one policy produced: per-job accounting, timelines, drains and fault outcomes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from seamguard.twin.accounting import BUCKETS, LOST_BUCKETS, Bucket

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class JobResult:
    name: str
    job_class: str
    gpus: int
    reserved_gpu_s: float
    buckets: tuple[float, ...]  # GPU-seconds, in BUCKETS order
    failures: int
    restarts: int
    saves: int
    # GPU-seconds its healthy GPUs (under no fault) waited for its slow ones: of a synchronous job
    # of G GPUs, k of them under a fault, slowed by s, (G - k) x s / (1 + s) a second (restarts apart)
    healthy_wait_gpu_s: float = 0.0

    @property
    def ettr(self) -> float:
        return (
            self.buckets[Bucket.PRODUCTIVE] / self.reserved_gpu_s if self.reserved_gpu_s > 0 else float("nan")
        )


@dataclass(frozen=True)
class FaultOutcome:
    """What became of one fault: the one outcome type of the twin and the labelled detection suite
    (which also fills the ``first_*``/``worst_state`` fields from the engine's transitions)."""

    fid: int
    kind: str
    target: str
    source: str
    benign: bool
    gray: bool
    onset: float
    impact: float  # when it began to cost something (inf: never)
    hard_at: float
    detected_at: float  # inf: never
    missed: bool  # a gray failure nobody acted on before it broke or ended
    first_entity: str | None = None  # the first entity in scope the engine flagged
    first_state: str | None = None
    worst_state: str | None = None  # the worst state the target itself (else its scope) reached

    @property
    def detected(self) -> bool:
        return math.isfinite(self.detected_at)

    @property
    def delay_s(self) -> float | None:
        return self.detected_at - self.onset if self.detected else None

    @property
    def lead_s(self) -> float | None:
        """Impact minus detection: positive when the fault was seen before it cost anything."""
        return self.impact - self.detected_at if self.detected else None

    @property
    def sudden(self) -> bool:
        """Strikes at onset with its full effect: a detector has one tick to classify it."""
        return self.onset == self.impact


@dataclass(frozen=True)
class DrainRecord:
    t: float
    node: str
    actor: str
    false: bool
    reason: str


@dataclass
class RunResult:
    scenario: str
    policy: str
    seed: int
    start: float
    end: float
    node_days: float
    jobs: list[JobResult]
    faults: list[FaultOutcome]
    drains: list[DrainRecord]
    actions: dict[str, int]
    timeline_t: FloatArray
    timeline_goodput: FloatArray
    timeline_ettr: FloatArray  # ETTR so far: useful work by each bin's end over time reserved until then
    focus_nodes: list[str]
    focus_states: npt.NDArray[np.int8]  # (nodes, bins): State codes, 7 drained, 8 in repair
    focus_title: str
    transitions: int = 0
    wall_s: float = 0.0
    engine_ticks: int = 0
    observed_node_days: float = 0.0  # node-days the policy saw telemetry for (all of them in full mode)
    notes: list[str] = field(default_factory=list)
    # seamguard's action results by "kind status" (the safety layer's refusals, holds and advice too)
    outcomes: dict[str, int] = field(default_factory=dict)
    # what seamguard's actuator carried out, (time, kind, target), for the state timeline's marks
    acted: list[tuple[float, str, str]] = field(default_factory=list)
    # disaggregated serving (a scenario's ``serving:``): goodput, TTFT percentiles, shed share...
    serving: dict[str, float] | None = None

    @property
    def reserved_gpu_s(self) -> float:
        return sum(j.reserved_gpu_s for j in self.jobs)

    def bucket_totals(self) -> dict[str, float]:
        tot = np.zeros(len(BUCKETS))
        for j in self.jobs:
            tot += np.asarray(j.buckets)
        return dict(zip(BUCKETS, tot.tolist(), strict=True))

    @property
    def ettr(self) -> float:
        r = self.reserved_gpu_s
        return self.bucket_totals()["productive"] / r if r > 0 else float("nan")

    @property
    def healthy_wait_gpu_h(self) -> float:
        """GPU-hours healthy GPUs waited for a gray part of their synchronous job (all jobs)."""
        return sum(j.healthy_wait_gpu_s for j in self.jobs) / 3600.0

    def lost_shares(self) -> dict[str, float]:
        """Each loss bucket's share of reserved GPU time (with ``ettr`` they sum to 1)."""
        r = self.reserved_gpu_s
        totals = self.bucket_totals()
        return {k: totals[k] / r if r > 0 else 0.0 for k in LOST_BUCKETS}

    @property
    def false_quarantines(self) -> int:
        return sum(1 for d in self.drains if d.false and d.actor == "policy")

    @property
    def missed_gray(self) -> int:
        return sum(1 for f in self.faults if f.missed)

    def detection_leads(self) -> list[float]:
        return [
            f.impact - f.detected_at
            for f in self.faults
            if not f.benign and np.isfinite(f.detected_at) and np.isfinite(f.impact)
        ]
