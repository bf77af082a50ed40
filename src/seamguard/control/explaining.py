"""The sentences an engine journals: the evidence behind an entity's state and the reason for
each transition, from the tick's scores and the straggler valuation. Pure functions of what the
tick computed, so ``explain`` and the tick say the same thing."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.config import Config
from seamguard.economics.harm import Harm
from seamguard.journal.records import EvidenceItem, ObservationRecord
from seamguard.model.entities import EntityKind
from seamguard.model.states import State
from seamguard.model.topology import Topology
from seamguard.model.workload import Workload
from seamguard.scoring.engine import ScoreFrame
from seamguard.scoring.gfs import contributions

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def harm_texts(topology: Topology, workload: Workload, harm: Harm) -> dict[int, str]:
    """Per straggling GPU (global index), why keeping it costs its job more than a swap."""
    gpus = topology.members[EntityKind.GPU]
    out: dict[int, str] = {}
    waits = harm.waits if harm.waits is not None else np.zeros(harm.ratio.size, dtype=bool)
    for local in np.flatnonzero(harm.ratio > 0).tolist():
        job = topology.jobs[int(workload.gpu_job[local])].job
        others = int(harm.stragglers[local]) - 1
        who = f"straggler of job {job}" + (f" (with {others} more)" if others > 0 else "")
        out[int(gpus[local])] = (
            f"{who}, {harm.slowdown[local] * 100:.0f}% over its median: keeping it costs "
            f"{harm.gain_gpus[local]:.1f} GPU-equivalents, a swap {harm.cost_gpus[local]:.1f}"
            + (" (no spare: the job would wait for the node back)" if waits[local] else "")
        )
    return out


def evidence_items(
    frame: ScoreFrame | None, topology: Topology, harm_text: dict[int, str], gidx: int
) -> tuple[EvidenceItem, ...]:
    if frame is None:
        return ()
    found = contributions(frame.evidence, topology, gidx)
    items = [EvidenceItem(c.detector, c.signal, round(c.score, 4), c.text) for c in found]
    if gidx in harm_text:
        items.append(EvidenceItem("economics", "gpu.step_time_s", 0.0, harm_text[gidx]))
    if frame.hard_fail[gidx] and gidx in frame.hard_reason:
        items.insert(0, EvidenceItem("hard", "", 1.0, frame.hard_reason[gidx]))
    return tuple(items)


def transition_reason(
    config: Config,
    gfs: float,
    harm_text: str | None,
    harm_ratio: float,
    before: State,
    after: State,
    items: tuple[EvidenceItem, ...],
    cleared_for: float,
) -> str:
    clear_s = round(cleared_for)
    if after is State.UNKNOWN:
        return f"no fresh telemetry for {config.engine.stale_after_s:g} s"
    texts = [i.text for i in items]
    if before is State.UNKNOWN and after is State.HEALTHY:
        return "telemetry fresh again, nothing against it"
    if after is State.HARMFUL and harm_text is not None:
        return harm_text
    if before is State.HARMFUL and after is State.HEALTHY:
        econ = config.economics
        if math.isnan(harm_ratio):
            return (
                f"runs no job to be judged by for {econ.diagnose_s:g} s since it was found harmful "
                "(a repeat offender longer): admitted again"
            )
        return (
            f"no longer worth a swap: harm ratio {harm_ratio:.2f}, below exit "
            f"{econ.harmful_exit_ratio:g} for {clear_s:g} s"
        )
    if texts and after is not State.HEALTHY:
        return ", ".join(texts)
    if after is State.HEALTHY or (after is State.DEGRADED and before is State.FAILED):
        return f"GFS {abs(gfs):.2f}, below exit threshold for {clear_s:g} s" + (
            f" (remaining: {', '.join(texts)})" if texts else ""
        )
    return ", ".join(texts) or f"GFS {abs(gfs):.2f}"


@dataclass(frozen=True)
class EntityView:
    """Everything the engine knows about one entity right now (for explain and the demo)."""

    entity: str
    state: State
    since: float
    gfs: float
    prs: float
    fae: float
    evidence: tuple[EvidenceItem, ...]


@dataclass(frozen=True)
class Scores:
    """One tick's per-entity scores and states, as the sentences read them."""

    topology: Topology
    state: npt.NDArray[np.int64]
    entered: FloatArray
    gfs: FloatArray
    prs: FloatArray
    fae: FloatArray
    items_of: Callable[[int], tuple[EvidenceItem, ...]]


def entity_view(scores: Scores, eid: str) -> EntityView:
    gidx = scores.topology.lookup(eid)
    if gidx is None:
        raise KeyError(f"unknown entity {eid!r}")
    return EntityView(
        entity=eid,
        state=State(int(scores.state[gidx])),
        since=float(scores.entered[gidx]),
        gfs=float(scores.gfs[gidx]),
        prs=float(scores.prs[gidx]),
        fae=float(scores.fae[gidx]),
        evidence=scores.items_of(gidx),
    )


def observations(
    scores: Scores, now: float, changed: IntArray, last_observed: FloatArray, every_s: float
) -> list[ObservationRecord]:
    """Every non-healthy entity once per ``every_s``, and each one that changed now; ``last_observed``
    is moved on for those journaled."""
    st = scores.state
    watch = (st != int(State.HEALTHY)) & (st != int(State.UNKNOWN))
    due = watch & (now - last_observed >= every_s)
    due[changed] = watch[changed]
    out = []
    for gidx in np.flatnonzero(due).tolist():
        last_observed[gidx] = now
        out.append(
            ObservationRecord(
                ts=now,
                entity=scores.topology.ids[gidx],
                state=State(int(st[gidx])).label,
                gfs=float(scores.gfs[gidx]),
                prs=float(scores.prs[gidx]),
                fae=float(scores.fae[gidx]),
                evidence=scores.items_of(gidx),
            )
        )
    return out
