"""The control loop: ``Controller.tick(now, batch) -> TickResult``.

Deterministic: the same inputs give the same transitions and decisions. Time is passed in,
never read from the clock, so the daemon, the replay (``seamguard score``) and the demo run
the very same engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.config import Config
from seamguard.control.checkpoint_loop import SINCE_SIGNAL, CheckpointLoop, LoopTick, job_risk, storage_paths
from seamguard.control.classifier import Classifier, ClassifierInputs, forced_out, newly_failed_nodes
from seamguard.control.containment import EngineView, contain, still_weighed, tolerated_by, valued
from seamguard.control.escalation import Escalation, JobSignals
from seamguard.control.explaining import (
    EntityView,
    Scores,
    entity_view,
    evidence_items,
    observations,
    transition_reason,
)
from seamguard.control.fabric_pace import FabricPace
from seamguard.control.failure_tally import FAILURES_SIGNAL, FailureTally
from seamguard.control.islands import IslandBook
from seamguard.control.lemons import LemonMemory
from seamguard.control.planner import plan
from seamguard.control.rank_harm import rank_harm
from seamguard.control.revalue import causes_of, heating_under, keep_for_waiting, revalue
from seamguard.control.spares import job_spares, spares_by_class
from seamguard.control.takeover import replanned
from seamguard.control.thermal_trip import trip_in_s
from seamguard.economics.hazard import JobHazard, job_hazard, job_parts, nominal_rates, part_rates
from seamguard.economics.hazard_learning import COUNTED_KINDS, learner_for
from seamguard.economics.job_risk import JobRisk
from seamguard.economics.job_value import JobEconomics, criticality_weights, job_economics
from seamguard.economics.pace import PaceRing
from seamguard.journal.base import Journal
from seamguard.journal.records import DecisionRecord, EvidenceItem, OutcomeRecord, TransitionRecord
from seamguard.model.catalog import SignalCatalog, SignalKind, signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.model.states import State
from seamguard.model.topology import Topology
from seamguard.model.workload import (
    Workload,
    active_jobs,
    build_workload,
    placement_node_job,
    workload_from_nodes,
)
from seamguard.scoring.cohorts import by_node_type
from seamguard.scoring.engine import (
    STEP_TIME_SIGNAL,
    ScoreFrame,
    flatline_alarms,
    history_signals,
    score_tick,
    validate_cohorts,
)
from seamguard.scoring.events import XidMemory
from seamguard.scoring.peer_memory import PeerMemory
from seamguard.scoring.propagation import Amplification, amplification, propagation_risk
from seamguard.scoring.sensor_screen import SensorScreen
from seamguard.scoring.usual_level import UsualLevels, learnt_signals
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.store import IngestReport, TelemetryStore

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TickResult:
    now: float
    transitions: tuple[TransitionRecord, ...]
    decisions: tuple[DecisionRecord, ...]
    ingest: IngestReport
    notices: tuple[str, ...]
    outcomes: tuple[OutcomeRecord, ...] = ()


class Controller:
    """One engine over one topology, whole (the daemon, ``score``, the demo, the twin at full
    cadence) or one shard of a fleet whose jobs span shards (the twin's windows): a shard is built
    with ``plan_checkpoints=False``, reports its share of each job's hazard (``job_hazard(scale)``)
    and of the fleet's exposure, and values its parts against the fleet's plan (``set_job_economics``)."""

    def __init__(
        self,
        topology: Topology,
        config: Config,
        *,
        journal: Journal | None = None,
        catalog: SignalCatalog | None = None,
        epoch: int = 0,
        mode: str = "advise",
        plan_checkpoints: bool = True,
        live_jobs: bool = False,
    ) -> None:
        self.topology = topology
        self.config = config
        self.catalog = catalog or signal_catalog()
        self.journal = journal
        self.epoch = epoch
        self.mode = mode
        self.store = TelemetryStore(topology, self.catalog, window=config.history_ticks(),
                                    stale_after_s=config.engine.stale_after_s, history_signals=history_signals(config),
                                    clock_skew_s=config.engine.clock_skew_s, tick_s=config.engine.tick_s,
                                    flatline=config.detectors.flatline, flatline_alarms=flatline_alarms(config))  # fmt: skip
        self.sensors = SensorScreen.from_config(config)
        self.classifier = Classifier(topology.kind_code, config.classifier, config.economics)
        self.lemon_memory = LemonMemory.create(topology, config.classifier)
        self.learner = learner_for(config.hazard)
        self._counted = np.concatenate([topology.members[k] for k in COUNTED_KINDS])
        self._counted_rate = nominal_rates(config.hazard, topology)[self._counted]
        self.new_failures = 0  # hard failures the last tick saw (control.failure_tally)
        self.failures = FailureTally.create(len(topology.jobs))
        # Off when the caller plans over several engines' hazards (the twin's cells). ``live_jobs``:
        # the job table will change (``apply_world``); checkpoint settings may name jobs to come.
        self.checkpoint_loop = (CheckpointLoop(config, topology, live_jobs=live_jobs)
                                if plan_checkpoints else None)  # fmt: skip
        self._pairs: tuple[Workload, tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] | None = None
        self._hazard: JobHazard | None = None
        self._unit_hazard: JobHazard | None = None  # at scale 1: a shard's hazard at any scale
        self._exposure: float | None = None
        self._nominal_rate = nominal_rates(config.hazard, topology)
        self._gpu_slowdown = np.zeros(topology.count(EntityKind.GPU))
        self.pace = PaceRing(config.history_ticks(), topology.count(EntityKind.GPU))
        self.escalation = Escalation(config, topology)
        self._criticality = criticality_weights(config, topology)
        # Each job's economics and save cost: from this engine's own checkpoint loop, or handed
        # in by a caller that plans over several engines (``set_job_economics``).
        self.economics: JobEconomics | None = None
        self._save_s = np.full(len(topology.jobs), np.nan)
        # The last state other than unknown: what an entity coming back from silence returns from.
        self._last_known = np.full(topology.n_entities, int(State.HEALTHY), dtype=np.int64)
        self.replan_unwell = False  # a replica taking the leadership plans what is held out again
        gpu_count = topology.count(EntityKind.GPU)
        self.xid_memory = XidMemory.create(gpu_count, config.detectors.xid)
        self.usual_levels = UsualLevels(topology, learnt_signals(config.detectors, self.catalog))
        self.peer_memory = PeerMemory(topology, {n: self.catalog[n].entity for n in config.detectors.peer})
        self._fresh_signals: dict[EntityKind, list[str]] = {}
        for sig in self.catalog.signals:
            if sig.kind is not SignalKind.EVENT:
                self._fresh_signals.setdefault(sig.entity, []).append(sig.name)
        self._workload_key: tuple[int, ...] | None = None
        self._workload: Workload | None = None
        self._live_placement = False
        self._amp: Amplification | None = None
        self.now = -np.inf
        self._last_observed = np.full(topology.n_entities, -np.inf)
        n = topology.n_entities
        self.gfs, self.prs = np.zeros(n), np.zeros(n)
        self._tolerated = np.zeros(n, dtype=bool)  # quarantines the containment stage kept in service
        self.fabric_pace = FabricPace(len(topology.jobs))  # each job's pace lost to its fabric
        self._revalue_at = float("-inf")  # when the tolerated ones (and islands) are next valued again
        self.islands = IslandBook()
        # Local node indices the post-engine stage holds out of service (the safety layer's ledger):
        # no spare for containment. Its driver sets them before each tick.
        self.held_nodes: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        # The same over the failure precursors only (hazard.precursors): what the hazard reads.
        self.gfs_precursor, self.prs_precursor = np.zeros(n), np.zeros(n)
        self.fae = np.ones(n)
        self.frame: ScoreFrame | None = None
        self._harm_text: dict[int, str] = {}
        self._harm_ratio: FloatArray = np.zeros(topology.n_entities)
        validate_cohorts(config, self.catalog, topology, self.workload_at(0.0))

    def workload_at(self, now: float) -> Workload:
        if self._live_placement and self._workload is not None:
            return self._workload
        key = active_jobs(self.topology, now)
        if key != self._workload_key or self._workload is None:
            self._workload = build_workload(self.topology, key)
            self._amp = amplification(self.topology, self._workload)
            self._workload_key = key
        return self._workload

    def set_placement(self, placement: Mapping[str, Sequence[str]]) -> None:
        """Where each running job is now ({job name: node names}), as the scheduler reports it.

        From the first call on, this live placement replaces the job table's time windows:
        jobs absent from it are not running. Raises ValueError naming an unknown job or node.
        """
        node_job = placement_node_job(self.topology, placement)
        if (
            self._live_placement
            and self._workload is not None
            and np.array_equal(node_job, self._workload.node_job)
        ):
            return
        self._workload = workload_from_nodes(self.topology, node_job)
        self._amp = amplification(self.topology, self._workload)
        self._live_placement = True
        self._hazard, self._unit_hazard = None, None  # the jobs' parts moved

    @property
    def states(self) -> npt.NDArray[np.int64]:
        return self.classifier.state

    def admission_states(self) -> npt.NDArray[np.int64]:
        """The states admission reads: a quarantine the containment stage tolerated counts as
        ``degraded`` (``containment.tolerated_by``)."""
        return np.where(self._tolerated, int(State.DEGRADED), self.classifier.state)

    def job_hazard(self, scale: float | None = None) -> JobHazard:
        """Each running job's failure rate from the latest tick's scores (``economics.hazard``),
        scaled by the fleet's observed rate against nominal (``scale``, by default this engine's
        own ``learner``): what the checkpoint loop reads."""

        def at(rate_scale: float) -> JobHazard:
            workload = self.workload_at(self.now)
            return job_hazard(self.config.hazard, self.topology, workload, self.gfs_precursor, self.prs_precursor,
                              rate_scale, self._parts(workload), self._failed())  # fmt: skip

        if scale is not None and scale > 0:  # asked of every shard every tick: one sum per state
            if self._unit_hazard is None:
                self._unit_hazard = at(1.0)
            return self._unit_hazard.scaled(scale)
        if scale is not None:
            return at(scale)
        if self._hazard is None:
            self._hazard = at(self.learner.scale())
        return self._hazard

    def _failed(self) -> npt.NDArray[np.bool_]:
        return np.asarray(self.classifier.state == int(State.FAILED), dtype=np.bool_)

    def _parts(self, workload: Workload) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        if self._pairs is None or self._pairs[0] is not workload:
            self._pairs = (workload, job_parts(self.topology, workload))
        return self._pairs[1]

    def exposure_per_s(self) -> float:
        """Failures per second expected at nominal rates over what the learner counts: the parts
        that can still fail (not failed, not gone silent after failing; a part never seen yet is
        at risk all the same), and what only a job's runtime sees (``control.failure_tally``)."""
        if self._exposure is None:  # asked of every shard every tick; changes only when states do
            st = self.classifier.state[self._counted]
            last = self._last_known[self._counted]
            gone = (st == int(State.FAILED)) | ((st == int(State.UNKNOWN)) & (last == int(State.FAILED)))
            own = self.failures.exposure_per_s(self.config.hazard, self.workload_at(self.now))
            self._exposure = float(self._counted_rate @ ~gone) + own
        return self._exposure

    def set_job_economics(self, economics: JobEconomics, save_s: npt.NDArray[np.float64]) -> None:
        """Per job (topology order): what a caller planning checkpoints elsewhere found; the next
        ticks value suspect parts against it."""
        self.economics, self._save_s = economics, save_s

    def job_risk(self, job: str) -> JobRisk:
        """One job's hazard, memory-copy survival and storage paths now, for its runtime's advisor."""
        index = {j.job: i for i, j in enumerate(self.topology.jobs)}.get(job)
        if index is None:
            raise KeyError(f"unknown job {job!r}")
        if self.checkpoint_loop is None:
            raise LookupError("this engine does not plan checkpoints (plan_checkpoints=False)")
        paths = storage_paths(self.config, self.topology, self.store, self.classifier.state)
        return job_risk(self.checkpoint_loop, self.job_hazard(), paths, index, self.now)

    def tick(self, now: float, batch: TelemetryBatch) -> TickResult:
        if not now > self.now:
            raise ValueError(f"tick time must increase: got {now} after {self.now}")
        self.now = now
        topo, cfg = self.topology, self.config
        ingest = self.store.ingest(now, batch)
        workload = self.workload_at(now)
        amp = self._amp
        assert amp is not None
        frame = score_tick(
            now=now,
            store=self.store,
            config=cfg,
            topology=topo,
            workload=workload,
            xid_memory=self.xid_memory,
            peer_memory=self.peer_memory,
            usual=self.usual_levels,
            sensors=self.sensors,
        )
        self.frame = frame
        prs = propagation_risk(frame.gfs, amp, cfg.scores.exposure_scale_gpus)
        harm_ratio = self._harm(workload)
        self._harm_ratio = harm_ratio
        fresh = self._fresh()
        changes = self.classifier.step(
            now,
            ClassifierInputs(
                gfs=frame.gfs,
                gfs_recovery=frame.gfs_recovery,
                prs=prs,
                harm_ratio=harm_ratio,
                hard_fail=frame.hard_fail,
                floor=frame.floor,
                fresh=fresh,
            ),
        )
        self._exposure = None
        self.lemon_memory.record(now, topo, changes)
        runtime = self.store.reported(FAILURES_SIGNAL) if self.checkpoint_loop is not None else None
        self.new_failures = self.failures.count(
            now, newly_failed_nodes(topo, changes), workload.node_job, runtime
        )
        self.learner.record(now, self.exposure_per_s(), self.new_failures)
        self.gfs, self.prs, self.fae = frame.gfs, prs, amp.fae
        self._tolerated &= still_weighed(topo, self.classifier.state)
        fabric = self.fabric_pace.update(now, topo, workload, self.classifier.state, self.store)
        self.gfs_precursor = frame.gfs_precursor
        self.prs_precursor = propagation_risk(frame.gfs_precursor, amp, cfg.scores.exposure_scale_gpus)
        self._hazard, self._unit_hazard = None, None

        transitions: list[TransitionRecord] = []
        decisions: list[DecisionRecord] = []
        for gidx, before, after, reported, cleared_for in zip(
            changes.index.tolist(),
            changes.before.tolist(),
            changes.after.tolist(),
            changes.reported.tolist(),
            changes.cleared_for.tolist(),
            strict=True,
        ):
            if not reported:
                continue
            items = self._evidence_items(gidx)
            reason = self._reason(gidx, State(before), State(after), items, cleared_for)
            transitions.append(
                TransitionRecord(
                    ts=now,
                    entity=topo.ids[gidx],
                    from_state=State(before).label,
                    to_state=State(after).label,
                    gfs=float(frame.gfs[gidx]),
                    prs=float(prs[gidx]),
                    fae=float(amp.fae[gidx]),
                    reason=reason,
                    evidence=items,
                    epoch=self.epoch,
                )
            )
            previous = int(self._last_known[gidx]) if before == int(State.UNKNOWN) else before
            if after != int(State.UNKNOWN):
                self._last_known[gidx] = after
            decisions.extend(
                plan(
                    cfg,
                    topo,
                    workload,
                    now=now,
                    gidx=gidx,
                    state=State(after),
                    previous=State(previous),
                    reason=reason,
                    evidence=items,
                    mode=self.mode,
                    epoch=self.epoch,
                )
            )
        if self.replan_unwell:  # a replica that just took the leadership (``control.takeover``)
            decisions += replanned(cfg, topo, workload, self.classifier.state, self._evidence_items, now,
                                   set(changes.index.tolist()), self.mode, self.epoch)  # fmt: skip
            self.replan_unwell = False
        # Gray quarantines are valued against what they cost now; tolerated ones again every
        # revalue_s, and those over a GPU heading for its shutdown temperature every tick.
        trip = trip_in_s(cfg, frame.evidence, self.store)
        due = now >= self._revalue_at
        if due:  # parts in quarantine on idle nodes while jobs wait for nodes: kept in service
            decisions += keep_for_waiting(
                cfg, topo, workload, self.classifier.state, self.lemon_memory.lemons(), self.held_nodes,
                frame.floor, self.xid_memory.remembered_floor(), trip, changes.index, self._tolerated, now,
                self.mode, self.epoch)  # fmt: skip
        again = np.flatnonzero(self._tolerated)
        again = again if due else heating_under(topo, again, trip)
        self.islands.forget_recovered(self.classifier.state)
        islands = due and bool(self.islands.held)  # islands holding work idle: valued again (control.islands)
        if again.size or islands or any(valued(d) for d in decisions):
            view = EngineView(
                cfg, topo, workload, self.classifier.state, self.lemon_memory.lemons(), self._gpu_slowdown,
                self.gfs_precursor, self.prs_precursor, self._nominal_rate, self.learner.scale(), self.economics,
                self._save_s, self._criticality, self.store.reported(STEP_TIME_SIGNAL),
                forced_out(frame.floor), self.held_nodes, now, trip, fabric)  # fmt: skip
            taken = revalue(view, again, now, self.mode, self.epoch) if again.size else []
            self._tolerated[causes_of(topo, taken)] = False  # taken out: no longer kept in service
            taken += self.islands.revalue(view, now, self.mode, self.epoch) if islands else []
            if due and (again.size or islands):
                self._revalue_at = now + cfg.economics.revalue_s
            before = decisions  # this tick's own, valued below after the ones valued again
            decisions = contain(decisions, view) + taken
            self._tolerated[tolerated_by(topo, before, decisions)] = True  # a released island's too
            self.islands.note(view, decisions, now)
        self._exposure = None  # the loop above moved what each part last was
        if self.checkpoint_loop is not None:
            decisions.extend(self._checkpoint_tick(now, workload, self.checkpoint_loop).decisions)
        outcomes: list[OutcomeRecord] = []
        if self.economics is not None:
            steps, outcomes = self._escalate(now, workload, self.economics)
            decisions.extend(steps)
        self.failures.moved(now, topo, workload.node_job, decisions)  # restarts it causes: no failures
        watched = observations(
            self._scores(), now, changes.index, self._last_observed, cfg.engine.observe_every_s
        )
        if self.journal is not None:
            self.journal.append(transitions, decisions, watched, outcomes)
        return TickResult(
            now=now,
            transitions=tuple(transitions),
            decisions=tuple(decisions),
            ingest=ingest,
            notices=frame.notices,
            outcomes=tuple(outcomes),
        )

    def _checkpoint_tick(self, now: float, workload: Workload, loop: CheckpointLoop) -> LoopTick:
        topo = self.topology
        paths = storage_paths(self.config, topo, self.store, self.classifier.state)
        since = np.full(len(topo.jobs), np.nan)
        if self.catalog.get(SINCE_SIGNAL) is not None:
            age = self.store.current(SINCE_SIGNAL)[: len(topo.jobs)]
            since = age + (now - self.store.last_seen(SINCE_SIGNAL)[: len(topo.jobs)])
        job_states = self.classifier.state[topo.members[EntityKind.JOB]]
        hazard = self.job_hazard()
        tick = loop.step(now, workload, hazard, paths, since, job_states)
        self.economics = job_economics(self.config, topo, workload.job_gpus, tick.plans, tick.table,
                                       hazard.rate_per_s, since, now)  # fmt: skip
        n = len(topo.jobs)
        pick = np.maximum(tick.plans.choice, 0)
        self._save_s = np.where(tick.plans.choice >= 0, tick.table.blocking_s[np.arange(n), pick], np.nan)
        return tick

    def _escalate(
        self, now: float, workload: Workload, econ: JobEconomics
    ) -> tuple[list[DecisionRecord], list[OutcomeRecord]]:
        n = len(self.topology.jobs)
        # Only suspect (degraded) parts are priced; a healthy fleet skips the per-part rates.
        spares = None  # a swap or drain with no spare node leaves the job waiting (control.spares)
        if np.any(self.classifier.state == int(State.DEGRADED)):
            rates = part_rates(self.config.hazard, self.topology, self.gfs_precursor, self.prs_precursor)
            excess = (rates - self._nominal_rate) * self.learner.scale()
            spares = job_spares(self.topology, spares_by_class(self.config, self.topology, workload,
                                self.classifier.state, self.lemon_memory.lemons(), self.held_nodes, now))  # fmt: skip
        else:
            excess = np.zeros(self.topology.n_entities)
        stepping = np.zeros(n, dtype=bool)
        saved = np.full(n, np.nan)
        if self.catalog.get("job.step_time_s") is not None:
            stepping = self.store.fresh("job.step_time_s")[:n]
        if self.catalog.get("job.checkpoint_duration_s") is not None:
            saved = self.store.current("job.checkpoint_duration_s")[:n]
        return self.escalation.step(now, self.classifier.state, workload, excess, self._gpu_slowdown, econ,
                                    self._save_s, JobSignals(stepping, saved), spares)  # fmt: skip

    def _harm(self, workload: Workload) -> FloatArray:
        self._harm_text = {}
        if self.catalog.get(STEP_TIME_SIGNAL) is None:
            return np.zeros(self.topology.n_entities)
        groups, n_groups = by_node_type(workload.gpu_job, len(self.topology.jobs), self.topology.gpu_node,
                                        self.topology)  # fmt: skip
        pace = self.pace.sustained(self.store.now, self.store.current(STEP_TIME_SIGNAL),
                                   self.store.tick_samples(STEP_TIME_SIGNAL), groups, n_groups,
                                   self.config.economics.smooth_s)  # fmt: skip
        econ = self.economics
        weight = econ.weight if econ is not None else self._criticality
        found = rank_harm(self.config, self.topology, workload, pace, weight, self.classifier.state,
                          self.lemon_memory.lemons(), self.held_nodes, self.store.now,
                          econ.restart_s if econ is not None else None, self._save_s)  # fmt: skip
        self._gpu_slowdown, self._harm_text = found.slowdown, found.texts
        return found.ratio

    def _fresh(self) -> npt.NDArray[np.bool_]:
        topo = self.topology
        fresh = np.zeros(topo.n_entities, dtype=bool)
        for kind, names in self._fresh_signals.items():
            members = topo.members[kind]
            if members.size:
                fresh[members] = self.store.fresh_any(names, members.size)
        migs = topo.members[EntityKind.MIG]
        if migs.size:  # dcgm-exporter repeats the GPU's own fields on every instance: seen with it
            fresh[migs] |= fresh[topo.mig_gpus()]
        return fresh

    def _evidence_items(self, gidx: int) -> tuple[EvidenceItem, ...]:
        return evidence_items(self.frame, self.topology, self._harm_text, gidx)

    def _reason(
        self, gidx: int, before: State, after: State, items: tuple[EvidenceItem, ...], cleared_for: float
    ) -> str:
        return transition_reason(self.config, float(self.gfs[gidx]), self._harm_text.get(gidx),
                                 float(self._harm_ratio[gidx]), before, after, items, cleared_for)  # fmt: skip

    def view(self, eid: str) -> EntityView:
        """What the engine holds on one entity now (``seamguard explain``)."""
        return entity_view(self._scores(), eid)

    def _scores(self) -> Scores:
        st = self.classifier
        return Scores(self.topology, st.state, st.entered, self.gfs, self.prs, self.fae, self._evidence_items)
