"""Fleet operations, the same under every policy: node lifecycle, repairs and the scheduler.

* A node drained by a policy leaves service when free: it goes to repair (its component faults
  are fixed in ``repair_s``) or, when nothing is wrong with it, to a diagnosis that returns it
  after ``operations.diagnose_h``.
* A job (re)start runs a prolog health check (as Slurm's NHC prolog does): a node with a dead
  GPU, a down host or a down link fails it, is drained and replaced. This is what the binary
  baseline relies on, and every policy gets it.
* The scheduler fills a job from free nodes the policy admits, ``admit`` before ``avoid``,
  never ``deny``, lowest index first (deterministic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology
from seamguard.twin.faults import Fault

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FREE = -1


class Actor:
    POLICY = "policy"
    PROLOG = "prolog"
    OPERATOR = "operator"


@dataclass(frozen=True)
class Drain:
    t: float
    node: int
    actor: str
    false: bool  # nothing was wrong with the node when it was drained
    reason: str


@dataclass
class Fleet:
    topology: Topology
    diagnose_s: float
    node_job: IntArray  # job index or FREE
    drained: BoolArray = field(init=False)
    in_repair: BoolArray = field(init=False)
    repair_until: npt.NDArray[np.float64] = field(init=False)
    held_false: BoolArray = field(init=False)  # drained by the policy with nothing wrong
    drains: list[Drain] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = self.node_job.size
        self.drained = np.zeros(n, bool)
        self.in_repair = np.zeros(n, bool)
        self.repair_until = np.full(n, math.inf)
        self.held_false = np.zeros(n, bool)

    @property
    def n_nodes(self) -> int:
        return int(self.node_job.size)

    def free(self) -> BoolArray:
        return np.asarray((self.node_job == FREE) & ~self.drained & ~self.in_repair, dtype=bool)

    def drain(self, t: float, node: int, actor: str, false: bool, reason: str) -> bool:
        if self.drained[node] or self.in_repair[node]:
            return False
        self.drained[node] = True
        self.held_false[node] = false and actor == Actor.POLICY
        self.drains.append(Drain(t, node, actor, false, reason))
        return True

    def send_free_drained_to_repair(self, t: float, repair_s: npt.NDArray[np.float64]) -> None:
        """Drained nodes without work go out; ``repair_s`` per node is 0 when nothing is wrong."""
        go = self.drained & (self.node_job == FREE) & ~self.in_repair
        idx = np.flatnonzero(go)
        if idx.size:
            self.in_repair[idx] = True
            self.repair_until[idx] = t + np.where(repair_s[idx] > 0, repair_s[idx], self.diagnose_s)

    def returns(self, t: float) -> IntArray:
        back = np.flatnonzero(self.in_repair & (self.repair_until <= t))
        if back.size:
            self.in_repair[back] = False
            self.drained[back] = False
            self.held_false[back] = False
            self.repair_until[back] = math.inf
        return back.astype(np.int64)

    def pick(self, count: int, admission: IntArray, usable: BoolArray) -> IntArray | None:
        """``count`` free, usable nodes the policy admits (admit first), or None if there are not enough."""
        ok = self.free() & usable & (admission < 2)
        cand = np.flatnonzero(ok)
        if cand.size < count:
            return None
        order = np.lexsort((cand, admission[cand]))
        return np.sort(cand[order[:count]]).astype(np.int64)


def node_faults(faults: tuple[Fault, ...], topology: Topology) -> list[list[int]]:
    """Per node, the ids of component faults that sit on it (its GPUs, itself, its uplink)."""
    out: list[list[int]] = [[] for _ in range(topology.count(EntityKind.NODE))]
    for f in faults:
        target = f.spec.target
        if target is EntityKind.GPU:
            out[int(topology.gpu_node[f.local])].append(f.fid)
        elif target in (EntityKind.NODE, EntityKind.LINK):
            out[f.local].append(f.fid)
    return out


def domain_nodes(topology: Topology, fault: Fault) -> IntArray:
    """Nodes a fault's condition touches (for false-quarantine judgement and the oracle)."""
    kind = fault.spec.target
    if kind is EntityKind.GPU:
        return np.array([int(topology.gpu_node[fault.local])], dtype=np.int64)
    if kind in (EntityKind.NODE, EntityKind.LINK):
        return np.array([fault.local], dtype=np.int64)
    if kind is EntityKind.RACK:
        return np.flatnonzero(topology.node_rack == fault.local).astype(np.int64)
    if kind is EntityKind.CDU:
        return np.flatnonzero(topology.rack_cdu[topology.node_rack] == fault.local).astype(np.int64)
    if kind is EntityKind.SWITCH:
        return np.flatnonzero(topology.node_leaf == fault.local).astype(np.int64)
    return np.zeros(0, dtype=np.int64)
