"""Where operator requests meet the daemon: taken from the HTTP threads, applied on the daemon's
own thread (the one that owns the safety layer, the dispatcher and the journal's connection),
journaled before they take effect.

A request waits for the daemon to apply it (``submit``): the daemon is woken at once, so a pause
takes effect within the time a tick in progress needs to end, not at the next tick. One that the
daemon has not taken within the caller's timeout is withdrawn and refused, so an answer is never
"maybe": applied and journaled (with the record), or not applied at all.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from seamguard.actuators.dispatch import Dispatcher
from seamguard.control.safety import SafetyLayer
from seamguard.journal.base import Journal, JournalUnavailableError
from seamguard.journal.records import ActionResultRecord, DecisionRecord, OperatorRecord
from seamguard.model.topology import Topology
from seamguard.ops.controls import ENDS, FLEET, STANDING, Control, Controls, PinnedState, Verb
from seamguard.ops.gate import OperatorGate

SYSTEM = "seamguard"  # the principal of a control's own lapse
MAX_WAITING = 64  # requests waiting for the daemon's thread at once; past it a new one is refused


@dataclass(frozen=True)
class Request:
    principal: str
    verb: Verb
    target: str  # FLEET, an entity id, or an action key (approve, reject)
    reason: str
    for_s: float = math.nan  # pause, pin, maintenance: how long it stands
    state: str = ""  # pin: healthy | quarantined


@dataclass(frozen=True)
class Reply:
    status: int  # HTTP status: 200 applied; 404 nothing to act on; 409/422 refused; 503 not now
    detail: str
    record: OperatorRecord | None = None
    results: tuple[ActionResultRecord, ...] = ()

    def to_json(self) -> dict[str, object]:
        r = self.record
        return {"detail": self.detail,
                "record": None if r is None else {"ts": r.ts, "by": r.principal, "verb": r.verb, "target": r.target,
                                                  "reason": r.reason, "until": r.until if math.isfinite(r.until) else None,
                                                  "detail": r.detail},
                "results": [{"kind": x.kind, "target": x.target, "actuator": x.actuator, "status": x.status,
                             "detail": x.detail} for x in self.results]}  # fmt: skip


@dataclass
class _Pending:
    request: Request
    done: threading.Event = field(default_factory=threading.Event)
    reply: Reply | None = None


class OperatorDesk:
    def __init__(self, topology: Topology, safety: SafetyLayer, mode: str) -> None:
        self.controls = Controls()
        self.gate = OperatorGate(self.controls, safety, mode)
        self.topology = topology
        self.wake = threading.Event()  # set when a request arrives: the daemon's loop waits on it
        self.closing = threading.Event()  # set when the daemon stops: the consoles' live streams end
        self._lock = threading.Lock()
        self._queue: deque[_Pending] = deque()
        self.decisions: list[DecisionRecord] = []  # the operator's own, for the next actuation
        # ``Verb.REPAIRED``: (node, now, note) -> the undos it calls for (``engine_world.vouched_repair``)
        self.repair: Callable[[str, float, str], list[DecisionRecord]] | None = None
        self.replan = False  # a hold ended: the parts still unwell are planned again

    # ---- the HTTP threads ----------------------------------------------------------------
    def submit(self, request: Request, timeout_s: float) -> Reply:
        p = _Pending(request)
        with self._lock:
            if len(self._queue) >= MAX_WAITING:
                return Reply(
                    429, f"not applied: {MAX_WAITING} controls already wait for the daemon; try again shortly"
                )
            self._queue.append(p)
        self.wake.set()
        if p.done.wait(timeout_s):
            assert p.reply is not None
            return p.reply
        with self._lock:
            if p in self._queue:  # never taken: withdrawn, so the answer is a sure "not applied"
                self._queue.remove(p)
                return Reply(
                    503,
                    f"not applied: the daemon did not take it within {timeout_s:g} s (a long tick); try again",
                )
        p.done.wait()  # taken meanwhile: its answer comes once it is applied  # fmt: skip
        assert p.reply is not None
        return p.reply

    # ---- the daemon's thread ---------------------------------------------------------------
    def apply(self, now: float, journal: Journal | None, dispatcher: Dispatcher, leading: Callable[[], str | None]) -> list[ActionResultRecord]:  # fmt: skip
        """Every waiting request, in order; the action results they produced (already journaled
        and fed back to the safety layer). ``leading()``: None while this replica may act, else
        why not."""
        with self._lock:
            taken = list(self._queue)
            self._queue.clear()
        out: list[ActionResultRecord] = []
        for p in taken:
            try:
                p.reply = self._one(p.request, now, journal, dispatcher, leading)
            except JournalUnavailableError as exc:
                p.reply = Reply(503, f"not applied: the journal is out of reach ({exc})")
            except Exception as exc:  # an answer, never a hung caller
                p.reply = Reply(500, f"not applied: {type(exc).__name__}: {exc}")
            out.extend(p.reply.results)
            p.done.set()
        return out

    def lapse(self, now: float, journal: Journal | None) -> list[OperatorRecord]:
        """Controls whose time is up end, journaled as ended by seamguard."""
        ended = self.controls.lapse(now)
        records = [OperatorRecord(now, SYSTEM, STANDING[c.verb].value, c.target,
                                  f"expired (set by {c.principal} at {c.since:.0f}: {c.reason})", math.nan, c.state)
                   for c in ended]  # fmt: skip
        if records and journal is not None:
            journal.append_operator(records)
        for c in ended:
            self._ended(c, now)
        return records

    def _ended(self, c: Control, now: float) -> None:
        self.replan = True
        self.decisions.extend(self.gate.unpinned(c, now, self.gate.safety.epoch))

    def _one(self, r: Request, now: float, journal: Journal | None, dispatcher: Dispatcher,
             leading: Callable[[], str | None]) -> Reply:  # fmt: skip
        why_not = leading()
        if why_not is not None:
            return Reply(503, f"not applied: {why_not}")
        if journal is not None and not journal.ready():
            return Reply(
                503, "not applied: the journal is out of reach; nothing is changed that it could not record"
            )
        problem = self._check(r, dispatcher)
        if problem is not None:
            return problem
        until = now + r.for_s if r.verb in STANDING else math.nan
        record = OperatorRecord(now, r.principal, r.verb.value, r.target, r.reason, until, r.state)
        if journal is not None:
            journal.append_operator([record])
        results: list[ActionResultRecord] = []
        if r.verb in STANDING:
            self.controls.apply(record)
            detail = f"{r.verb.value} {r.target} until {until:.0f}"
        elif r.verb in ENDS:
            ended = self.controls.apply(record)
            assert ended is not None
            self._ended(ended, now)
            detail = f"{r.verb.value} {r.target}: ended {ended.describe()}"
        elif r.verb is Verb.REPAIRED:
            assert self.repair is not None
            self.decisions.extend(self.repair(r.target, now, f"repaired by {r.principal}: {r.reason}"))
            detail = (
                f"repaired {r.target}: its state reset; released at the next tick if held for a first offence"
            )
        elif r.verb is Verb.APPROVE:
            results = dispatcher.approve(r.target, now, r.principal)
            detail = f"approved {r.target}: " + ", ".join(f"{x.actuator} {x.status}" for x in results)
        else:
            results = dispatcher.reject(r.target, now, f"rejected by {r.principal}: {r.reason}")
            detail = f"rejected {r.target}"
        if results:
            self.gate.safety.settle(results)
            if journal is not None:
                journal.append_actions(results)
        return Reply(200, detail, record, tuple(results))

    def _check(self, r: Request, dispatcher: Dispatcher) -> Reply | None:
        if r.verb in (Verb.APPROVE, Verb.REJECT):
            if not any(w.action.key == r.target for w in dispatcher.awaiting()):
                return Reply(404, f"no action awaits approval as {r.target!r}: it may have been approved, rejected, "
                                  "cancelled or expired (seamguard ctl status lists those that wait)")  # fmt: skip
            return None
        if r.verb in ENDS:
            if self.controls.get(ENDS[r.verb], r.target) is None:
                return Reply(
                    404, f"nothing to {r.verb.value}: no {ENDS[r.verb].value} of {r.target!r} is in force"
                )
            return None
        if r.target != FLEET and self.topology.lookup(r.target) is None:
            return Reply(404, f"unknown entity {r.target!r}: expected an id such as node/NAME, rack/NAME, cdu/NAME"
                              + (" or 'fleet'" if r.verb is not Verb.PIN else ""))  # fmt: skip
        if r.verb is Verb.REPAIRED:
            if self.repair is None or not r.target.startswith("node/"):
                return Reply(
                    422, f"{r.target}: a repair names one node (node/NAME), whose GPUs and uplink it takes"
                )
            return None
        if r.verb is Verb.PIN:
            if r.target == FLEET:
                return Reply(422, "a pin names one entity, not the fleet (pause the fleet instead)")
            if r.state not in {s.value for s in PinnedState}:
                return Reply(422, f"pin state {r.state!r}: expected healthy or quarantined")
            if self.gate.safety.nodes_of(r.target).size == 0:
                return Reply(422, f"{r.target} has no node seamguard could hold in or out of service")
        return None
