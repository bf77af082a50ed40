"""Observation windows: where and when a policy sees telemetry in ``windows`` mode.

A 16,384-GPU cluster observed every 30 s for 54 days is 155,520 engine ticks over the whole
fleet: days of compute on two cores. Almost all of that time nothing happens that a policy
could act on, so ``windows`` mode observes a *cell* of racks only around the faults in it:
from ``lead`` before a fault's onset (the warm-up a detector needs before a precursor, at least
the time a save takes so that the oracle can act ahead) until ``cooldown`` after the fault is
over (it struck, its facility condition ended, or its node was repaired). A cell also stays
observed while the policy still holds an in-service node there in a non-healthy state, so a
policy is never frozen mid-judgement. Between windows the twin takes long quiet steps.

Windows open from the fault records alone, so every policy is watching when each fault begins;
they close when it is over, which for a component fault is its node's repair, sooner under a
policy that pulls the node out sooner. What the shortcut costs (false quarantines a policy might raise in the
gaps) is measured separately at full cadence; ``docs/twin.md`` says how.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.model.entities import EntityKind
from seamguard.twin.faults import Fault
from seamguard.twin.fleet import domain_nodes
from seamguard.twin.policies.base import save_ahead_s
from seamguard.twin.world import World

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class WindowPlan:
    """Per fault (in fault order): when its window opens, when it closes by itself, its cells."""

    open_t: FloatArray
    close_t: FloatArray  # inf: closes ``cooldown`` after the fault is repaired
    cells: tuple[IntArray, ...]  # empty for job-level faults: the policy is called, no cell shown
    cooldown_s: float
    by_open: IntArray  # fault ids in the order their windows open
    opens_sorted: FloatArray  # open_t[by_open]

    def next_open(self, t: float) -> float:
        """The first window opening strictly after ``t`` (inf if none)."""
        i = int(np.searchsorted(self.opens_sorted, t, side="right"))
        return float(self.opens_sorted[i]) if i < self.opens_sorted.size else math.inf


def fault_cells(world: World, fault: Fault) -> IntArray:
    """Cells whose telemetry shows the fault: its domain's, or for a storage backend its users'."""
    if fault.spec.target is EntityKind.STORAGE:
        users = np.flatnonzero((world.job_storage == fault.local) | (world.job_fallback == fault.local))
        nodes = (
            np.concatenate([world.initial_nodes[j] for j in users.tolist()])
            if users.size
            else np.zeros(0, np.int64)
        )
    else:
        nodes = domain_nodes(world.topology, fault)
    return np.unique(world.node_cell[nodes]).astype(np.int64)


def plan_windows(world: World) -> WindowPlan:
    obs = world.scenario.observation
    lead = save_ahead_s(world)
    warmup = obs.warmup_min * 60.0
    opens, closes, cells = [], [], []
    for f in world.faults:
        opens.append(f.onset - (max(lead, warmup) if f.ramp > 0 or not f.hard else lead))
        closes.append(min(f.hard_at, f.end))
        cells.append(fault_cells(world, f))
    open_t = np.array(opens, dtype=np.float64)
    by_open = np.argsort(open_t, kind="stable").astype(np.int64)
    return WindowPlan(
        open_t=open_t,
        close_t=np.array(closes, dtype=np.float64),
        cells=tuple(cells),
        cooldown_s=obs.cooldown_min * 60.0,
        by_open=by_open,
        opens_sorted=open_t[by_open],
    )
