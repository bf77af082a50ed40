"""The operator's controls applied to the post-engine stage: what a pause, a pin or a maintenance
window lets through, between the engine's decisions and the actuators.

Before the safety layer, a decision that would touch a node an operator holds is not carried out:
under a pause it is journaled ``advised`` (decided, would have been done), in a maintenance window
or on a node pinned healthy ``skipped``; either way it takes no budget. The safety layer is told
which nodes are frozen, so it neither releases them nor drains its queue onto them; undos it
lets through onto a held node wait here until the hold ends. A pin to ``quarantined`` is a
decision of the operator's (cause ``pin:<entity>``) through the same safety layer and budgets; a
pin to ``healthy`` lets a held node go at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from seamguard.control.safety import SafetyLayer
from seamguard.journal.records import ActionResultRecord, DecisionRecord
from seamguard.model.action_kinds import QUARANTINE_KINDS, UNDO_KINDS, ActionKind
from seamguard.model.actions import Action, ActionStatus
from seamguard.ops.controls import FLEET, Control, Controls, PinnedState, Verb

OPERATOR = "operator"  # the actuator column of what an operator's control decided
PIN_CAUSE = "pin:"


# What goes on to the safety layer; what the controls kept back (journaled); what to dispatch
# now (releases a healthy pin forced).
Admitted = tuple[tuple[DecisionRecord, ...], tuple[ActionResultRecord, ...], tuple[Action, ...]]


@dataclass
class OperatorGate:
    controls: Controls
    safety: SafetyLayer
    mode: str = "act"  # the engine's: the mode of the operator's own decisions
    _pinned_out: set[tuple[str, float]] = field(default_factory=set)  # quarantine pins already decided
    _deferred: list[Action] = field(default_factory=list)  # undos waiting for a hold to end

    # ---- which nodes each control covers -------------------------------------------------
    def nodes(self, c: Control) -> npt.NDArray[np.int64]:
        if c.target == FLEET:
            return np.arange(len(self.safety.node_names), dtype=np.int64)
        return self.safety.nodes_of(c.target)

    def frozen(self) -> npt.NDArray[np.bool_]:
        """Nodes the safety layer may neither release nor drain its queue onto: paused, in
        maintenance, pinned healthy. (A node pinned quarantined is never released while its pin
        stands, since the pin is one of its unwell causes, and its own drain may wait in the queue.)"""
        mask = np.zeros(len(self.safety.node_names), dtype=bool)
        for c in self.controls.active():
            if c.verb is not Verb.PIN or c.state == PinnedState.HEALTHY:
                mask[self.nodes(c)] = True
        return mask

    def blocking(self, nodes: npt.NDArray[np.int64], cause: str = "") -> Control | None:
        """The control that keeps an action on ``nodes`` (or caused by ``cause``) from running:
        a maintenance window first, then a healthy pin, then a pause."""
        order = (Verb.MAINTENANCE, Verb.PIN, Verb.PAUSE)
        for verb in order:
            for c in self.controls.active(verb):
                if verb is Verb.PIN and c.state != PinnedState.HEALTHY:
                    continue
                if c.target == FLEET or c.target == cause or np.isin(nodes, self.nodes(c)).any():
                    return c
        return None

    def holds(self, entity: str) -> bool:
        """A control keeps actions on ``entity``'s nodes back now (a serving replica: its nodes)."""
        return self.blocking(self.safety.nodes_of(entity)) is not None

    # ---- before the safety layer ---------------------------------------------------------
    def admit(self, decisions: Sequence[DecisionRecord], now: float, epoch: int) -> Admitted:
        kept: list[DecisionRecord] = []
        records: list[ActionResultRecord] = []
        for d in decisions:
            if d.action in UNDO_KINDS:
                kept.append(d)  # it only tells the safety layer a cause is well; releases wait below
                continue
            c = self.blocking(self.safety.nodes_of(d.entity), d.cause)
            if c is None:
                kept.append(d)
                continue
            status = ActionStatus.ADVISED if c.verb is Verb.PAUSE else ActionStatus.SKIPPED
            records.append(ActionResultRecord(now, d.action, d.entity, OPERATOR, status.value,
                                              f"not carried out: {c.describe()}", d.epoch, d.ts, 0))  # fmt: skip
        kept.extend(self._quarantine_pins(now, epoch))
        return tuple(kept), tuple(records), tuple(self._healthy_pins(now))

    def _quarantine_pins(self, now: float, epoch: int) -> list[DecisionRecord]:
        out: list[DecisionRecord] = []
        held = set(self.safety.held_nodes().tolist())
        queued = {a.target for a in self.safety.queued()}
        for c in self.controls.active(Verb.PIN):
            if c.state != PinnedState.QUARANTINED or (c.target, c.since) in self._pinned_out:
                continue
            self._pinned_out.add((c.target, c.since))
            for n in self.nodes(c).tolist():
                node = f"node/{self.safety.node_names[n]}"
                if n in held or node in queued:
                    continue
                out.append(DecisionRecord(now, node, ActionKind.DRAIN_NODE.value, self.mode,
                                          f"{c.describe()}", "quarantined", (), epoch, PIN_CAUSE + c.target))  # fmt: skip
        return out

    def _healthy_pins(self, now: float) -> list[Action]:
        out: list[Action] = []
        for c in self.controls.active(Verb.PIN):
            if c.state == PinnedState.HEALTHY:
                out.extend(self.safety.let_go(self.nodes(c), now, c.describe()))
        return out

    def unpinned(self, c: Control, now: float, epoch: int) -> list[DecisionRecord]:
        """A quarantine pin ended: its cause is well, so the node leaves quarantine as any other
        (once every cause is well and its recovery delay has passed)."""
        if c.state != PinnedState.QUARANTINED:
            return []
        self._pinned_out.discard((c.target, c.since))
        return [
            DecisionRecord(now, f"node/{self.safety.node_names[n]}", ActionKind.RESTORE_ADMISSION.value, self.mode,
                           f"pin ended: {c.describe()}", "healthy", (), epoch, PIN_CAUSE + c.target)
            for n in self.nodes(c).tolist()
        ]  # fmt: skip

    # ---- after the safety layer ----------------------------------------------------------
    def hold_back(
        self, actions: Sequence[Action], now: float
    ) -> tuple[list[Action], list[ActionResultRecord]]:
        """Actions the safety layer let through onto frozen nodes: undos wait (sent once the hold
        ends), anything else is journaled as kept back; waiting undos whose hold ended go out."""
        out: list[Action] = []
        records: list[ActionResultRecord] = []
        waiting, self._deferred = self._deferred, []
        for a in [*waiting, *actions]:
            c = None if a.kind in QUARANTINE_KINDS else self.blocking(self.safety.nodes_of(a.target))
            if c is None:
                out.append(a)
            elif a.kind in UNDO_KINDS or a.kind == ActionKind.RESUME_NODE:
                if a not in waiting:
                    records.append(ActionResultRecord(now, a.kind, a.target, OPERATOR, ActionStatus.HELD.value,
                                                      f"waits: {c.describe()}", a.epoch, a.decided_at, 0))  # fmt: skip
                self._deferred.append(a)
            else:
                status = ActionStatus.ADVISED if c.verb is Verb.PAUSE else ActionStatus.SKIPPED
                records.append(ActionResultRecord(now, a.kind, a.target, OPERATOR, status.value,
                                                  f"not carried out: {c.describe()}", a.epoch, a.decided_at, 0))  # fmt: skip
        return out, records
