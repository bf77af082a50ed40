"""The recent past of the entities an operator is likely to open: their scores and the raw values
of the signals behind their evidence, tick by tick, for the console's plots around a transition.

Bounded whatever the fleet: at most ``capacity`` entities (those unwell now or that changed state,
newest first; a calm one is the first to give its slot up) and ``depth`` ticks each, in numpy
rings written once per tick with one gather per signal. An entity's signals are the ones its
evidence named when it was admitted (at most ``SIGNALS``). The journal keeps the full history
(``seamguard explain``); this is what the page can draw at once.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from seamguard.control.controller import Controller
from seamguard.journal.records import TransitionRecord
from seamguard.model.states import State
from seamguard.model.topology import Topology

SIGNALS = 3  # signals kept per entity
CALM = (int(State.HEALTHY), int(State.UNKNOWN))


class SignalRecorder:
    def __init__(self, capacity: int = 1024, depth: int = 240) -> None:
        self.capacity, self.depth = capacity, depth
        self._lock = threading.Lock()
        self._slot: dict[int, int] = {}  # global entity index -> slot
        self._entity = np.full(capacity, -1, dtype=np.int64)
        self._admitted = np.zeros(capacity)  # when each slot was taken
        self._signals: list[tuple[str, ...]] = [() for _ in range(capacity)]
        self._signal_id = np.full((capacity, SIGNALS), -1, dtype=np.int64)  # index into _names
        self._names: list[str] = []
        self._name_id: dict[str, int] = {}
        self._ts = np.full(depth, np.nan)
        self._scores = np.full((depth, capacity, 3), np.nan)  # gfs, prs, fae
        self._values = np.full((depth, capacity, SIGNALS), np.nan)
        self._row = -1
        self._topology: Topology | None = None

    def record(self, now: float, controller: Controller, transitions: Sequence[TransitionRecord]) -> None:
        """One tick (the daemon's thread, after the engine's tick)."""
        topo = controller.topology
        if topo is not self._topology:  # the world changed: entity indices moved, start again
            self._reset(topo)
        states = controller.classifier.state
        changed = [g for t in transitions if (g := topo.lookup(t.entity)) is not None]
        unwell = np.flatnonzero(~np.isin(states, CALM))
        with self._lock:
            for g in [*changed, *unwell[: self.capacity].tolist()]:
                if g not in self._slot:
                    self._admit(int(g), now, controller)
            self._row = (self._row + 1) % self.depth
            row = self._row
            self._ts[row] = now
            used = self._entity >= 0
            ent = np.where(used, self._entity, 0)
            self._scores[row] = np.nan
            self._scores[row, used] = np.stack(
                [controller.gfs[ent], controller.prs[ent], controller.fae[ent]], axis=1
            )[used]
            self._values[row] = np.nan
            # one gather per signal: (slot, k) of every place it is kept, found with one mask
            ids = np.where(used[:, None], self._signal_id, -1)
            for sid in np.unique(ids[ids >= 0]).tolist():
                try:
                    current = controller.store.current(self._names[sid])
                except KeyError:
                    continue
                slots, ks = np.nonzero(ids == sid)
                local = topo.local[self._entity[slots]]
                ok = local < current.size
                self._values[row, slots[ok], ks[ok]] = current[local[ok]]

    def _reset(self, topology: Topology) -> None:
        with self._lock:
            self._topology = topology
            self._slot.clear()
            self._entity[:] = -1
            self._signal_id[:] = -1
            self._scores[:] = np.nan
            self._values[:] = np.nan

    def _admit(self, gidx: int, now: float, controller: Controller) -> None:
        free = np.flatnonzero(self._entity < 0)
        if free.size:
            slot = int(free[0])
        else:  # give up the slot of the calmest, longest-held entity
            states = controller.classifier.state[self._entity]
            calm = np.isin(states, CALM)
            pool = np.flatnonzero(calm) if calm.any() else np.arange(self.capacity)
            slot = int(pool[np.argmin(self._admitted[pool])])
            del self._slot[int(self._entity[slot])]
        self._slot[gidx] = slot
        self._entity[slot] = gidx
        self._admitted[slot] = now
        self._scores[:, slot] = np.nan
        self._values[:, slot] = np.nan
        items = controller.view(controller.topology.ids[gidx]).evidence
        names = [i.signal for i in items if controller.catalog.get(i.signal) is not None]
        self._signals[slot] = tuple(dict.fromkeys(names))[:SIGNALS]
        self._signal_id[slot] = -1
        for k, name in enumerate(self._signals[slot]):
            self._signal_id[slot, k] = self._name_id.setdefault(name, len(self._name_id))
            if self._signal_id[slot, k] == len(self._names):
                self._names.append(name)

    def series(self, topology: Topology, gidx: int) -> dict[str, object] | None:
        """The entity's recorded ticks, oldest first (None: not recorded, or ``gidx`` indexes
        another world than the one recorded)."""
        with self._lock:
            slot = self._slot.get(gidx) if topology is self._topology else None
            if slot is None or self._row < 0:
                return None
            order = np.roll(np.arange(self.depth), -(self._row + 1))
            keep = order[np.isfinite(self._ts[order]) & np.isfinite(self._scores[order, slot, 0])]
            scores = self._scores[keep, slot]
            values = self._values[keep, slot]
            names = self._signals[slot]
            ts = self._ts[keep]
        return {
            "ts": _list(ts),
            "gfs": _list(scores[:, 0]), "prs": _list(scores[:, 1]), "fae": _list(scores[:, 2]),
            "signals": {name: _list(values[:, k]) for k, name in enumerate(names)},
        }  # fmt: skip


def _list(a: npt.NDArray[np.float64]) -> list[float | None]:
    return [None if not math.isfinite(x) else round(float(x), 4) for x in a.tolist()]
