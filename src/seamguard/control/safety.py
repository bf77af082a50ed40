"""The safety layer between the planner's decisions and the actuators.

Per tick it turns ``DecisionRecord``s into ``Action``s that may be carried out, and journals what
it holds back and why:

- quarantine actions (drain, cordon, island) must fit the budgets (``control.budgets``); one
  that does not is journaled ``refused`` naming the budget, waits in a queue, is re-examined every
  tick (oldest first) and taken when the budget frees; it is dropped (``cancelled``) only when its
  cause recovers;
- an undo of a quarantine (the cause back to healthy) is ``held`` until every cause of the node's
  quarantine has been healthy for the recovery delay, longer for repeat offenders; a relapse
  cancels the hold; the release is a ``resume_node`` action, journaled like any other;
- an island the containment stage valued again and released (``control.islands``) lets go at once
  of the nodes held for its cause alone, its cause still unwell (under the storm brake, on the
  first tick after it lifts);
- the storm brake (``control.storm``) turns everything into advice while it is on.

The ledger is the same in every mode, so advise mode shows exactly what enforce would do,
budget refusals included. Time is passed in; nothing here reads the clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from seamguard.control.budgets import Budgets
from seamguard.control.safety_config import SafetyConfig
from seamguard.control.storm import StormBrake
from seamguard.journal.records import ActionResultRecord, DecisionRecord, NoticeRecord, TransitionRecord
from seamguard.model.action_kinds import CONTAINMENT_KINDS, QUARANTINE_KINDS, RELEASE_KIND, UNDO_KINDS
from seamguard.model.actions import Action, ActionStatus
from seamguard.model.entities import EntityKind
from seamguard.model.states import CALM_STATES, State
from seamguard.model.topology import KIND_CODE, Topology, nodes_below
from seamguard.model.world import WorldChange, by_name, invert

IntArray = npt.NDArray[np.int64]
SAFETY = "safety"  # the actuator name on records the safety layer writes itself
_CALM = frozenset(s.label for s in CALM_STATES)
_FAILED = State.FAILED.label
# The answers that mean the cluster is in the asked state: all a restart may believe happened.
CARRIED_OUT = frozenset({ActionStatus.DONE.value, ActionStatus.ALREADY.value})


@dataclass
class _Queued:
    action: Action
    nodes: IntArray
    causes: set[str]
    refused_by: str


@dataclass
class _Quarantine:
    action: Action  # the quarantine action taken
    since: float
    causes: dict[str, float | None] = field(default_factory=dict)  # cause -> healthy since (None: not)
    undos: list[Action] = field(default_factory=list)  # held undo decisions, released with the node
    release_at: float | None = None
    repaired: bool = False  # vouched repaired since it was taken (``SafetyLayer.vouch``)


@dataclass(frozen=True)
class SafetyTick:
    actions: tuple[Action, ...]  # to dispatch (advise-only when ``braked``)
    records: tuple[ActionResultRecord, ...]  # what the safety layer itself decided
    notices: tuple[NoticeRecord, ...]
    braked: bool
    brake_reason: str = ""


def action_of(d: DecisionRecord) -> Action:
    return Action(d.action, d.entity, d.reason, d.state, d.ts, d.epoch, d.params)


def _record(a: Action, now: float, status: ActionStatus, detail: str) -> ActionResultRecord:
    return ActionResultRecord(now, a.kind, a.target, SAFETY, status.value, detail, a.epoch, a.decided_at, 0)


class SafetyLayer:
    def __init__(self, topology: Topology, config: SafetyConfig) -> None:
        self.topology = topology
        self.config = config
        self.budgets = Budgets(topology, config.budgets)
        self.brake = StormBrake(topology, config.storm)
        self.node_names = topology.names[EntityKind.NODE]
        self._node_index = {n: i for i, n in enumerate(self.node_names)}
        self._queue: list[_Queued] = []
        self._held: dict[int, _Quarantine] = {}  # node -> its quarantine
        self._history: dict[int, deque[float]] = {}  # node -> quarantine start times
        self._nodes_cache: dict[str, IntArray] = {}
        # Island releases decided under the storm brake, by domain: the containment stage decides
        # a release once, so they are carried out when the brake lifts (cause still held).
        self._braked_releases: dict[str, DecisionRecord] = {}
        # The leadership's epoch the layer's own actions (releases, queued and held ones) carry:
        # the newest of its decisions', or set by the daemon when a replica starts to lead (ha).
        self.epoch = 0
        # Nodes an operator holds (a pause, a pin, a maintenance window: ``ops.gate``): never
        # released and never drained from the queue while frozen. None: none.
        self.frozen: npt.NDArray[np.bool_] | None = None

    # -- public views -----------------------------------------------------------------------
    def quarantined(self) -> list[str]:
        return [f"node/{self.node_names[n]}" for n in self.held_nodes().tolist()]

    def held_nodes(self) -> IntArray:
        """Local indices of the nodes held in quarantine now (a scheduler admits nothing there)."""
        return np.fromiter(sorted(self._held), dtype=np.int64, count=len(self._held))

    def queued(self) -> list[Action]:
        return [q.action for q in self._queue]

    def release_at(self, node: str) -> float | None:
        q = self._held.get(self._node_index.get(node.removeprefix("node/"), -1))
        return None if q is None else q.release_at

    def recovery_delay(self, node: int, now: float) -> float:
        """The healthy time a node must show: doubled (``repeat_factor``) per earlier quarantine in the window."""
        rc, repeats = self.config.recovery, self._repeats(node, now)
        return min(rc.max_delay_s, rc.healthy_for_s * rc.repeat_factor ** max(0, repeats - 1))

    def _repeats(self, node: int, now: float) -> int:
        """Quarantines of ``node`` begun in the repeat window, the one in force included."""
        return sum(1 for t in self._history.get(node, ()) if t > now - self.config.recovery.repeat_window_s)

    def vouch(self, nodes: IntArray, now: float) -> None:
        """These nodes were repaired (an operator, the site's repair workflow). The recovery delay
        waits for evidence that a cause stays well; a repair is that evidence, so a held node on its
        first quarantine in the window leaves once its causes are well. A repeat offender still
        waits its delay (its last repair did not hold); a relapse withdraws the vouch."""
        for n in nodes.tolist():
            q = self._held.get(n)
            if q is None:
                continue
            q.repaired = True
            if q.release_at is not None and self._repeats(n, now) <= 1:  # already waiting out its delay
                q.release_at = min(q.release_at, now)

    def restore(self, results: Sequence[ActionResultRecord], now: float) -> list[str]:
        """Hold again the nodes a previous run left quarantined, from its journaled action results.
        Without this a restarted daemon would never resume them: its engine starts with no state
        to recover from.

        Only what an actuator carried out counts (``CARRIED_OUT``), for quarantines, releases and
        the repeat-offender history alike: an advised drain (advise mode, a storm brake) took no
        node out, so holding it would spend the budget on nodes in service and later resume nodes
        never drained; an advised release left a really drained node out, so it is still held.

        Each comes back with itself as its one cause, healthy from ``now``: it is released after
        the recovery delay unless the engine, seeing it again, wants it out (a relapse)."""
        quarantine_kinds = QUARANTINE_KINDS
        last: dict[int, ActionResultRecord] = {}
        starts: dict[int, set[float]] = {}  # one per decision, however many actuators answered it
        for r in sorted(results, key=lambda r: r.ts):
            if r.actuator == SAFETY or r.status not in CARRIED_OUT:
                continue
            if r.kind in quarantine_kinds or r.kind == RELEASE_KIND:
                for n in self.nodes_of(r.target).tolist():
                    last[n] = r
                    if r.kind in quarantine_kinds:
                        starts.setdefault(n, set()).add(r.decided_at if math.isfinite(r.decided_at) else r.ts)
        for n, times in starts.items():  # repeat offenders stay repeat offenders across a restart
            self._history[n] = deque(sorted(times))
        held: list[str] = []
        for n, r in sorted(last.items(), key=lambda kv: kv[1].ts):
            if r.kind == RELEASE_KIND or n in self._held:
                continue
            node = f"node/{self.node_names[n]}"
            why = f"quarantined by a previous run ({r.kind} at {r.ts:.0f})"
            action = Action(r.kind, r.target, why, "quarantine", r.decided_at, r.epoch)
            self.budgets.take(np.array([n], dtype=np.int64), r.ts)
            q = _Quarantine(action, r.ts, {node: now})
            q.release_at = now + self.recovery_delay(n, now)
            self._held[n] = q
            held.append(node)
        return held

    def nodes_of(self, target: str) -> IntArray:
        """Local node indices an action on ``target`` takes out of service (containment for racks,
        CDUs; a serving replica's, the nodes it runs on: an operator's control there holds it)."""
        hit = self._nodes_cache.get(target)
        if hit is not None:
            return hit
        topo = self.topology
        out = np.zeros(0, dtype=np.int64)
        gidx = topo.lookup(target)
        if gidx is not None and topo.kind_of(gidx) is EntityKind.JOB:
            names = topo.jobs[int(topo.local[gidx])].nodes
            out = np.array(
                sorted(self._node_index[n] for n in names if n in self._node_index), dtype=np.int64
            )
        elif gidx is not None and topo.kind_of(gidx) is EntityKind.REPLICA:  # a serving replica: its nodes
            out = np.array(sorted(topo.serving.replica_nodes[int(topo.local[gidx])]), dtype=np.int64)
        elif gidx is not None:
            out = nodes_below(topo, gidx)
        self._nodes_cache[target] = out
        return out

    def carry_over(self, change: WorldChange, now: float) -> list[NoticeRecord]:
        """Onto ``change.new``: holds, queue, repeat history and budgets kept for nodes that stay.
        A held node that left the inventory is dropped from the ledger with a notice, and no
        resume is ever sent for it (there is nothing left to resume). A held node whose hardware
        changed under its name is held as on a restart: released after the recovery delay
        unless the engine, judging the new hardware, wants it out."""
        self.topology = change.new
        self._nodes_cache = {}
        self.frozen = None  # indexed by the old nodes: set again before the next tick
        self.brake.carry_over(change)
        if change.same(EntityKind.NODE):
            if "job" in self.config.budgets.domain_kinds:  # the job domains are the jobs running now
                self.budgets = self.budgets.carried_over(change.new, change.kind(EntityKind.NODE))
            return []
        # By name: the ledger is about the scheduler's nodes, and a node whose hardware changed
        # under its name (``world_change``) is still drained there.
        fwd = by_name(change.old, change.new, EntityKind.NODE)
        back = invert(fwd, change.old.count(EntityKind.NODE))
        gone = sorted(f"node/{self.node_names[n]}" for n in self._held if back[n] < 0)
        self._held = {int(back[n]): q for n, q in self._held.items() if back[n] >= 0}
        self._history = {int(back[n]): h for n, h in self._history.items() if back[n] >= 0}
        for n in np.flatnonzero((fwd >= 0) & (change.kind(EntityKind.NODE) < 0)).tolist():
            held = self._held.get(n)
            if held is not None:  # new hardware: no cause of the old is left to recover; it is healthy
                held.causes = {
                    f"node/{change.new.names[EntityKind.NODE][n]}": now
                }  # from now, as on a restart
                held.release_at = now + self.recovery_delay(n, now)
        queue: list[_Queued] = []
        for q in self._queue:
            nodes = back[q.nodes]
            if (nodes >= 0).any():
                queue.append(replace(q, nodes=nodes[nodes >= 0]))
        self._queue = queue
        self.budgets = self.budgets.carried_over(change.new, fwd)
        self.node_names = change.new.names[EntityKind.NODE]
        self._node_index = {n: i for i, n in enumerate(self.node_names)}
        if not gone:
            return []
        shown = ", ".join(gone[:10]) + (f" and {len(gone) - 10} more" if len(gone) > 10 else "")
        return [
            NoticeRecord(now, SAFETY, "warning",
                         f"{len(gone)} quarantined node(s) left the inventory, hold dropped (no resume sent): {shown}")
        ]  # fmt: skip

    # -- the tick ---------------------------------------------------------------------------
    def tick(
        self, now: float, decisions: Sequence[DecisionRecord], transitions: Sequence[TransitionRecord] = ()
    ) -> SafetyTick:
        for d in decisions:
            self.epoch = max(self.epoch, d.epoch)
        notices = self.brake.observe(now, self._entered(transitions))
        self._note_failures(transitions)
        braked = self.brake.engaged
        records: list[ActionResultRecord] = []
        actions: list[Action] = []
        quarantine_kinds = QUARANTINE_KINDS
        undo_kinds = UNDO_KINDS

        # Relapses first: a cause that is unwell again cancels its node's pending release.
        for d in decisions:
            if d.action not in undo_kinds:
                records.extend(self._relapse(d, now, d.action in quarantine_kinds))
        # Undos: cancel queued quarantines of the same cause, hold the rest until recovered.
        for d in decisions:
            if d.action in undo_kinds:
                records.extend(self._undo(d, now, actions))
        valued_releases = [d for d in decisions if d.action == RELEASE_KIND.value]
        if not braked:
            actions.extend(self._releases(now, records))
            deferred, self._braked_releases = list(self._braked_releases.values()), {}
            for d in deferred + valued_releases:
                actions.extend(self._valued_release(d, now, records))
            actions.extend(self._drain_queue(now))
        else:
            for d in valued_releases:
                self._braked_releases[d.entity] = d
                records.append(_record(action_of(d), now, ActionStatus.HELD,
                                       "storm brake on: the island stays until the brake lifts"))  # fmt: skip
        for d in decisions:
            if d.action in undo_kinds or d.action == RELEASE_KIND.value:
                continue
            a = action_of(d)
            if d.action not in quarantine_kinds:
                actions.append(a)
                continue
            nodes = self.nodes_of(d.entity)
            cause = d.cause or d.entity
            if braked:
                actions.append(a)  # advised only; the ledger does not move under a brake
                continue
            if nodes.size and all(int(n) in self._held for n in nodes.tolist()):
                records.extend(self._relapse(d, now, True))  # a second cause (taken this tick) joins
                records.append(_record(a, now, ActionStatus.ALREADY, f"{d.entity} already quarantined"))
                continue
            if self._merge_queued(a, nodes, cause):
                continue
            refusal = self._refusal(a, nodes, now)
            if refusal is None:
                self._take(a, nodes, cause, now)
                actions.append(a)
            else:
                self._queue.append(_Queued(a, nodes, {cause}, refusal))
                records.append(_record(a, now, ActionStatus.REFUSED, f"{refusal}; queued"))
        return SafetyTick(tuple(actions), tuple(records), tuple(notices), braked, self.brake.reason)

    def settle(self, results: Iterable[ActionResultRecord]) -> None:
        """Feed back final actuator outcomes: a quarantine given up on, refused by the cluster or
        fenced (a deposed leader's) did not happen, so its nodes leave the ledger (the result is already journaled)."""
        quarantine_kinds = QUARANTINE_KINDS
        final = {ActionStatus.GIVEN_UP.value, ActionStatus.REFUSED.value, ActionStatus.FENCED.value,
                 ActionStatus.REJECTED.value}  # fmt: skip
        for r in results:
            if r.actuator == SAFETY or r.kind not in quarantine_kinds or r.status not in final:
                continue
            for n in self.nodes_of(r.target).tolist():
                q = self._held.get(n)
                if q is not None and q.action.kind == r.kind and q.action.decided_at == r.decided_at:
                    del self._held[n]
                    self.budgets.release(np.array([n], dtype=np.int64))

    # -- pieces -----------------------------------------------------------------------------
    def _entered(self, transitions: Sequence[TransitionRecord]) -> IntArray:
        """Entities that turned non-healthy; a MIG instance counts as its GPU, which it follows
        (a failing GPU of seven instances is one entity for the storm brake, not eight)."""
        topo = self.topology
        out = [
            g
            for t in transitions
            if t.to_state not in _CALM and t.from_state in _CALM
            for g in [topo.lookup(t.entity)]
            if g is not None
        ]
        gidx = np.array(out, dtype=np.int64)
        mig = topo.kind_code[gidx] == KIND_CODE[EntityKind.MIG] if gidx.size else np.zeros(0, dtype=bool)
        if mig.any():
            gidx[mig] = topo.mig_gpus()[topo.local[gidx[mig]]]
        return gidx

    def _note_failures(self, transitions: Sequence[TransitionRecord]) -> None:
        for t in transitions:
            if t.entity.startswith("node/") and (t.to_state == "failed" or t.from_state == "failed"):
                n = self._node_index.get(t.entity.removeprefix("node/"))
                if n is not None:
                    self.budgets.failed[n] = t.to_state == "failed"

    def _refusal(self, a: Action, nodes: IntArray, now: float) -> str | None:
        """The budget that refuses quarantining ``nodes`` for ``a`` now, if any (``Budgets.check``)."""
        return self.budgets.check(
            nodes, now, containment=a.kind in CONTAINMENT_KINDS, hard=a.state == _FAILED
        )

    def _take(self, a: Action, nodes: IntArray, cause: str, now: float) -> None:
        self.budgets.take(nodes, now, containment=a.kind in CONTAINMENT_KINDS)
        for n in nodes.tolist():
            q = self._held.get(n)
            if q is None:
                self._held[n] = _Quarantine(a, now, {cause: None})
                self._history.setdefault(n, deque()).append(now)
            else:
                q.causes.setdefault(cause, None)

    def _merge_queued(self, a: Action, nodes: IntArray, cause: str) -> bool:
        for q in self._queue:
            if q.action.kind == a.kind and q.action.target == a.target:
                q.causes.add(cause)
                return True
        return False

    def _relapse(self, d: DecisionRecord, now: float, quarantines: bool) -> list[ActionResultRecord]:
        """A known cause unwell again, or a new cause wanting the node out, keeps it quarantined."""
        out: list[ActionResultRecord] = []
        cause = d.cause or d.entity
        for n in self.nodes_of(d.entity).tolist():
            q = self._held.get(n)
            if q is None or (cause not in q.causes and not quarantines):
                continue
            q.causes[cause] = None
            q.repaired = False
            if q.release_at is not None:
                q.release_at = None
                for u in q.undos:
                    out.append(
                        _record(u, now, ActionStatus.CANCELLED, f"{cause} {d.state} again: stays quarantined")
                    )
                q.undos.clear()
        return out

    def _undo(self, d: DecisionRecord, now: float, actions: list[Action]) -> list[ActionResultRecord]:
        a = action_of(d)
        cause = d.cause or d.entity
        out: list[ActionResultRecord] = []
        for waiting in list(self._queue):
            if cause in waiting.causes or waiting.action.target == d.entity:
                waiting.causes.discard(cause)
                if not waiting.causes or waiting.action.target == d.entity:
                    self._queue.remove(waiting)
                    why = f"{cause} recovered before the budget freed"
                    out.append(_record(waiting.action, now, ActionStatus.CANCELLED, why))
        held = [
            n for n in self.nodes_of(d.entity).tolist() if n in self._held and cause in self._held[n].causes
        ]
        if not held:
            actions.append(a)  # nothing of ours is quarantined for this cause: the undo passes
            return out
        for n in held:
            q = self._held[n]
            q.causes[cause] = now
            if a not in q.undos:
                q.undos.append(a)
            times = list(q.causes.values())
            if any(t is None for t in times):
                out.append(
                    _record(a, now, ActionStatus.HELD, f"node/{self.node_names[n]} has other unwell causes")
                )
                continue
            repeats = self._repeats(n, now)
            trusted = q.repaired and repeats <= 1
            delay = 0.0 if trusted else self.recovery_delay(n, now)
            q.release_at = max(t for t in times if t is not None) + delay
            why = f"quarantine {repeats} in the window: delay {delay:g} s"
            if q.repaired:
                why = "repaired, " + ("first quarantine in the window: no delay" if trusted else why)
            out.append(
                _record(
                    a, now, ActionStatus.HELD,
                    f"node/{self.node_names[n]} healthy since {now:.0f}; leaves quarantine at {q.release_at:.0f}"
                    f" ({why})",
                )
            )  # fmt: skip
        return out

    def _releases(self, now: float, records: list[ActionResultRecord]) -> list[Action]:
        out: list[Action] = []
        frozen = self.frozen
        due = sorted(n for n, q in self._held.items() if q.release_at is not None and q.release_at <= now
                     and (frozen is None or not frozen[n]))  # fmt: skip
        for n in due:
            q = self._held[n]
            healthy_since = max(t for t in q.causes.values() if t is not None)
            why = f"healthy since {healthy_since:.0f}; leaves quarantine ({q.action.kind} at {q.since:.0f})"
            out.extend(self._release(n, now, why))
        return out

    def _valued_release(
        self, d: DecisionRecord, now: float, records: list[ActionResultRecord]
    ) -> list[Action]:
        """An island the containment stage valued again and released (``control.islands``): the
        nodes held for its cause alone leave quarantine now, its cause still unwell; a node also
        held for a cause of its own stays, and a release queued for recovery is cancelled."""
        cause = d.cause or d.entity
        out: list[Action] = []
        for n in self.nodes_of(d.entity).tolist():
            q = self._held.get(n)
            if q is None or cause not in q.causes:
                continue
            if set(q.causes) != {cause}:
                others = ", ".join(sorted(c for c in q.causes if c != cause))
                records.append(_record(action_of(d), now, ActionStatus.HELD,
                                       f"node/{self.node_names[n]} also held for {others}"))  # fmt: skip
                continue
            out.extend(self._release(n, now, d.reason))
        return out

    def let_go(self, nodes: IntArray, now: float, why: str) -> list[Action]:
        """Release the held ones of ``nodes`` now, whatever their causes (an operator's pin to
        healthy): the release and the undos held for them."""
        out: list[Action] = []
        for n in nodes.tolist():
            if n in self._held:
                out.extend(self._release(n, now, why))
        return out

    def _release(self, n: int, now: float, why: str) -> list[Action]:
        q = self._held.pop(n)
        self.budgets.release(np.array([n], dtype=np.int64))
        out = [Action(kind=RELEASE_KIND.value, target=f"node/{self.node_names[n]}", reason=why, state="healthy",
                      decided_at=now, epoch=self.epoch)]  # fmt: skip
        # The undos go out now, under the epoch that carries them out (a fenced replica's
        # leadership may have changed since they were decided: ``ha.fence``).
        out.extend(replace(u, epoch=self.epoch) for u in q.undos if replace(u, epoch=self.epoch) not in out)
        return out

    def _drain_queue(self, now: float) -> list[Action]:
        out: list[Action] = []
        frozen = self.frozen
        for q in list(self._queue):
            if frozen is not None and frozen[q.nodes].any():
                continue  # an operator holds one of its nodes: it waits in the queue
            if self._refusal(q.action, q.nodes, now) is None:
                self._queue.remove(q)
                action = replace(q.action, epoch=self.epoch)  # carried out now, under today's epoch
                for cause in sorted(q.causes):
                    self._take(action, q.nodes, cause, now)
                out.append(action)
        return out
