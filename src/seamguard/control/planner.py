"""The planner: turns state changes into proposed actions (journaled; advise mode acts on nothing).

Which actions follow which state is policy (``actions`` in the config). The planner only
resolves each action onto the entity it lands on (``model.action_kinds``): a GPU's drain targets its node, a
checkpoint order targets every job that depends on the entity. Each decision names its cause.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from seamguard.config import Config
from seamguard.journal.records import DecisionRecord, EvidenceItem
from seamguard.model.action_kinds import KINDS, Lands
from seamguard.model.entities import EntityKind
from seamguard.model.states import State
from seamguard.model.topology import Topology, node_of
from seamguard.model.workload import Workload


def _node_id(topology: Topology, gidx: int) -> str | None:
    node = node_of(topology, gidx)
    return None if node is None else f"node/{topology.names[EntityKind.NODE][node]}"


def _jobs_depending_on(topology: Topology, workload: Workload, gidx: int) -> list[str]:
    if topology.kind_of(gidx) is EntityKind.JOB:
        return [topology.ids[gidx]]
    row = topology.below[gidx] @ workload.gpu_in_job
    jobs = np.flatnonzero(np.asarray(row.todense()).ravel() > 0)
    return [f"job/{topology.jobs[j].job}" for j in jobs.tolist()]


def plan(
    config: Config,
    topology: Topology,
    workload: Workload,
    *,
    now: float,
    gidx: int,
    state: State,
    previous: State,
    reason: str,
    evidence: Sequence[EvidenceItem],
    mode: str,
    epoch: int,
) -> list[DecisionRecord]:
    kind = topology.kind_of(gidx)
    source = topology.ids[gidx]
    out: list[DecisionRecord] = []
    if state is State.HEALTHY and (previous is State.HEALTHY or not config.actions_for(kind, previous)):
        return out  # an undo needs something done to undo: back from unknown restores nothing
    for action in config.actions_for(kind, state):
        targets: list[str]
        lands = KINDS[action].lands
        if lands is Lands.NODE:
            node = _node_id(topology, gidx)
            targets = [node] if node else []
        elif lands is Lands.JOBS:
            targets = _jobs_depending_on(topology, workload, gidx)
        else:
            targets = [source]
        for target in targets:
            why = reason if target == source else f"{source} {state.label}: {reason}"
            out.append(
                DecisionRecord(
                    ts=now,
                    entity=target,
                    action=action.value,
                    mode=mode,
                    reason=why,
                    state=state.label,
                    evidence=tuple(evidence),
                    epoch=epoch,
                    cause=source,
                )
            )
    return out
