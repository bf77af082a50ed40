"""What a replica plans when it takes the leadership (``ha``, ``daemon``).

The planner acts on transitions. While a replica followed, its engine saw parts enter quarantine
and decided as advice; the leader of the time may never have carried those out (a budget queued
them, the storm brake held them, or it died first). So at its first tick as leader a replica plans
again every part held out of service now (quarantine, harmful, failed) that the tick's own
transitions did not plan. What the safety layer already holds (restored from the journal) is
answered ``already``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from seamguard.config import Config
from seamguard.control.planner import plan
from seamguard.journal.records import DecisionRecord, EvidenceItem
from seamguard.model.states import State
from seamguard.model.topology import Topology
from seamguard.model.workload import Workload

HELD_OUT = np.array([int(State.QUARANTINE), int(State.HARMFUL), int(State.FAILED)], dtype=np.int64)


def replanned(
    config: Config,
    topology: Topology,
    workload: Workload,
    states: npt.NDArray[np.int64],
    evidence_of: Callable[[int], tuple[EvidenceItem, ...]],
    now: float,
    changed: set[int],
    mode: str,
    epoch: int,
) -> list[DecisionRecord]:
    out: list[DecisionRecord] = []
    for gidx in np.flatnonzero(np.isin(states, HELD_OUT)).tolist():
        if gidx in changed:
            continue
        state = State(int(states[gidx]))
        why = f"{topology.ids[gidx]} {state.label} when this replica took the leadership: planned again"
        out.extend(plan(config, topology, workload, now=now, gidx=gidx, state=state, previous=State.HEALTHY,
                        reason=why, evidence=evidence_of(gidx), mode=mode, epoch=epoch))  # fmt: skip
    return out
