"""The daemon's loop: sources -> engine -> safety -> actuators -> journal, one tick at a time.

``Daemon.step(now)`` is one tick and takes its time from the caller; ``daemon_run.run_daemon`` is
the ``seamguard run`` driver around it (wall clock, HTTP API, signals, leadership). The world
(nodes, jobs) may change between ticks; ``_follow_world`` applies it before a tick
(``live_world``, ``model.world``). With ``ha`` configured, a replica acts only while it leads, each
action fenced by its epoch (``ha``); a follower ticks its engine and advises.

A source that fails says so in notices and the engine goes on with the rest. Notices are
journaled when they first appear and again when they clear, not every tick, so a target down
for a day is two journal rows, not 8,640.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from seamguard.actuators.dispatch import Dispatcher, Route, actuate, build_routes
from seamguard.actuators.sections import Mode
from seamguard.control.budgets import check_partitions
from seamguard.control.controller import Controller
from seamguard.control.engine_world import apply_world, vouched_repair
from seamguard.control.learner_memory import LearnerMemory
from seamguard.control.safety import SafetyLayer
from seamguard.diagnose.domains import record_domains
from seamguard.diagnose.findings_log import FindingsLog
from seamguard.ha.fence import EtcdFence
from seamguard.ha.leadership import Leadership
from seamguard.ha.view import LeaderView
from seamguard.journal.base import Journal, JournalUnavailableError
from seamguard.journal.records import (
    ActionResultRecord,
    DecisionRecord,
    NoticeRecord,
    OutcomeRecord,
    TransitionRecord,
)
from seamguard.live_world import LiveWorld
from seamguard.model.entities import EntityKind
from seamguard.model.states import State
from seamguard.model.topology import Topology
from seamguard.model.world import by_id, inventory_of
from seamguard.ops.desk import OperatorDesk
from seamguard.ops.entity import RECENT, entity_page
from seamguard.ops.fleet import FleetView, fleet_view
from seamguard.ops.jobs import JobWatch
from seamguard.ops.recorder import SignalRecorder
from seamguard.service.guard import Security
from seamguard.service.metrics import DaemonMetrics, MetricsView, daemon_view
from seamguard.serving.weights import routing_weights
from seamguard.site_config import DaemonConfig
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.base import PlacementSource, Source, SourceNotice, WorldFollower
from seamguard.telemetry.sources.push import PushSource
from seamguard.telemetry.sources.unknown_names import unknown_names_notice

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepReport:
    now: float
    samples: int
    notices: tuple[SourceNotice, ...]
    transitions: tuple[TransitionRecord, ...]
    actions: tuple[ActionResultRecord, ...]
    safety_notices: tuple[NoticeRecord, ...]


@dataclass
class NoticeLatch:
    """Which source notices are active; a notice is journaled when it appears and when it clears."""

    active: dict[tuple[str, str, str], float] = field(default_factory=dict)

    def update(self, now: float, notices: Sequence[SourceNotice]) -> list[NoticeRecord]:
        seen = {(n.source, n.where, n.message) for n in notices}
        out = [
            NoticeRecord(now, key[0], "warning", f"{key[1]}: {key[2]}")
            for key in seen
            if key not in self.active
        ]
        for key in [k for k in self.active if k not in seen]:
            since = self.active.pop(key)
            out.append(
                NoticeRecord(now, key[0], "info", f"{key[1]}: cleared after {now - since:.0f} s ({key[2]})")
            )
        for key in seen:
            self.active.setdefault(key, now)
        return sorted(out, key=lambda r: (r.source, r.message))


@dataclass(frozen=True)
class DaemonStatus:
    """What an operator checks first: is seamguard reading, acting, or holding back, and why."""

    now: float  # the last tick's time (-inf before the first)
    sources: tuple[str, ...]
    active_notices: tuple[str, ...]  # source problems now, e.g. an exporter that stopped answering
    storm_brake: str | None  # None when off; otherwise why seamguard acts on nothing
    breakers: dict[str, str]  # enforcing actuator -> closed | open | half_open
    quarantined: tuple[str, ...]  # nodes seamguard holds out of service
    queued: tuple[str, ...]  # quarantines a budget refused, waiting ("drain_node node/n0003")
    non_healthy: dict[str, int]  # state -> entities in it
    nodes: int = 0  # the world now: nodes in the inventory...
    jobs: int = 0  # ...and jobs in the job table
    leadership: dict[str, object] | None = None  # with ``ha``: who leads, the epoch, acting time left
    # act: some actuator carries actions out (enforce or approve); advise: none does, and the
    # ``quarantined`` nodes are those seamguard *would* hold: nothing was drained.
    mode: str = "advise"
    controls: tuple[dict[str, object], ...] = ()  # the operator's pauses, pins and windows in force
    awaiting: tuple[dict[str, object], ...] = ()  # actions waiting for an operator's approval


class Daemon:
    """One engine with its sources, safety layer and actuators. ``lock`` guards the controller
    against the HTTP service's readers (``service.app``)."""

    def __init__(
        self,
        config: DaemonConfig,
        topology: Topology,
        sources: Sequence[Source],
        *,
        journal: Journal | None = None,
        seed: int = 0,
        world: LiveWorld | None = None,
        routes: Sequence[Route] | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        """``routes``: the actuators, by default those the config's ``actuators`` section builds.
        ``leadership`` (``ha``): only while it leads does this replica act, each action fenced."""
        routes = build_routes(config.site.actuators) if routes is None else list(routes)
        enforcing = any(r.mode in (Mode.ENFORCE, Mode.APPROVE) for r in routes)
        self.leadership = leadership
        self._acting_mode = "act" if enforcing else "advise"
        self.config = config
        self.topology = topology
        self.sources = list(sources)
        self.journal = journal
        self.lock = threading.Lock()
        self.controller = Controller(topology, config.policy, journal=journal, mode="act" if enforcing else "advise",
                                     live_jobs=True)  # fmt: skip
        self.safety = SafetyLayer(topology, config.site.safety)
        self.dispatcher = Dispatcher(routes, seed=seed, fence=EtcdFence(leadership) if leadership else None)
        self.desk = OperatorDesk(topology, self.safety, self._acting_mode)  # pauses, pins, approvals
        self.desk.repair = lambda node, now, note: list(
            vouched_repair(self.controller, self.safety, now, [node], note).decisions)  # fmt: skip
        self.weights = routing_weights(config.site, self.dispatcher)  # serving.weights: the plan's weights
        self.latch = NoticeLatch()
        # Where the world comes from (the inventory and jobs files, watched); the placement
        # sources are asked each tick. Without files: the topology's own inventory and jobs.
        if world is None:  # the topology's jobs are the scheduler's when one reports placements
            scheduled = any(isinstance(s, PlacementSource) for s in self.sources)
            file_jobs, placed = ((), topology.jobs) if scheduled else (topology.jobs, ())
            world = LiveWorld(None, None, inventory_of(topology), file_jobs, placed)
        world.check_inventory = lambda inv: check_partitions(
            config.site.safety.budgets.partitions, [r.node for r in inv.nodes]
        )  # a partition left with no node would stop the safety layer mid-change
        self.world = world
        self._stale_sources: dict[int, Topology] = {}  # id(source) -> the world it still indexes by
        self._back: dict[int, npt.NDArray[np.int64]] = {}  # id(that world) -> its index -> today's
        self._restored = journal is None  # a previous run's quarantines are taken over at the first step
        self._new_reign = False  # a leadership just began: the ledger is rebuilt from the journal
        self.learner_memory = LearnerMemory()  # the learned failure rate, kept across restarts
        self.security: Security | None = None  # the HTTP API's auth and audit tally, set by serve_api
        # Taken at the end of each step and replaced whole: the HTTP threads read it without
        # touching the safety layer, the dispatcher or the latch while a step changes them.
        self.version = 0  # moves on each time the status and the fleet view are replaced (live views)
        self.recent_results: deque[ActionResultRecord] = deque(maxlen=RECENT)  # for the console
        self.recent_transitions: deque[TransitionRecord] = deque(maxlen=RECENT)
        self.recent_decisions: deque[DecisionRecord] = deque(maxlen=RECENT)
        self.recent_outcomes: deque[OutcomeRecord] = deque(maxlen=RECENT)
        self.jobs = JobWatch()  # each running job's plan, stakes and failure mode (``ops.jobs``)
        self.findings_log = FindingsLog()  # which of those findings are journaled, and when
        self.recorder = SignalRecorder()  # the console's plots of scores and signals around a transition
        self._status = self._snapshot()
        self._metrics_view = self._view()  # replaced whole each step, like ``_status``
        self.fleet = self._fleet_view()  # the roll-up the console and /v1/fleet read, replaced whole
        self.metrics = DaemonMetrics(
            lambda: self._metrics_view, self.push, None if leadership is None else leadership.view
        )

    @property
    def push(self) -> PushSource | None:
        return next((s for s in self.sources if isinstance(s, PushSource)), None)

    def step(self, now: float) -> StepReport:
        started = time.perf_counter()
        lead = self._lead()
        leading = lead is None or lead.leading  # a follower keeps its engine warm, acts on and writes nothing
        acting = leading
        try:
            restored = self._restore(now) if acting else []
        except JournalUnavailableError as exc:  # what the last run held is unknown: act on nothing yet
            log.error(
                "journal out of reach, its quarantines not taken over; this tick acts on nothing: %s", exc
            )
            restored, acting = [], False
        batches: list[TelemetryBatch] = []
        notices: list[SourceNotice] = []
        for source in self.sources:
            try:
                got = source.collect(now)
            except Exception as exc:
                log.exception("source %s failed", source.name)
                notices.append(SourceNotice(source.name, "collect", f"failed: {type(exc).__name__}: {exc}"))
                continue
            batches.append(self._in_current_world(source, got.batch))
            notices.extend(got.notices)
            if got.unknown:  # a stable text, journaled once while the same names keep coming
                notices.append(unknown_names_notice(source.name, got.unknown, self.latch.active))
        batch, world_notices = self._follow_world(now, TelemetryBatch.concat(batches), notices)
        with self.lock:
            self.controller.held_nodes = self.safety.held_nodes()
            result = self.controller.tick(now, batch)
            self.recorder.record(now, self.controller, result.transitions)
            self.jobs.update(
                self.controller, now
            )  # stakes and failure modes, read by the API without the lock
        safety_notices: list[NoticeRecord] = []
        if acting and self.journal is not None and not self.journal.ready():
            log.error("journal out of reach: this tick acts on nothing it could not record")
            acting = False
        if not acting and leading and result.decisions:
            # Decided, not carried out: planned again once the journal is back (``control.takeover``).
            self.controller.replan_unwell = True
        operated = self.operate(now)  # requests that came during the tick go first (journaled by the desk)
        results: list[ActionResultRecord] = []
        weighed: list[DecisionRecord] = []  # the routing plan's set_weight decisions (``serving.weights``)
        if acting:
            self.desk.lapse(now, self.journal)
            if self.desk.replan:  # a hold ended: what is still unwell is planned again next tick
                self.controller.replan_unwell, self.desk.replan = True, False
            ops_decisions, self.desk.decisions = self.desk.decisions, []
            if self.weights is not None:
                weighed = self.weights.due(now, self.controller, self.desk.gate, self.journal)
            acted, safety_notices = actuate(self.safety, self.dispatcher, now, [*result.decisions, *ops_decisions,
                                            *weighed], result.transitions, gate=self.desk.gate)  # fmt: skip
            if self.weights is not None:
                self.weights.settle(acted)
            results = acted
        # The engine's own notices (a stuck or uncorroborated sensor, a mass-stale heartbeat source)
        # are given once by the engine when they start: journaled as they come.
        engine_notices = [NoticeRecord(now, "engine", "warning", text) for text in result.notices]
        for text in result.notices:
            log.warning("engine: %s", text)
        # A follower keeps its audit tally until it leads: only the leader writes the journal.
        audit, audit_notices = self.security.drain(now) if self.security is not None and leading else ([], [])
        journal_notices = (
            restored
            + world_notices
            + self.latch.update(now, notices)
            + safety_notices
            + engine_notices
            + audit_notices
        )
        if self.journal is not None and leading and (results or journal_notices or audit):
            self.journal.append_actions(results, journal_notices, audit)
        self._journal_findings(now, leading)
        self.learner_memory.save(self.journal if leading else None, self.controller.learner, now)
        if self.leadership is not None:
            self.leadership.ticked(now)
        results = operated + results
        self.recent_results.extend(results)
        self.recent_transitions.extend(result.transitions)
        self.recent_decisions.extend([*result.decisions, *weighed])
        self.recent_outcomes.extend(result.outcomes)
        self._status = self._snapshot()
        self._metrics_view = self._view()
        self.fleet = self._fleet_view()
        self.version += 1
        self.metrics.observe_step(time.perf_counter() - started, result.transitions, results)
        return StepReport(
            now, len(batch), tuple(notices), result.transitions, tuple(results), tuple(safety_notices)
        )

    def _journal_findings(self, now: float, leading: bool) -> None:
        """Each job's failure mode when it changes and every few minutes while it lasts
        (``diagnose.findings_log``), by the leader only. A write that fails is logged and the tick
        goes on: a finding records what was seen, and no action waits on it."""
        if self.journal is None or not leading:
            self.findings_log.forget()  # a new leadership journals every job afresh
            return
        records = self.findings_log.due(self.jobs.findings, now)
        if records:
            try:
                self.journal.append_findings(records)
            except Exception:
                log.exception("journal: %d diagnosis finding(s) not written", len(records))

    def operate(self, now: float) -> list[ActionResultRecord]:
        """Apply the operator requests waiting (``ops.desk``): called at each tick and, woken by
        a request, between ticks, so that a pause or an approval does not wait for the next tick."""

        def why_not() -> str | None:
            if self.leadership is None:
                return None
            view = self.leadership.view()
            return (
                None
                if view.leading
                else f"this replica ({view.me}) follows; the leader is {view.leader or 'not known yet'}"
            )

        if (
            not self._restored and why_not() is None
        ):  # the journal's pins and pauses not read yet: wait for the tick
            self.desk.wake.clear()
            return []
        out = self.desk.apply(now, self.journal, self.dispatcher, why_not)
        self.recent_results.extend(out)
        self._status = self._snapshot()
        self._metrics_view = self._view()
        self.fleet = self._fleet_view()
        self.version += 1
        return out

    def status_json(self) -> dict[str, object]:
        st, mv = self._status, self._metrics_view
        budgets = {
            "used": dict(mv.budget_used),
            "limit": dict(mv.budget_limit),
            "fullest_domain": mv.budget_domain or None,
        }
        held = ("held out of service by an actuator" if st.mode == "act"
                else "would be held: advise mode, nothing was drained")  # fmt: skip
        return {**st.__dict__, "now": st.now if math.isfinite(st.now) else None, "budgets": budgets,
                "quarantined_means": held}  # fmt: skip

    def entity_json(self, eid: str) -> dict[str, object] | None:
        """One entity as the console's page shows it (``ops.entity``); None for an unknown id."""
        return entity_page(self, eid)

    def _fleet_view(self) -> FleetView:
        return fleet_view(self.topology, self.controller.classifier.state, self.safety.held_nodes(),
                          float(self.controller.now))  # fmt: skip

    def _lead(self) -> LeaderView | None:
        """Before the tick: leading, the engine decides under this leadership's epoch (the fence
        refuses any other); following, it advises, and takes over the quarantines the journal
        shows once it leads."""
        if self.leadership is None:
            return None
        lead = self.leadership.view()
        with self.lock:
            if lead.leading and (
                self.controller.epoch != lead.epoch or self.controller.mode != self._acting_mode
            ):
                self.controller.epoch, self.controller.mode = lead.epoch, self._acting_mode
                self.safety.epoch = lead.epoch  # its releases go out under this leadership too
                # what it decided as advice while following may never have been carried out
                self.controller.replan_unwell = True
                self._restored = self.journal is None  # a new leadership restores the ledger first...
                self._new_reign = self.journal is not None  # ...from the journal alone
            elif not lead.leading:
                self.controller.mode = "advise"
            # Only the leader writes the journal (a shared one refuses a follower's writes anyway).
            self.controller.journal = self.journal if lead.leading else None
        return lead

    def _restore(self, now: float) -> list[NoticeRecord]:
        """Nodes the journal shows quarantined by an earlier run are held again, so that they are
        resumed once healthy rather than left out of service for good."""
        if self._restored or self.journal is None:
            return []
        lead = self.leadership.view() if self.leadership is not None else None
        if self._new_reign and lead is not None:
            # A fenced write first: from now the journal refuses every older epoch's writes.
            self.journal.set_meta("leader", f"{lead.me} epoch {lead.epoch}")
        results = self.journal.action_results()  # may raise: then tried again at the next tick
        controls = self.journal.operator_actions()
        if self._new_reign:
            # The journal is the ledger's truth at a takeover: what this replica held in memory
            # from an earlier reign may since have been released by another leader.
            fresh = SafetyLayer(self.topology, self.config.site.safety)
            fresh.epoch = self.safety.epoch
            self.safety, self._new_reign = fresh, False
        self._restored = True
        held = self.safety.restore(results, now)
        self.desk.gate.safety = self.safety
        self.desk.controls.load(controls, now)
        in_force = self.desk.controls.active()
        out = [NoticeRecord(now, "operator", "warning", f"{len(in_force)} operator control(s) of an earlier run in force: "
                            + "; ".join(c.describe() for c in in_force))] if in_force else []  # fmt: skip
        out += self.learner_memory.restore(self.journal, self.controller.learner, now)
        if not held:
            return out
        shown = ", ".join(held[:10]) + (f" and {len(held) - 10} more" if len(held) > 10 else "")
        log.warning("holding %d node(s) an earlier run quarantined: %s", len(held), shown)
        return [
            *out,
            NoticeRecord(
                now,
                "safety",
                "warning",
                f"{len(held)} node(s) quarantined by an earlier run held again: {shown}",
            ),
        ]

    def status(self) -> DaemonStatus:
        """As of the last step (before the first: no tick yet)."""
        return self._status

    def _view(self) -> MetricsView:
        now = float(self.controller.now)
        view = daemon_view(self.topology, self.controller.classifier.state, now, self.latch.active,
                           [s.name for s in self.sources], self.safety, self.dispatcher.breakers(now))  # fmt: skip
        controls = Counter(c.verb.value for c in self.desk.controls.active())
        return replace(view, acting=self._acting_mode == "act", controls=dict(controls), awaiting=len(self.dispatcher.awaiting()),
                       modes={f.job: (f.mode.value, f.rate_gpu_h_per_h, f.held_back_gpu_s_per_s, bool(f.risk))
                              for f in self.jobs.findings})  # fmt: skip

    def _snapshot(self) -> DaemonStatus:
        now = self.controller.now
        counts = np.bincount(self.controller.classifier.state, minlength=len(State))
        return DaemonStatus(
            now=float(now),
            sources=tuple(s.name for s in self.sources),
            active_notices=tuple(f"{src} {where}: {msg}" for src, where, msg in sorted(self.latch.active)),
            storm_brake=self.safety.brake.reason if self.safety.brake.engaged else None,
            breakers=dict(self.dispatcher.breakers(float(now))),
            quarantined=tuple(self.safety.quarantined()),
            queued=tuple(f"{a.kind} {a.target}" for a in self.safety.queued()),
            non_healthy={
                State(i).label: int(c) for i, c in enumerate(counts.tolist()) if c and i != State.HEALTHY
            },
            nodes=self.topology.count(EntityKind.NODE),
            jobs=len(self.topology.jobs),
            leadership=None if self.leadership is None else self.leadership.view().to_json(),
            mode=self._acting_mode,
            controls=tuple(c.to_json() for c in self.desk.controls.active()),
            awaiting=tuple(w.to_json() for w in self.dispatcher.awaiting()),
        )

    # ---- a world that changes while the daemon runs (``live_world``, ``model.world``) --------
    def _follow_world(
        self, now: float, batch: TelemetryBatch, notices: list[SourceNotice]
    ) -> tuple[TelemetryBatch, list[NoticeRecord]]:
        """Before the tick: the world the files and the placement sources describe now. A change
        is applied to the engine and the safety layer (every memory carried over), followed by the
        sources that can, journaled as a notice; this tick's samples are re-indexed into it."""
        placements = {s.name: s.placements() for s in self.sources if isinstance(s, PlacementSource)}
        update = self.world.update(self.topology, placements)
        notices.extend(update.notices)
        out: list[NoticeRecord] = []
        change = update.change
        if change is not None:
            with self.lock:
                apply_world(self.controller, change)
                out.extend(self.safety.carry_over(change, now))
            self.topology = change.new
            self.desk.topology = change.new
            if self.controller.journal is not None:  # leading: explain's map of domains follows the world
                record_domains(self.controller.journal, change.new)
            for source in self.sources:
                if isinstance(source, WorldFollower):
                    source.follow(change)
                else:
                    self._stale_sources.setdefault(id(source), change.old)
            # samples go by entity id (a board replaced under its name is still read as that name)
            self._back = {
                id(change.old): change.back() if change.jobs_only else by_id(change.old, change.new)
            }
            batch = batch.reindexed(self._back[id(change.old)])
            summary = change.summary() or "job placements changed"
            log.info("world: %s", summary)
            out.insert(0, NoticeRecord(now, "world", "info", summary))
        stale = [s.name for s in self.sources if id(s) in self._stale_sources]
        if stale:
            notices.append(SourceNotice("world", ", ".join(stale), "does not follow world changes: "
                                        "entities added since start are not read from it until a restart"))  # fmt: skip
        if update.placement is not None:
            try:
                with self.lock:
                    self.controller.set_placement(update.placement)
            except ValueError as exc:
                notices.append(SourceNotice("world", "placement", f"not applied: {exc}"))
        return batch, out

    def _in_current_world(self, source: Source, batch: TelemetryBatch) -> TelemetryBatch:
        """A source that does not follow world changes indexes by the world it was built in: its
        samples are re-indexed by entity id (entities that left are dropped)."""
        built = self._stale_sources.get(id(source))
        if built is None or built is self.topology:
            return batch
        back = self._back.get(id(built))
        if back is None:
            back = self._back[id(built)] = by_id(built, self.topology)
        return batch.reindexed(back)
