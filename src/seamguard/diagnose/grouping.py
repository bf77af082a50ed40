"""Transitions and action results grouped by cause, for people: one CDU event is one line, not a
hundred per-GPU lines. A group is the same change (from, to) for the same reason: the detector and
signal of each entity's top evidence (a cooling loss heats every GPU it feeds past the same soft
limit). Entities are listed with the first few shown and the rest counted."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.journal.records import ActionResultRecord, TransitionRecord
from seamguard.model.entities import EntityKind
from seamguard.model.states import State
from seamguard.model.topology import Topology, node_of

SHOWN = 4  # entities named in a group's line


@dataclass(frozen=True)
class TransitionGroup:
    from_state: str
    to_state: str
    cause: str  # "level on gpu.temp_c", or the reason itself when there is no evidence
    example: TransitionRecord  # the first, whose reason the line quotes
    entities: tuple[str, ...]

    def line(self) -> str:
        """``3 × gpu degraded -> quarantine (level on gpu.temp_c): gpu/n1/0, gpu/n1/2, gpu/n2/0 — gpu/n1/0: <reason>``"""
        n = len(self.entities)
        if n == 1:
            under = f" ({self.cause})" if self.cause.startswith("under ") else ""
            return f"{self.entities[0]} {self.from_state} -> {self.to_state}{under}: {self.example.reason}"
        kinds = sorted({e.split("/")[0] for e in self.entities})
        names = ", ".join(self.entities[:SHOWN]) + (f" and {n - SHOWN} more" if n > SHOWN else "")
        return (f"{n} × {'/'.join(kinds)} {self.from_state} -> {self.to_state} ({self.cause}): {names}"
                f" — e.g. {self.example.entity}: {self.example.reason}")  # fmt: skip


def group_transitions(
    transitions: Sequence[TransitionRecord], cause_of: Callable[[str], str | None] | None = None
) -> list[TransitionGroup]:
    """``cause_of(entity)``: an unwell domain upstream of it (``upstream_cause``), which then
    makes the group: every GPU a failing CDU heats is one line, whatever detector fired first."""
    groups: dict[tuple[str, str, str], list[TransitionRecord]] = {}
    for t in transitions:
        top = t.evidence[0] if t.evidence else None
        upstream = cause_of(t.entity) if cause_of is not None else None
        if upstream is not None:
            cause = f"under {upstream}"
        else:
            cause = f"{top.detector} on {top.signal}" if top is not None else t.reason
        groups.setdefault((t.from_state, t.to_state, cause), []).append(t)
    return [
        TransitionGroup(f, to, cause, ts[0], tuple(t.entity for t in ts))
        for (f, to, cause), ts in groups.items()
    ]


@dataclass(frozen=True)
class ActionGroup:
    kind: str
    actuator: str
    status: str
    example: ActionResultRecord
    targets: tuple[str, ...]

    def line(self) -> str:
        n = len(self.targets)
        names = ", ".join(self.targets[:SHOWN]) + (f" and {n - SHOWN} more" if n > SHOWN else "")
        head = f"{self.kind} {names} via {self.actuator}: {self.status}"
        return head + (
            f" {self.example.detail}"
            if n == 1
            else f" (e.g. {self.example.detail})"
            if self.example.detail
            else ""
        )


def group_actions(results: Sequence[ActionResultRecord]) -> list[ActionGroup]:
    groups: dict[tuple[str, str, str], list[ActionResultRecord]] = {}
    for r in results:
        groups.setdefault((r.kind, r.actuator, r.status), []).append(r)
    return [ActionGroup(k, a, s, rs[0], tuple(r.target for r in rs)) for (k, a, s), rs in groups.items()]


def upstream_cause(topology: Topology, states: npt.NDArray[np.int64]) -> Callable[[str], str | None]:
    """For an entity on a node: its CDU, else its rack, when that domain is unwell now (the
    engine's ``states``, per global entity); None otherwise or for anything wider than a node."""
    rack_ids, cdu_ids = topology.members[EntityKind.RACK], topology.members[EntityKind.CDU]
    calm = (int(State.HEALTHY), int(State.UNKNOWN))

    def cause(entity: str) -> str | None:
        gidx = topology.lookup(entity)
        node = node_of(topology, gidx) if gidx is not None else None
        if node is None or entity.startswith(("rack/", "cdu/")):
            return None
        rack = int(topology.node_rack[node])
        cdu = int(topology.rack_cdu[rack])
        for g in (int(cdu_ids[cdu]), int(rack_ids[rack])):
            if int(states[g]) not in calm:
                return f"{topology.ids[g]} ({State(int(states[g])).label})"
        return None

    return cause
