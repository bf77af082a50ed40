"""One entity as an operator's page shows it: its one state, what the engine scores and why, the
controls and approvals that touch it, and what happened to it lately (from the daemon's memory of
recent transitions and action results; the journal holds the full history: ``seamguard explain``)."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from typing import Protocol

import numpy as np

from seamguard.control.controller import Controller
from seamguard.diagnose.blast import domain_blast
from seamguard.journal.records import (
    ActionResultRecord,
    DecisionRecord,
    EvidenceItem,
    OutcomeRecord,
    TransitionRecord,
)
from seamguard.model.entities import EntityKind
from seamguard.model.runbook import by_hand
from seamguard.model.states import STATE_LABELS
from seamguard.model.topology import Topology, nodes_below
from seamguard.ops.controls import FLEET
from seamguard.ops.fleet import FleetView
from seamguard.ops.jobs import JobWatch
from seamguard.ops.recorder import SignalRecorder

RECENT = 20_000  # transitions and action results the daemon keeps in memory for these pages
SHOWN = 50  # of each, the newest shown on a page


class EntityHost(Protocol):
    fleet: FleetView
    lock: threading.Lock
    controller: Controller
    recorder: SignalRecorder
    jobs: JobWatch

    @property
    def recent_results(self) -> Iterable[ActionResultRecord]: ...

    @property
    def recent_transitions(self) -> Iterable[TransitionRecord]: ...

    @property
    def recent_decisions(self) -> Iterable[DecisionRecord]: ...

    @property
    def recent_outcomes(self) -> Iterable[OutcomeRecord]: ...

    def status_json(self) -> dict[str, object]: ...


def touches(topology: Topology, scope: str, eid: str) -> bool:
    """Whether a control on ``scope`` covers ``eid``: the fleet, the entity itself, or a domain
    sharing a node with it."""
    if scope in (FLEET, eid):
        return True
    a, b = topology.lookup(scope), topology.lookup(eid)
    if a is None or b is None:
        return False
    return bool(np.intersect1d(nodes_below(topology, a), nodes_below(topology, b)).size)


def entity_page(host: EntityHost, eid: str) -> dict[str, object] | None:
    view = host.fleet
    topo = view.topology
    state = view.state_of(eid)
    gidx = topo.lookup(eid)
    if state is None or gidx is None:
        return None
    with host.lock:  # the engine's scores are read whole between two ticks
        ev = host.controller.view(eid)
        [blast] = domain_blast(topo, host.controller.workload_at(float(host.controller.now)), [eid])
    held = next((p.held_back_gpu_s_per_s for p in host.jobs.view.parts if p.entity == eid), 0.0)
    status = host.status_json()
    controls = [c for c in _dicts(status.get("controls")) if touches(topo, str(c["target"]), eid)]
    awaiting = [w for w in _dicts(status.get("awaiting")) if touches(topo, str(w["target"]), eid)]
    on_nodes = nodes_below(topo, gidx)
    related = {eid}
    if on_nodes.size == 1:  # a GPU's or an uplink's drain is its node's
        related.add(f"node/{topo.names[EntityKind.NODE][int(on_nodes[0])]}")
    transitions = [t for t in list(host.recent_transitions) if t.entity == eid][-SHOWN:]
    actions = [r for r in list(host.recent_results) if r.target in related][-SHOWN:]
    decided = [d for d in list(host.recent_decisions) if d.entity in related or d.cause == eid][-SHOWN:]
    realised = {(o.entity, o.action, o.decided_at): o for o in list(host.recent_outcomes)}
    return {
        "id": eid,
        "kind": topo.kind_of(gidx).value,
        "state": state,
        "engine_state": STATE_LABELS[int(ev.state)],
        "since": _finite(ev.since),
        "scores": {"gfs": _finite(ev.gfs), "prs": _finite(ev.prs), "fae": _finite(ev.fae)},
        "evidence": [{"detector": i.detector, "signal": i.signal, "evidence": _finite(i.evidence), "text": i.text}
                     for i in ev.evidence],
        "controls": controls,
        "awaiting": awaiting,
        "transitions": [{"ts": t.ts, "from": t.from_state, "to": t.to_state, "reason": t.reason} for t in transitions],
        "actions": [{"ts": r.ts, "kind": r.kind, "target": r.target, "actuator": r.actuator, "status": r.status,
                     "detail": r.detail} for r in actions],
        "decisions": [_decision(d, realised.get((d.entity, d.action, d.ts))) for d in decided],
        "children": (view.children(eid) or {}).get("children", []),
        "mode": status.get("mode"),
        "next_steps": next_steps(ev.evidence, awaiting, actions),
        "series": host.recorder.series(topo, gidx),
        "blast": {**blast.to_json(), "held_back_gpu_s_per_s": round(held, 3)},
    }  # fmt: skip


def next_steps(evidence: Iterable[EvidenceItem], awaiting: list[dict[str, object]],
               actions: list[ActionResultRecord]) -> list[str]:  # fmt: skip
    """What a person does now: NVIDIA's action for an XID, then the step for each action that
    waits for approval or was not carried out (advised, skipped, refused, given up)."""
    out = [f"{i.text.split(' (')[0]}: {i.text.rsplit('): ', 1)[1]} (NVIDIA's XID catalog)"
           for i in evidence if i.detector == "xid" and "): " in i.text]  # fmt: skip
    seen: set[tuple[str, str]] = set()
    pending = [(str(w["kind"]), str(w["target"]), "awaits approval") for w in awaiting]
    pending += [
        (r.kind, r.target, r.status)
        for r in reversed(actions)
        if r.status not in ("done", "already", "cancelled")
    ]
    for kind, target, status in pending:
        step = by_hand(kind, target)
        if step and (kind, target) not in seen:
            seen.add((kind, target))
            out.append(f"{kind} on {target} ({status}): {step}")
    return out[:6]


def _decision(d: DecisionRecord, o: OutcomeRecord | None) -> dict[str, object]:
    """A decision on the entity or caused by it, with what it was predicted and turned out to be worth."""
    return {"ts": d.ts, "action": d.action, "target": d.entity, "cause": d.cause, "mode": d.mode, "reason": d.reason,
            "predicted": {"cost_gpu_h": _finite(d.predicted_cost_gpu_h), "benefit_gpu_h": _finite(d.predicted_benefit_gpu_h)},
            "realised": None if o is None else {"cost_gpu_h": _finite(o.realised_cost_gpu_h),
                                                "benefit_gpu_h": _finite(o.realised_benefit_gpu_h), "note": o.note}}  # fmt: skip


def _dicts(value: object) -> list[dict[str, object]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, (list, tuple)) else []


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
