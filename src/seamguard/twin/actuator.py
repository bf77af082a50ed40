"""The twin as an actuator: the daemon's actions carried out on the simulated cluster.

The seamguard policy's decisions pass the daemon's own safety layer and dispatcher
(``actuators.dispatch.actuate``); the one enforcing route ends here. Each action answers as a real
backend would — ``done``, ``already``, ``refused`` (the cluster's state forbids it), ``skipped``
(nothing the twin models) — and what is done becomes one of the twin's verbs, which the twin
applies to its fleet, jobs and plant at the end of the tick (``take``).

A drain of a node whose running job has no admissible spare is refused: the job keeps the node at
its degraded pace, since a drain would only stop it from fitting again at its next restart. The
safety layer then drops the quarantine from its ledger, as it does for any refused quarantine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from seamguard.model.action_kinds import ActionKind
from seamguard.model.actions import Action as KindAction
from seamguard.model.actions import ActionResult, ActionStatus
from seamguard.model.entities import EntityKind
from seamguard.model.states import JobClass
from seamguard.model.topology import Topology, node_of, nodes_below
from seamguard.twin.actions import Action, Verb
from seamguard.twin.policies.base import FleetView, IntArray

NAME = "twin"
K = ActionKind
# Kinds the twin carries out on the entity itself, and the verb each becomes.
_DIRECT = {
    K.CHECKPOINT_NOW: Verb.CHECKPOINT,
    K.SWITCH_CHECKPOINT_TARGET: Verb.SWITCH_STORAGE,
    K.PREFER_OTHER_CHECKPOINT_TARGET: Verb.SWITCH_STORAGE,
    K.RESTORE_CHECKPOINT_TARGET: Verb.RESTORE_STORAGE,
}
# Kinds whose effect the twin reads from the engine itself (admission from its states, a
# checkpoint planner's avoidance): answered done, no verb.
_READ_FROM_ENGINE = frozenset(
    {K.RESTRICT_ADMISSION, K.RESTORE_ADMISSION, K.AVOID_FOR_CHECKPOINT, K.CHECKPOINT_PLAN}
)
_REMOVES = frozenset({K.DRAIN_NODE, K.DISABLE_LINK})
_DOMAINS = frozenset({EntityKind.RACK, EntityKind.CDU, EntityKind.SWITCH})  # what the twin islands


@dataclass
class TwinActuator:
    """``view`` is the twin's scheduler; ``admission`` asks the policy which nodes a job class may use."""

    topology: Topology
    view: FleetView | None  # the twin, set before each dispatch
    jobs: list[tuple[str, JobClass]]  # per job index: its name and class
    admission: Callable[[JobClass], IntArray]
    name: str = NAME
    kinds: frozenset[str] = frozenset(k.value for k in ActionKind)
    _outbox: list[Action] = field(default_factory=list)
    _taken: dict[int, int] = field(default_factory=dict)  # job -> nodes pulled out this tick

    def take(self) -> list[Action]:
        """The verbs done since the last call, in the order they were done."""
        out, self._outbox, self._taken = self._outbox, [], {}
        return out

    def apply(self, action: KindAction, now: float) -> ActionResult:
        kind = ActionKind(action.kind)
        status, detail = self._carry_out(kind, action)
        return ActionResult(action, self.name, status, detail, now)

    # -- inside ----------------------------------------------------------------------------
    def _carry_out(self, kind: ActionKind, a: KindAction) -> tuple[ActionStatus, str]:
        why = f"{a.state}: {a.reason}"
        if kind in _READ_FROM_ENGINE:
            return ActionStatus.DONE, "the twin's scheduler reads it from the engine's states"
        if kind in (K.ISLAND_DOMAIN, K.ISOLATE_SWITCH):
            return self._island(a, why)
        verb = _DIRECT.get(kind)
        if verb is not None:
            self._outbox.append(Action(verb, a.target, why))
            return ActionStatus.DONE, verb.value
        node = self._node(a.target)
        if kind in (K.REROUTE, K.RESTORE_ROUTE):
            if node is None:
                return ActionStatus.SKIPPED, "the twin reroutes node uplinks only"
            self._outbox.append(
                Action(Verb.REROUTE if kind is K.REROUTE else Verb.RESTORE_ROUTE, a.target, why)
            )
            return ActionStatus.DONE, kind.value
        if node is None:
            return ActionStatus.SKIPPED, f"{a.target} is not a node, GPU or link of the twin"
        target = f"node/{self.topology.names[EntityKind.NODE][node]}"
        if kind in _REMOVES or kind is K.REPLACE_RANK:
            return self._pull_out(kind, node, target, why)
        if kind is K.CORDON_NODE:
            self._outbox.append(Action(Verb.DRAIN, target, why))
            return ActionStatus.DONE, "cordoned: no new work"
        if kind is K.RESUME_NODE:
            return ActionStatus.DONE, "released: admitted again once the site has it back in service"
        return ActionStatus.SKIPPED, f"{kind.value} is not modelled in the twin"

    def _pull_out(self, kind: ActionKind, node: int, target: str, why: str) -> tuple[ActionStatus, str]:
        view = self.view
        assert view is not None, "the policy sets the view before it dispatches"
        job = view.job_of(node)
        running = job >= 0 and view.is_running(job)
        if not running:
            if kind is K.REPLACE_RANK:
                return ActionStatus.SKIPPED, "no running job on the node"
            self._outbox.append(Action(Verb.DRAIN, target, why))
            return ActionStatus.DONE, "drained (no running job)"
        need = self._taken.get(job, 0) + 1
        name, job_class = self.jobs[job]
        if not view.can_replace(job, need, self.admission(job_class)):
            return ActionStatus.REFUSED, f"job {name} has no admissible spare: it keeps the node"
        self._taken[job] = need
        verb = Verb.SWAP if kind is K.REPLACE_RANK else Verb.EVICT
        self._outbox.append(Action(verb, target, why))
        return ActionStatus.DONE, f"{verb.value}: job {name} restarts with a spare"

    def _island(self, a: KindAction, why: str) -> tuple[ActionStatus, str]:
        """Every training job with nodes in the domain (a rack, CDU or leaf) leaves it, onto spares
        where they fit; one with nowhere to go saves and waits for room (an island, or a leaf's
        isolation, the containment stage valued that stop for). Serving replicas move as far as
        room allows."""
        view = self.view
        assert view is not None, "the policy sets the view before it dispatches"
        dom = self._domain_nodes(a.target)
        if dom is None:
            return ActionStatus.SKIPPED, f"{a.target} is not a rack, CDU or leaf of the twin"
        names = self.topology.names[EntityKind.NODE]
        inside = {names[n] for n in dom.tolist()}
        index = {name: i for i, (name, _) in enumerate(self.jobs)}
        waiting: list[str] = []
        for job_name, nodes in view.placement().items():
            j = index[job_name]
            count = sum(n in inside for n in nodes)
            if count == 0 or not view.is_training(j) or not view.is_running(j):
                continue
            adm = self.admission(self.jobs[j][1]).copy()
            adm[dom] = 2
            if view.can_replace(j, count, adm):
                continue
            waiting.append(job_name)
        self._outbox.append(Action(Verb.ISLAND_STOP, a.target, why))
        if waiting:
            return (
                ActionStatus.DONE,
                f"island: its jobs move out; {', '.join(waiting)} save and wait for room",
            )
        return ActionStatus.DONE, "island: its jobs move out"

    def _domain_nodes(self, eid: str) -> IntArray | None:
        gidx = self.topology.lookup(eid)
        if gidx is None or self.topology.kind_of(gidx) not in _DOMAINS:
            return None
        return nodes_below(self.topology, gidx)

    def _node(self, eid: str) -> int | None:
        gidx = self.topology.lookup(eid)
        return None if gidx is None else node_of(self.topology, gidx)
