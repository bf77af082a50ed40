"""What the safety layer hands an actuator and what comes back: one action, one result.

An action names what to do (``kind``) to which entity (``target``, an entity id such as
``node/n0123``), why, and under which leadership epoch. An actuator carries it out, or finds it
already done (``already``), or refuses it because the cluster's own state forbids it
(``refused``: a node something else drained, a reservation), or fails (``failed``: the command or
API call did not succeed and may be retried). Kept in ``model`` so the engine's safety layer, the
actuators and the twin share one vocabulary without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ActionStatus(StrEnum):
    DONE = "done"  # carried out now
    ALREADY = "already"  # the cluster was already in the asked state: nothing to do
    REFUSED = "refused"  # forbidden by the cluster's own state (drained by someone else, reserved)
    FAILED = "failed"  # did not succeed; retrying may help
    ADVISED = "advised"  # advise mode: journaled, not carried out
    SKIPPED = "skipped"  # not this actuator's target (a node HAProxy does not front): nothing to do
    # Outcomes the safety layer and the guard journal (an actuator never returns these):
    GIVEN_UP = "given_up"  # failed past its retry budget: an operator must look
    HELD = "held"  # an undo waiting out its recovery delay
    CANCELLED = "cancelled"  # a queued or held action dropped because its cause changed
    FENCED = "fenced"  # not carried out: this replica no longer leads the action's epoch (``ha.fence``)
    AWAITING = "awaiting_approval"  # an actuator in ``approve`` mode: waits for an operator (``ops``)
    REJECTED = "rejected"  # an operator rejected it, or nobody approved it in time


@dataclass(frozen=True)
class Action:
    kind: str  # drain_node, resume_node, set_features, cordon, taint, evict, set_weight, notify...
    target: str  # entity id: node/n0123, gpu/n0123/5, pool/decode-a...
    reason: str  # the sentence an operator reads (the state and its top evidence)
    state: str  # the state that caused it (healthy for an undo)
    decided_at: float  # unix seconds
    epoch: int = 0  # leadership fencing token
    params: tuple[tuple[str, str], ...] = ()  # kind-specific: (("weight", "10"),)

    @property
    def key(self) -> str:
        """Idempotency key: one decision (kind, target, epoch and the time it was taken) is one
        action, however often it is submitted."""
        return f"{self.kind}:{self.target}:{self.epoch}:{self.decided_at:.3f}"

    def param(self, name: str, default: str = "") -> str:
        return dict(self.params).get(name, default)


@dataclass(frozen=True)
class ActionResult:
    action: Action
    actuator: str
    status: ActionStatus
    detail: str  # what was done or found, or why it failed (the command's stderr, the API's message)
    finished_at: float
