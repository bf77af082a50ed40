"""GFS: combine every detector's evidence about an entity into one score in [0, 1].

Weighted noisy-OR: GFS = 1 - prod_k (1 - w_k e_k). One decisive signal can carry the score
on its own, several weak ones accumulate, and adding evidence never lowers it. The same
combination over the recovery-path signals only gives the recovery share, and over the failure
precursors only (``hazard.precursors``: by default errors, XIDs, a silent host; each entry a
signal, or ``rule:signal`` for one detector's evidence) the score the hazard reads,
so a part that is merely slow (throttled, braked, hot) is not taken for one about to die.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from seamguard.model.topology import Topology
from seamguard.scoring.evidence import Evidence, FloatArray

_MAX_TERM = 1.0 - 1e-12


@dataclass(frozen=True)
class Contribution:
    detector: str
    signal: str
    score: float  # weight x evidence
    text: str


@dataclass(frozen=True)
class Combined:
    gfs: FloatArray  # global
    recovery: FloatArray  # the recovery-path signals' share of the evidence
    precursor: FloatArray  # the failure precursors' share: what the hazard reads


def combine(
    evidence: Sequence[Evidence], topology: Topology, precursors: frozenset[str] = frozenset()
) -> Combined:
    """The three noisy-ORs over global entity indices."""
    acc = np.zeros(topology.n_entities)
    acc_rec = np.zeros(topology.n_entities)
    acc_pre = np.zeros(topology.n_entities)
    for ev in evidence:
        if ev.evidence.size == 0:
            continue
        term = np.log1p(-np.minimum(ev.weight * ev.evidence, _MAX_TERM))
        idx = topology.members[ev.kind]
        acc[idx] += term
        if ev.recovery:
            acc_rec[idx] += term
        if ev.signal in precursors or f"{ev.detector}:{ev.signal}" in precursors:
            acc_pre[idx] += term
    return Combined(-np.expm1(acc), -np.expm1(acc_rec), -np.expm1(acc_pre))


def contributions(
    evidence: Sequence[Evidence], topology: Topology, gidx: int, *, limit: int = 4, floor: float = 0.01
) -> list[Contribution]:
    """The strongest pieces of evidence behind one entity's GFS, strongest first."""
    kind = topology.kind_of(gidx)
    local = int(topology.local[gidx])
    found = [
        Contribution(ev.detector, ev.signal, float(ev.weight * ev.evidence[local]), ev.describe(local))
        for ev in evidence
        if ev.kind is kind and ev.evidence.size > local and ev.weight * ev.evidence[local] >= floor
    ]
    found.sort(key=lambda c: -c.score)
    return found[:limit]
