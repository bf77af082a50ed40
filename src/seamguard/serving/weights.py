"""The routing plan's HAProxy weights as decisions (``serving.weights`` in the config).

Each tick the daemon makes the routing controller's plan (``serving.routing``) from the engine's
states and signals and turns each replica's HAProxy weight into a ``set_weight`` decision, which
then goes the way of every decision: the operator's controls (``ops.gate``), the safety layer, the
dispatcher and its guards, the HA fence, the journal. Not every wiggle of the plan is a decision
(``WeightKeeper``):

- a replica's weight moves only by ``min_change`` or more, or to or from 0 (a path going bad or
  coming back is always a move, noise on a load is not);
- at most one decision per replica every ``min_interval_s``, so a flapping path does not flap the
  load balancer;
- seamguard never takes the last server of a backend (the HAProxy ``servers:`` map's backend, else
  the replica's pool) to 0: when the plan sheds everything, the server weighted most keeps its
  weight, and shedding is left to the admission gateway (``seamguard gateway``);
- a weight an operator's control kept back is decided again once the control no longer holds its
  node; one that did not take (given up, refused, fenced, rejected, cancelled; or advised while an
  actuator enforces: a storm brake) is decided again after ``min_interval_s``.

With an HAProxy actuator configured only the replicas its ``servers:`` map names are weighed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from seamguard.journal.records import ActionResultRecord, DecisionRecord
from seamguard.model.action_kinds import ActionKind
from seamguard.model.actions import ActionStatus
from seamguard.model.topology import Topology
from seamguard.serving.routing import RoutingObjective, haproxy_weights, plan_routing
from seamguard.serving.settings import WeightsConfig
from seamguard.serving.view import LABELS, IntArray, pool_views
from seamguard.telemetry.store import TelemetryStore

if TYPE_CHECKING:
    from seamguard.actuators.dispatch import Dispatcher
    from seamguard.control.controller import Controller
    from seamguard.journal.base import Journal
    from seamguard.site_config import SiteConfig

log = logging.getLogger(__name__)
SET_WEIGHT = ActionKind.SET_WEIGHT.value
OPERATOR = "operator"  # the actuator column of what an operator's control kept back (``ops.gate``)
NOT_TAKEN = frozenset(
    s.value
    for s in (ActionStatus.GIVEN_UP, ActionStatus.REFUSED, ActionStatus.FENCED, ActionStatus.REJECTED,
              ActionStatus.CANCELLED)
)  # fmt: skip
MAX_WHY = 4


# ---- the rule -----------------------------------------------------------------------------------
@dataclass
class _Last:
    weight: int | None  # the weight last decided; None: not known (never set, or it did not take)
    at: float  # when it was decided
    held: bool = False  # an operator's control kept it back: decided again once the control lets go


@dataclass(frozen=True)
class Move:
    replica: str
    weight: int
    was: int | None  # the weight it had as far as seamguard knows (None: not known)


@dataclass(frozen=True)
class Kept:
    """A server left at its weight: the plan would take every server of its backend to 0."""

    replica: str
    group: str
    weight: int | None


class WeightKeeper:
    """Per replica the last weight decided and when; ``due`` says which moves are decisions now."""

    def __init__(self, min_change: int, min_interval_s: float) -> None:
        self.min_change = min_change
        self.min_interval_s = min_interval_s
        self.last: dict[str, _Last] = {}

    def due(
        self,
        now: float,
        targets: Mapping[str, int],
        groups: Mapping[str, str],
        holds: Callable[[str], bool] = lambda _: False,
    ) -> tuple[list[Move], list[Kept]]:
        """The moves due at ``now`` towards ``targets`` (replica -> weight), grouped into backends by
        ``groups`` (replica -> backend; a replica not in it is a backend of its own); ``holds``: an
        operator's control still keeps a replica's actions back."""
        for gone in [r for r in self.last if r not in targets]:
            del self.last[gone]
        wanted: dict[str, int] = {}
        for r, target in targets.items():
            last = self.last.get(r)
            if last is not None and last.held:
                if holds(r):
                    continue
                last.held = False
            if last is not None and now - last.at < self.min_interval_s:
                continue
            was = None if last is None else last.weight
            if was is not None and (
                target == was or (abs(target - was) < self.min_change and target != 0 and was != 0)
            ):
                continue
            wanted[r] = target
        kept: list[Kept] = []
        members: dict[str, list[str]] = {}
        for r in sorted(targets):
            members.setdefault(groups.get(r, r), []).append(r)
        for group, reps in members.items():
            after = [wanted[r] if r in wanted else self._known(r) for r in reps]
            zeroing = [r for r in reps if wanted.get(r) == 0]
            if any(w > 0 for w in after) or not zeroing:
                continue  # a server keeps weight (an unknown one counts as none), or none of ours goes
            keep = max(zeroing, key=self._known)  # the one weighted most now; ties: the first by id
            del wanted[keep]
            kept.append(Kept(keep, group, self.last[keep].weight if keep in self.last else None))
        out: list[Move] = []
        for r, target in wanted.items():
            out.append(Move(r, target, None if r not in self.last else self.last[r].weight))
            self.last[r] = _Last(target, now)
        return out, kept

    def _known(self, replica: str) -> int:
        last = self.last.get(replica)
        return -1 if last is None or last.weight is None else last.weight

    def settle(self, results: Iterable[ActionResultRecord], enforcing: bool) -> None:
        """What became of the weight decisions: one an operator's control kept back waits for the
        control to let go; one that did not take is decided again after the interval."""
        for res in results:
            last = self.last.get(res.target)
            if res.kind != SET_WEIGHT or last is None:
                continue
            if res.actuator == OPERATOR:
                last.weight, last.held = None, True
            elif res.status in NOT_TAKEN or (enforcing and res.status == ActionStatus.ADVISED.value):
                last.weight = None


# ---- from the plan ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    weight: int  # 0..scale
    pool: str  # the replica's own pool
    share: float  # of its pool's requests, in the plan that gave the weight
    why: tuple[str, ...]  # the paths that lost it weight, the plan's reasons naming it
    cause: str  # the first path that lost it weight, else the replica
    state: str


def _mentions(text: str, rid: str) -> bool:
    return re.search(re.escape(rid) + r"(?![\w.-])", text) is not None


def weigh(
    topology: Topology, states: IntArray, store: TelemetryStore, objective: RoutingObjective, scale: int
) -> dict[str, Target]:
    """Per replica its HAProxy weight in its decode pool's plan and why (a prefill replica that
    feeds several decode pools: the most any of them gives it)."""
    sv = topology.serving
    out: dict[str, Target] = {}
    for pv in pool_views(topology, states, store):
        plan = plan_routing(pv.view, objective)
        weights = haproxy_weights(plan, scale)
        v = pv.view
        both = np.asarray(v.prefill_ok, bool)[:, None] & np.asarray(v.decode_ok, bool)[None, :]
        slow = both & np.asarray(v.path_ok, bool) & ~plan.good
        for axis, ids, marg in ((0, v.prefill, plan.prefill_weight), (1, v.decode, plan.decode_weight)):
            for i, rid in enumerate(ids):
                w = weights[rid]
                if rid in out and out[rid].weight >= w:
                    continue
                at = (i, slice(None)) if axis == 0 else (slice(None), i)
                path, ok, st, late = pv.pair_path[at], v.path_ok[at], pv.pair_state[at], slow[at]
                bad = dict.fromkeys(topology.ids[int(g)] for g in path[(path >= 0) & ~ok].tolist())
                worst = {topology.ids[int(g)]: LABELS[int(s)] for g, s in zip(path.tolist(), st.tolist(), strict=True)
                         if g >= 0}  # fmt: skip
                why = [f"{p} {worst[p]}" for p in bad]
                why += [f"{p} over the objective" for p in dict.fromkeys(
                    topology.ids[int(g)] for g in path[(path >= 0) & late].tolist())]  # fmt: skip
                why += [r for r in plan.reasons if _mentions(r, rid)]
                g = topology.index[rid]
                own = LABELS[int(states[g])]
                out[rid] = Target(
                    w, sv.pools[int(sv.replica_pool[int(topology.local[g])])], float(marg[i]),
                    tuple(why[:MAX_WHY]), next(iter(bad), rid), worst[next(iter(bad))] if bad else own,
                )  # fmt: skip
    return out


class Holds(Protocol):
    """The operator's gate (``ops.gate.OperatorGate``): does a control hold an entity's actions back?"""

    def holds(self, entity: str) -> bool: ...


class RoutingWeights:
    """The daemon's side: the plan each tick, the keeper's rule, decisions to pass on."""

    def __init__(self, config: WeightsConfig, servers: Mapping[str, str] | None, enforcing: bool) -> None:
        self.config = config
        self.objective = RoutingObjective(ttft_slo_ms=config.ttft_slo_ms, itl_slo_ms=config.itl_slo_ms)
        self.servers = servers  # the HAProxy actuator's map: only its replicas are weighed
        self.enforcing = enforcing  # an actuator that takes set_weight enforces (or awaits approval)
        self.keeper = WeightKeeper(config.min_change, config.min_interval_s)
        self._kept: set[tuple[str, str]] = set()

    def due(
        self, now: float, controller: Controller, gate: Holds, journal: Journal | None = None
    ) -> list[DecisionRecord]:
        """This tick's weight decisions (journaled with ``journal``)."""
        got = weigh(
            controller.topology, controller.states, controller.store, self.objective, self.config.scale
        )
        servers = self.servers
        if servers is not None:
            got = {r: t for r, t in got.items() if r in servers}
        groups = {r: f"backend {servers[r].split('/')[0]}" if servers is not None else f"pool {t.pool}"
                  for r, t in got.items()}  # fmt: skip
        moves, kept = self.keeper.due(now, {r: t.weight for r, t in got.items()}, groups, gate.holds)
        now_kept = {(k.replica, k.group) for k in kept}
        for k in kept:
            if (k.replica, k.group) not in self._kept:
                log.warning("routing weights: %s keeps weight %s: the plan would leave %s with no server "
                            "above 0 (shedding is the gateway's)", k.replica, k.weight, k.group)  # fmt: skip
        self._kept = now_kept
        out: list[DecisionRecord] = []
        for m in moves:
            t = got[m.replica]
            why = "; ".join(t.why) if t.why else "its paths hold the objective; share from load"
            was = "?" if m.was is None else str(m.was)
            reason = f"routing weight {was}->{m.weight} ({t.share:.0%} of pool {t.pool}): {why}"
            out.append(DecisionRecord(now, m.replica, SET_WEIGHT, controller.mode, reason, t.state, (),
                                      controller.epoch, t.cause, params=(("weight", str(m.weight)),)))  # fmt: skip
        if out and journal is not None:
            journal.append((), out)
        return out

    def settle(self, results: Iterable[ActionResultRecord]) -> None:
        self.keeper.settle(results, self.enforcing)


def routing_weights(site: SiteConfig, dispatcher: Dispatcher) -> RoutingWeights | None:
    """The daemon's ``RoutingWeights`` when ``serving.weights`` is configured, else None."""
    cfg = site.serving.weights
    if cfg is None:
        return None
    haproxy = site.actuators.haproxy
    enforcing = any(r.mode.value != "advise" for r in dispatcher.routes_for(SET_WEIGHT))
    return RoutingWeights(cfg, None if haproxy is None else dict(haproxy.servers), enforcing)


__all__ = ["Kept", "Move", "RoutingWeights", "Target", "WeightKeeper", "routing_weights", "weigh"]
