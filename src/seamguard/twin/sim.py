"""One run of the twin: a scenario, a seed and a policy, stepped through simulated time.

Each step (one engine tick, ``scenario.tick_s``): the faults' effects and hard failures are
applied to the plant, the plant integrates its physics, the jobs run and are charged for every
second, people and schedulers do their part (repairs, prolog checks, triage), and, where the
policy observes, the twin renders telemetry, hands it to the policy and carries out the
actions it answers with. The same step order runs for every policy; only the policy differs.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from seamguard.economics.checkpoint_modes import Mode
from seamguard.model.entities import EntityKind
from seamguard.model.states import JobClass
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.twin.accounting import Bucket
from seamguard.twin.actions import Action, Verb
from seamguard.twin.effects import Effects, apply_faults
from seamguard.twin.faults import Fault, HardEffect
from seamguard.twin.fleet import FREE, Actor, Fleet, domain_nodes, node_faults
from seamguard.twin.jobs import Failure, InferenceJob, JobEvent, Memory, Phase, SavePlan, TrainingJob
from seamguard.twin.physics import storage as storage_model
from seamguard.twin.plant import Plant
from seamguard.twin.policies.base import Policy, save_ahead_s
from seamguard.twin.policies.binary import BinaryPolicy
from seamguard.twin.policies.oracle import OraclePolicy
from seamguard.twin.policies.seamguard import SeamguardPolicy
from seamguard.twin.results import DrainRecord, FaultOutcome, JobResult, RunResult
from seamguard.twin.telemetry import LINK_DOWN_BURST, Emitter, Snapshot
from seamguard.twin.windows import WindowPlan, plan_windows
from seamguard.twin.world import NOISE_STREAM, World

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
POLICIES: tuple[str, ...] = ("binary", "young-daly", "seamguard", "oracle")
# Run by name only, to measure what tiered saves are worth: young-daly saving tiered (at Daly's
# interval for the tiered save's blocking cost), and seamguard restricted to remote storage.
VARIANTS: tuple[str, ...] = ("young-daly-tiered", "seamguard-remote")
LATENCY_SAVE_EXPONENT = 0.5  # a save slows with the square root of the write-latency tail
TIMELINE_BINS = 240
FOCUS_MAX_NODES = 48
DRAINED_CODE, REPAIR_CODE = 7, 8
PACE_COST = 0.995  # below this pace a gray failure is costing something


def without_ground_truth(world: World) -> World:
    """The world as a policy may know it: layout, jobs, nominal rates; no fault records, no
    declared faults, no list of lemon nodes. Only the oracle is handed the real one."""
    return replace(
        world,
        scenario=world.scenario.model_copy(update={"faults": ()}),
        faults=(),
        lemons=np.zeros(0, dtype=np.int64),
    )


def make_policy(name: str, world: World, plant: Plant) -> Policy:
    if name == "oracle":
        return OraclePolicy(world, plant)
    pol = world.scenario.policies
    world = without_ground_truth(world)
    if name == "binary":
        b = pol.binary
        return BinaryPolicy(world, name=name, interval_s=b.checkpoint_interval_min * 60.0,
                            health_check_s=b.health_check_s, temp_limit_c=b.temp_limit_c,
                            heartbeat_limit_s=b.heartbeat_limit_s)  # fmt: skip
    if name in ("young-daly", "young-daly-tiered"):
        y = pol.young_daly
        mode = Mode.TIERED if name == "young-daly-tiered" else Mode.FULL
        return BinaryPolicy(world, name=name, interval_s=None, health_check_s=y.health_check_s,
                            temp_limit_c=y.temp_limit_c, heartbeat_limit_s=y.heartbeat_limit_s, mtbf_h=y.mtbf_h,
                            mode=mode)  # fmt: skip
    if name in ("seamguard", "seamguard-remote"):
        return SeamguardPolicy(world, dict(pol.seamguard.config), remote_only=name == "seamguard-remote")
    raise ValueError(f"unknown policy {name!r}; expected one of {', '.join(POLICIES + VARIANTS)}")


class Twin:
    def __init__(self, world: World, policy: str) -> None:
        self.world = world
        sc = world.scenario
        topo = world.topology
        self.topology = topo
        self.plant = Plant.build(sc.physics, topo, world.seed)
        self.policy = make_policy(policy, world, self.plant)
        self.policy_name = policy
        self.n_nodes, self.n_gpus = topo.count(EntityKind.NODE), topo.count(EntityKind.GPU)
        self.gpn = sc.cluster.gpus_per_node
        self.fleet = Fleet(
            topo, sc.operations.diagnose_h * 3600.0, np.full(self.n_nodes, FREE, dtype=np.int64)
        )
        self.jobs: list[TrainingJob | InferenceJob] = []
        for i, spec in enumerate(sc.jobs):
            start, end = float(world.job_start[i]), float(world.job_end[i])
            if spec.training:
                self.jobs.append(
                    TrainingJob(
                        i, spec, self.gpn, start, end, int(world.job_storage[i]), np.zeros(0, np.int64)
                    )
                )
            else:
                n = spec.nodes
                self.jobs.append(
                    InferenceJob(i, spec, self.gpn, start, end, np.full(n, -1, np.int64), np.zeros(n))
                )
        members = {k: topo.members[k] for k in EntityKind}
        self.emitter = Emitter(
            sc, self.plant, members, topo.gpu_node, topo.node_rack, topo.node_leaf, topo.rack_cdu, world.seed
        )
        self.faults = world.faults
        self._next_fault = 0
        self.active: list[Fault] = []
        self.cleared: set[int] = set()
        self.fired: set[int] = set()
        self.on_node = node_faults(world.faults, topo)
        self.broken_since = np.full(self.n_nodes, math.inf)
        self.node_down_since = np.full(self.n_nodes, math.inf)
        self.rerouted = np.zeros(self.n_nodes, bool)
        self._made = 0.0  # progress made this step, all jobs (for the goodput timeline)
        self._node_start = np.searchsorted(topo.gpu_node, np.arange(self.n_nodes))
        self.xids: list[tuple[float, int, int]] = []
        self.actions: Counter[str] = Counter()
        self.impact: dict[int, float] = {}
        self._placement_version = 0
        self._placement_cache: dict[str, list[str]] | None = None
        self.engine_ticks = 0
        self.hang_timeout_s = sc.operations.hang_timeout_s
        self._sdc_due: list[tuple[float, Fault]] = []
        n_steps = max(math.ceil((world.end - world.start) / world.tick_s), 1)
        self._bins = min(TIMELINE_BINS, n_steps)
        self._bin_prog = np.zeros(self._bins)
        self._bin_res = np.zeros(self._bins)
        self._bin_kept = np.full(self._bins, np.nan)  # useful work so far, all jobs, at each bin's end
        self._focus_title, self._focus = self._focus_domain()
        self._focus_states = np.zeros((self._focus.size, self._bins), dtype=np.int8)
        obs = sc.observation
        self.windowed = obs.mode == "windows"
        self.plan: WindowPlan = plan_windows(world)
        self._lead = save_ahead_s(world)
        self._next_window = 0  # position in plan.by_open
        self._watching: list[int] = []  # faults whose window is open
        self.cleared_at: dict[int, float] = {}
        self._held = np.zeros(world.n_cells, bool)  # cells kept open by the policy's judgement
        self._cell_nodes = [
            np.flatnonzero(world.node_cell == c).astype(np.int64) for c in range(world.n_cells)
        ]
        self._quiet_s = max(obs.quiet_step_min * 60.0, world.tick_s)
        self._job_times = np.unique(np.concatenate([world.job_start, world.job_end]))
        self._now = 0.0  # the time of the policy's current observation
        self.observed_node_s = 0.0  # node-seconds a policy saw telemetry for (windows mode: the cells)

    # ---- JobEnv -----------------------------------------------------------------------------
    def _streams(self, sto: int, exclude: int, t: float) -> float:
        """Transfers on backend ``sto`` now, counting the asking job's own: saves and restores that
        block, and the background persists of tiered saves."""
        busy = 0
        for j in self.jobs:
            if isinstance(j, TrainingJob) and j.index != exclude:
                busy += (j.io_storage == sto) + (j.persisting(t) == sto)
        return float(busy + 1)

    def save_plan(self, job: TrainingJob, t: float) -> SavePlan:
        """The policy's choice of mode and target, priced on the cluster as it is now."""
        mode, target = self.policy.checkpoint_choice(job)
        sp = self.world.scenario.physics.storage
        size = job.spec.checkpoint_gb
        blocking = storage_model.memory_copy_seconds(sp, size, job.gpus, job.spec.nodes)
        if mode in (Mode.IN_MEMORY, Mode.TIERED) and math.isfinite(blocking):
            memory = Memory.PEER if sp.peer_gbps_per_node > 0 else Memory.HOST
            if mode is Mode.IN_MEMORY:
                return SavePlan(blocking, math.inf, memory, -1)
            job.chain = 1  # a full copy reaches storage: the base of any incremental save to come
            persist = (
                self._transfer_seconds(job, target, size, sp.write_gbps, write=True, t=t) - sp.overhead_s
            )
            return SavePlan(blocking, persist, memory, target, size)
        if mode in (Mode.IN_MEMORY, Mode.TIERED):
            mode = Mode.FULL  # no room in host memory: save to storage
        deltas = job.chain % sp.incremental_every if mode is Mode.INCREMENTAL else 0
        job.chain = deltas + 1
        written = size * (sp.changed_share if deltas else 1.0)
        seconds = self._transfer_seconds(job, target, written, sp.write_gbps, write=True, t=t)
        return SavePlan(seconds, 0.0, Memory.NONE, target, size * (1.0 + sp.changed_share * deltas))

    def restore_seconds(self, job: TrainingJob, t: float) -> float:
        sp = self.world.scenario.physics.storage
        src = job.restore_from
        if src is None:
            return sp.overhead_s  # nothing saved yet: start from scratch
        size = job.spec.checkpoint_gb
        if src.memory is not Memory.NONE:
            return storage_model.memory_restore_seconds(sp, size, job.gpus, job.spec.nodes,
                                                        peer=src.memory is Memory.PEER)  # fmt: skip
        read = src.restore_gb if math.isfinite(src.restore_gb) else size
        return self._transfer_seconds(job, src.storage, read, sp.read_gbps, write=False, t=t)

    def _transfer_seconds(
        self, job: TrainingJob, sto: int, size_gb: float, gbps: float, *, write: bool, t: float
    ) -> float:
        """``size_gb`` through backend ``sto``'s bandwidth, shared with the other transfers there
        now, slowed by congestion and by the latency tail."""
        sp = self.world.scenario.physics.storage
        c = self._streams(sto, job.index, t)
        latency = self.plant.storage_write[sto] if write else self.plant.storage_read[sto]
        tail = float(latency) ** LATENCY_SAVE_EXPONENT
        agg = (
            gbps
            * float(self.plant.storage_throughput[sto])
            * float(storage_model.congestion(sp, np.array(c)))
        )
        return storage_model.transfer_seconds(size_gb, agg / tail, c, sp.overhead_s)

    def interval_s(self, job: TrainingJob) -> float:
        return self.policy.interval_s(job)

    # ---- FleetView --------------------------------------------------------------------------
    def job_of(self, node: int) -> int:
        return int(self.fleet.node_job[node])

    def is_training(self, job: int) -> bool:
        return isinstance(self.jobs[job], TrainingJob)

    def is_running(self, job: int) -> bool:
        j = self.jobs[job]
        return (
            j.phase in (Phase.RUNNING, Phase.SAVING, Phase.STARTING, Phase.RESTORING)
            if isinstance(j, TrainingJob)
            else j.phase is Phase.RUNNING
        )

    def can_replace(self, job: int, count: int, admission: IntArray) -> bool:
        return self.fleet.pick(count, admission, self._usable()) is not None

    def placement(self) -> dict[str, list[str]]:
        if self._placement_cache is None:
            names = self.topology.names[EntityKind.NODE]
            out: dict[str, list[str]] = {}
            for j in self.jobs:
                nodes = self._job_nodes(j)
                if nodes.size:
                    out[j.spec.name] = [names[n] for n in nodes.tolist()]
            self._placement_cache = out
        return self._placement_cache

    def placement_version(self) -> int:
        return self._placement_version

    def durable_age(self, job: int) -> float:
        """What a job's runtime reports: seconds since its newest copy that would survive (NaN:
        not a training job)."""
        j = self.jobs[job]
        return j.durable_age(self._now) if isinstance(j, TrainingJob) else math.nan

    def _placed(self) -> None:
        self._placement_version += 1
        self._placement_cache = None

    @staticmethod
    def _job_nodes(j: TrainingJob | InferenceJob) -> IntArray:
        if j.phase is Phase.DONE:  # a finished job's nodes are the scheduler's again
            return np.zeros(0, np.int64)
        if isinstance(j, TrainingJob):
            return j.nodes if j.holds_nodes or j.phase is Phase.RECOVERING else np.zeros(0, np.int64)
        return j.slot_node[j.slot_node >= 0]

    # ---- state queries ------------------------------------------------------------------------
    def _broken(self) -> npt.NDArray[np.bool_]:
        dead = np.zeros(self.n_nodes, bool)
        np.logical_or.at(dead, self.topology.gpu_node, self.plant.gpu_dead)
        return dead | self.plant.node_down | self.plant.link_down

    def _usable(self) -> npt.NDArray[np.bool_]:
        """What a prolog health check passes: no dead GPU, host up, link up."""
        return ~self._broken()

    def _affected(self, node: int, t: float, broken: npt.NDArray[np.bool_] | None = None) -> bool:
        """Is anything really wrong with the node or its domain now, or about to be (a fault due
        within a save's time, which is how early the oracle acts)? The false-quarantine test."""
        for fid in self.on_node[node]:
            f = self.faults[fid]
            if not f.benign and f.onset <= t + self._lead and fid not in self.cleared:
                return True
        for f in self.active:
            if (
                f.spec.facility
                and not f.benign
                and f.onset <= t < f.end
                and node in domain_nodes(self.topology, f)
            ):
                return True
        return bool((self._broken() if broken is None else broken)[node])

    # ---- the loop ---------------------------------------------------------------------------
    def run(self, on_step: Callable[[float], None] | None = None) -> RunResult:
        wall = time.perf_counter()
        w = self.world
        for j in self.jobs:
            if j.start <= w.start:
                self._launch_initial(j, w.start)
        t = w.start
        while t < w.end - 1e-9:
            t1 = self._step_end(t)
            k = round((t1 - w.start) / w.tick_s) - 1  # the tick's index keys its telemetry noise
            self._step(t, t1, k)
            t = t1
            if on_step is not None:
                on_step(t)
        for j in self.jobs:
            if j.phase is not Phase.DONE:
                self._finish_job(j, w.end)
        self._bin_kept[-1] = self._kept()  # the final checkpoint is free: unsaved work counts
        return self._result(time.perf_counter() - wall)

    def _kept(self) -> float:
        """Useful work so far, all jobs: committed, plus what a training job has done since its last
        save (still useful unless a failure rolls it back, which then shows as a drop)."""
        pending = sum(float(j.pending[0]) for j in self.jobs if isinstance(j, TrainingJob))
        return float(sum(j.buckets[Bucket.PRODUCTIVE] for j in self.jobs)) + pending

    def _launch_initial(self, j: TrainingJob | InferenceJob, t: float) -> None:
        nodes = self.world.initial_nodes[j.index]
        self.fleet.node_job[nodes] = j.index
        if isinstance(j, TrainingJob):
            j.launch(t, nodes, self, fresh=True)
        else:
            for slot, n in enumerate(nodes.tolist()):
                j.fill(slot, n, t, fresh=True)
            j.phase = Phase.RUNNING
        self._placed()

    # ---- time steps ---------------------------------------------------------------------------
    def _step_end(self, t: float) -> float:
        """One tick while anything is watched (always in ``full`` mode); between windows a quiet
        step up to ``quiet_step_min``, cut at the next moment something is due, on the tick grid."""
        w = self.world
        tick = w.tick_s
        if not self.windowed or self._update_windows(t):
            return min(t + tick, w.end)
        due = min(t + self._quiet_s, self._next_due(t))
        grid = w.start + math.ceil((due - w.start) / tick - 1e-9) * tick
        return min(max(grid, t + tick), w.end)

    def _update_windows(self, t: float) -> bool:
        """Open the windows due by the end of the next tick, close the finished ones; True if any
        is open or the policy holds a cell."""
        plan, order = self.plan, self.plan.by_open
        horizon = t + self.world.tick_s
        while self._next_window < order.size and plan.open_t[order[self._next_window]] <= horizon:
            self._watching.append(int(order[self._next_window]))
            self._next_window += 1
        cool = plan.cooldown_s
        self._watching = [
            fid for fid in self._watching
            if t < min(float(plan.close_t[fid]), self.cleared_at.get(fid, math.inf)) + cool
        ]  # fmt: skip
        return bool(self._watching) or bool(self._held.any())

    def _next_due(self, t: float) -> float:
        """The next moment something happens that a step must end at: a window opens, a node comes
        back from repair, an operator's triage is due, a job starts or ends, corruption is found."""
        ops = self.world.scenario.operations
        times = [self.plan.next_open(t), float(self.fleet.repair_until.min(initial=math.inf))]
        loose = ~self.fleet.drained & ~self.fleet.in_repair
        if loose.any():
            times.append(float(self.broken_since[loose].min()) + ops.triage_h * 3600.0)
        i = int(np.searchsorted(self._job_times, t, side="right"))
        if i < self._job_times.size:
            times.append(float(self._job_times[i]))
        times.extend(due for due, _ in self._sdc_due)
        return min(times)

    def _step(self, t0: float, t1: float, k: int) -> None:
        dt = t1 - t0
        self._activate(t1)
        events = self._hard_events(t0, t1)
        fx = apply_faults(self._fresh_effects(), self.active, t1, self.world.scenario.physics)
        tripped = self.plant.advance(t1, dt, fx, self._load(), self.rerouted)
        for g in tripped.tolist():
            events.append(self._gpu_dies(t1, g, 79))
        self._run_jobs(t0, t1, events)
        self._track_impact(t1)
        self._fleet_ops(t1)
        batches = self._observe(t1, k, fx)
        if batches is not None:
            self.engine_ticks += 1
            self._now = t1
            self._apply(t1, self.policy.observe(t1, batches, self))
            if self.windowed:
                self._settle(batches)
        self._schedule(t1)
        self.fleet.send_free_drained_to_repair(t1, self._repair_seconds(t1))
        self._sample(t0, t1, dt)

    def _fresh_effects(self) -> Effects:
        topo = self.topology
        return Effects.none(topo.count(EntityKind.CDU), topo.count(EntityKind.RACK), self.n_gpus, self.n_nodes,
                            topo.count(EntityKind.SWITCH), topo.count(EntityKind.STORAGE))  # fmt: skip

    def _activate(self, t1: float) -> None:
        while self._next_fault < len(self.faults) and self.faults[self._next_fault].onset <= t1:
            self.active.append(self.faults[self._next_fault])
            self._next_fault += 1
        self.active = [
            f for f in self.active if f.fid not in self.cleared and (t1 < f.end or not f.spec.facility)
        ]

    def _load(self) -> FloatArray:
        load = np.zeros(self.n_gpus)
        busy_nodes: list[IntArray] = []
        for j in self.jobs:
            if isinstance(j, TrainingJob):
                if j.busy:
                    busy_nodes.append(j.nodes)
            elif j.phase is Phase.RUNNING:
                busy_nodes.append(j.slot_node[j.slot_node >= 0])
        if busy_nodes:
            nodes = np.concatenate(busy_nodes)
            busy = np.zeros(self.n_nodes, bool)
            busy[nodes] = True
            load[busy[self.topology.gpu_node]] = 1.0
        load[self.plant.gpu_dead] = 0.0
        return load

    # ---- hard failures ------------------------------------------------------------------------
    def _hard_events(self, t0: float, t1: float) -> list[tuple[float, str, int, JobEvent | None]]:
        """Hard failures in (t0, t1]: (time, what, node or job, job event) in time order."""
        out: list[tuple[float, str, int, JobEvent | None]] = []
        ops = self.world.scenario.operations
        for f in self.active:
            if f.fid in self.fired or not (t0 < f.hard_at <= t1):
                continue
            self.fired.add(f.fid)
            eff = f.spec.hard
            if eff is HardEffect.GPU:
                out.append(self._gpu_dies(f.hard_at, f.local, f.xid or 79))
            elif eff is HardEffect.NODE:
                self.plant.node_down[f.local] = True
                self.node_down_since[f.local] = f.hard_at
                self.broken_since[f.local] = min(self.broken_since[f.local], f.hard_at)
                out.append((f.hard_at, "node", f.local, JobEvent(f.hard_at, Failure.CRASH, host_lost=True)))
            elif eff is HardEffect.LINK:
                self.plant.link_down[f.local] = True
                self.plant.link_errors[f.local] += LINK_DOWN_BURST
                self.plant.retransmits[f.local] += LINK_DOWN_BURST
                self.broken_since[f.local] = min(self.broken_since[f.local], f.hard_at)
                out.append((f.hard_at, "node", f.local, JobEvent(f.hard_at, Failure.CRASH)))
            elif eff in (HardEffect.JOB_CRASH, HardEffect.JOB_HANG):
                fail = Failure.HANG if eff is HardEffect.JOB_HANG else Failure.CRASH
                out.append((f.hard_at, "job", f.local, JobEvent(f.hard_at, fail)))
            elif eff is HardEffect.SDC:
                self._sdc_due.append((f.onset + ops.sdc_detect_h * 3600.0, f))
        for due, f in list(self._sdc_due):
            if t0 < due <= t1:
                self._sdc_due.remove((due, f))
                node = int(self.topology.gpu_node[f.local])
                self.fleet.drain(
                    due, node, Actor.OPERATOR, False, "silent data corruption traced to this node"
                )
                out.append((due, "node", node, JobEvent(due, Failure.SDC, since=f.onset)))
        out.sort(key=lambda e: e[0])
        return out

    def _gpu_dies(self, t: float, gpu: int, xid: int) -> tuple[float, str, int, JobEvent | None]:
        self.plant.gpu_dead[gpu] = True
        if xid == 48:
            self.plant.dbe[gpu] += 1.0
        self.xids.append((t, gpu, xid))
        node = int(self.topology.gpu_node[gpu])
        self.broken_since[node] = min(self.broken_since[node], t)
        return (t, "node", node, JobEvent(t, Failure.CRASH))

    # ---- jobs -----------------------------------------------------------------------------------
    def _run_jobs(self, t0: float, t1: float, events: list[tuple[float, str, int, JobEvent | None]]) -> None:
        per_job: dict[int, list[JobEvent]] = {}
        for t, what, idx, ev in events:
            if ev is None:
                continue
            if what == "job":
                per_job.setdefault(idx, []).append(ev)
                continue
            owner = int(self.fleet.node_job[idx])
            if owner < 0:
                continue
            job = self.jobs[owner]
            if isinstance(job, TrainingJob):
                if job.holds_nodes:
                    per_job.setdefault(owner, []).append(ev)
            else:
                self._release_replicas(job, idx, t, graceful=False)
        rank, rank_clean, comm = self.plant.rank_factor, self.plant.rank_factor_clean, self.plant.comm
        node_rank = node_clean = None
        made_before = sum(j.made for j in self.jobs)
        for j in self.jobs:
            if isinstance(j, TrainingJob):
                pace = 1.0
                if j.busy and j.nodes.size:
                    gpus = self._gpus_of(j.nodes)
                    cs = j.spec.comm_share
                    actual = (1 - cs) * float(rank[gpus].max()) + cs * float(comm[j.nodes].max())
                    healthy = (1 - cs) * float(rank_clean[gpus].max()) + cs
                    pace = min(healthy / actual, 1.0)
                j.advance(t0, t1, pace, per_job.get(j.index, []), self)
            else:
                if node_rank is None or node_clean is None:
                    node_rank, node_clean = self._node_max(rank), self._node_max(rank_clean)
                nodes = np.maximum(j.slot_node, 0)
                j.advance(t0, t1, np.minimum(node_clean[nodes] / node_rank[nodes], 1.0))
        self._made = sum(j.made for j in self.jobs) - made_before

    def _node_max(self, per_gpu: FloatArray) -> FloatArray:
        """Per node, the maximum over its GPUs (GPUs are numbered node by node)."""
        out = np.ones(self.n_nodes)
        has = np.bincount(self.topology.gpu_node, minlength=self.n_nodes) > 0
        if per_gpu.size:
            out[has] = np.maximum.reduceat(per_gpu, self._node_start[has])
        return out

    def _regular(self) -> bool:
        return self.n_gpus == self.n_nodes * self.gpn

    def _gpus_of(self, nodes: IntArray) -> IntArray:
        if self._regular():
            return (nodes[:, None] * self.gpn + np.arange(self.gpn)).ravel()
        return np.flatnonzero(np.isin(self.topology.gpu_node, nodes)).astype(np.int64)

    def _finish_job(self, j: TrainingJob | InferenceJob, t: float) -> None:
        j.finish()
        nodes = np.flatnonzero(self.fleet.node_job == j.index)
        self.fleet.node_job[nodes] = FREE
        self._placed()

    def _track_impact(self, t: float) -> None:
        """The first moment each gray fault costs something: a job it touches slows, or a save does."""
        for f in self.active:
            if f.fid in self.impact or f.benign or f.onset > t:
                continue
            if f.spec.target is EntityKind.STORAGE:
                write = float(self.plant.storage_write[f.local]) ** LATENCY_SAVE_EXPONENT
                if write / max(float(self.plant.storage_throughput[f.local]), 1e-9) > 1.5:
                    self.impact[f.fid] = t
                continue
            nodes = domain_nodes(self.topology, f)
            if nodes.size == 0:
                continue
            gpus = self._gpus_of(nodes)
            slow = (self.plant.rank_factor[gpus] / self.plant.rank_factor_clean[gpus]).max()
            slow = max(slow, float(self.plant.comm[nodes].max()))
            busy = bool(self.plant.load[gpus].any())
            if busy and 1.0 / slow < PACE_COST:
                self.impact[f.fid] = t

    # ---- people and schedulers --------------------------------------------------------------------
    def _fleet_ops(self, t: float) -> None:
        for j in self.jobs:
            if j.phase is not Phase.DONE and t >= j.end:
                self._finish_job(j, t)
            elif j.phase is Phase.PENDING and t >= j.start:
                if isinstance(j, TrainingJob):
                    j.phase = Phase.RECOVERING
                    j.nodes = np.zeros(0, np.int64)
                else:
                    j.phase = Phase.RUNNING
        back = self.fleet.returns(t)
        if back.size:
            self._repair(t, back)
            self._now = t
            self._apply(t, self.policy.returned(t, back, self))
            if self.windowed:  # a node the policy still holds keeps its cell watched until released
                for cell in np.unique(self.world.node_cell[back]).tolist():
                    self._held[cell] = self._held[cell] or bool(self.policy.unsettled_nodes(cell).size)
        triage = self.world.scenario.operations.triage_h * 3600.0
        late = np.flatnonzero((t - self.broken_since >= triage) & ~self.fleet.drained & ~self.fleet.in_repair)
        for n in late.tolist():
            self.fleet.drain(t, n, Actor.OPERATOR, False, "found broken by hand")

    def _repair_seconds(self, t: float) -> FloatArray:
        out = np.zeros(self.n_nodes)
        for n in np.flatnonzero(self.fleet.drained & ~self.fleet.in_repair).tolist():
            faults = [
                self.faults[fid]
                for fid in self.on_node[n]
                if fid not in self.cleared and self.faults[fid].onset <= t
            ]
            broken = bool(self._broken()[n])
            if faults:
                out[n] = max(f.repair_s for f in faults)
            elif broken:
                out[n] = self.world.scenario.operations.repair_h * 3600.0
        return out

    def _repair(self, t: float, nodes: IntArray) -> None:
        for n in nodes.tolist():
            for fid in self.on_node[n]:
                if self.faults[fid].onset <= t:
                    self.cleared.add(fid)
                    self.cleared_at.setdefault(fid, t)
            gpus = self._gpus_of(np.array([n], np.int64))
            self.plant.gpu_dead[gpus] = False
            for counter in (self.plant.sbe, self.plant.dbe, self.plant.nvlink, self.plant.pcie):
                counter[gpus] = 0.0  # a replaced part or a reloaded driver starts its counters afresh
            self.plant.node_down[n] = False
            self.plant.link_down[n] = False
            self.rerouted[n] = False
            self.broken_since[n] = math.inf
            self.node_down_since[n] = math.inf
        self.active = [f for f in self.active if f.fid not in self.cleared]

    def _schedule(self, t: float) -> None:
        usable = self._usable()
        for j in self.jobs:
            if isinstance(j, TrainingJob):
                if j.phase is Phase.RECOVERING:
                    self._place_training(j, t, usable)
            elif j.phase is Phase.RUNNING:
                self._place_slots(j, t, usable)

    def _admission(self, job_class: JobClass) -> IntArray:
        return self.policy.admission(job_class)

    def _place_training(self, j: TrainingJob, t: float, usable: npt.NDArray[np.bool_]) -> None:
        fresh = j.restarts == 0 and j.saves == 0 and j.nodes.size == 0
        old = j.nodes
        stays = ~np.isin(old, list(j.replace)) & ~self.fleet.drained[old] & usable[old]
        for n in old[~usable[old] & ~self.fleet.drained[old]].tolist():
            self.fleet.drain(t, n, Actor.PROLOG, False, "failed the prolog health check")
        keep, released = old[stays], old[~stays]
        need = j.spec.nodes - keep.size
        picked = (
            self.fleet.pick(need, self._admission(j.spec.job_class), usable)
            if need > 0
            else np.zeros(0, np.int64)
        )
        self.fleet.node_job[released] = FREE
        j.nodes = keep.astype(np.int64)
        if picked is None:
            j.wait_bucket = self._wait_bucket(need, usable, t)
            self.fleet.node_job[j.nodes] = j.index
            if released.size:
                self._placed()
            return
        nodes = np.sort(np.concatenate([j.nodes, picked])).astype(np.int64)
        self.fleet.node_job[nodes] = j.index
        j.launch(t, nodes, self, fresh=fresh)
        self._placed()

    def _wait_bucket(self, need: int, usable: npt.NDArray[np.bool_], t: float) -> Bucket:
        """Charge the wait to quarantine when capacity the policy holds with nothing wrong would fill it."""
        free = self.fleet.free() & usable
        denied_fine = free & (self._admission(JobClass.SYNC_TRAINING) >= 2)
        broken = ~usable
        for n in np.flatnonzero(denied_fine).tolist():
            denied_fine[n] = not self._affected(n, t, broken)
        held = (self.fleet.held_false & (self.fleet.node_job == FREE)) | denied_fine
        available = int((free & ~denied_fine).sum())
        return Bucket.QUARANTINE_IDLE if available + int(held.sum()) >= need else Bucket.PLACEMENT_WAIT

    def _place_slots(self, j: InferenceJob, t: float, usable: npt.NDArray[np.bool_]) -> None:
        changed = False
        for s in range(j.slot_node.size):
            n = int(j.slot_node[s])
            if n >= 0 and not usable[n]:
                j.lose(s, t)
                self.fleet.node_job[n] = FREE
                changed = True
        empty = np.flatnonzero(j.slot_node < 0)
        if empty.size:
            adm = self._admission(j.spec.job_class)
            avail = np.flatnonzero(self.fleet.free() & usable & (adm < 2))
            avail = avail[np.lexsort((avail, adm[avail]))][: empty.size]
            if avail.size < empty.size:
                j.wait_bucket = self._wait_bucket(int(empty.size), usable, t)
            for s, n in zip(empty.tolist(), avail.tolist(), strict=False):
                j.fill(s, n, t, fresh=False)
                self.fleet.node_job[n] = j.index
                changed = True
        if changed:
            self._placed()

    # ---- observation and actions ----------------------------------------------------------------
    def _observe(self, t: float, k: int, fx: Effects) -> list[tuple[int, TelemetryBatch]] | None:
        """Telemetry for the policy: the whole fleet in ``full`` mode; in ``windows`` mode the open
        cells (None between windows: the policy is not called)."""
        if not self.windowed:
            cells = np.zeros(1, np.int64)
        elif self._watching or self._held.any():
            open_cells = [self.plan.cells[fid] for fid in self._watching]
            open_cells.append(np.flatnonzero(self._held))
            cells = np.unique(np.concatenate(open_cells)).astype(np.int64)
        else:
            return None
        snap = self._snapshot(t, fx)
        rng = np.random.default_rng([self.world.seed, NOISE_STREAM, k])
        out = []
        for cell in cells.tolist():
            nodes = self._cell_nodes[cell]
            scope = self.emitter.scope(cell, nodes)
            present = np.zeros(len(self.jobs), bool)
            owners = self.fleet.node_job[nodes]
            present[owners[owners >= 0]] = True
            out.append(
                (
                    cell,
                    self.emitter.emit(
                        snap, scope, present if self.windowed else np.ones(len(self.jobs), bool), rng
                    ),
                )
            )
            self.observed_node_s += nodes.size * self.world.tick_s
        return out

    def _settle(self, observed: list[tuple[int, TelemetryBatch]]) -> None:
        """A cell stays open while the policy holds an in-service node there in a non-healthy state."""
        in_service = ~self.fleet.drained & ~self.fleet.in_repair
        for cell, _ in observed:
            nodes = self.policy.unsettled_nodes(cell)
            self._held[cell] = bool(in_service[nodes].any()) if nodes.size else False

    def _snapshot(self, t: float, fx: Effects) -> Snapshot:
        busy = self.plant.load > 0
        rank_step = np.full(self.n_gpus, np.nan)
        job_step = np.full(len(self.jobs), np.nan)
        job_ckpt = np.full(len(self.jobs), np.nan)
        job_since = np.full(len(self.jobs), np.nan)
        streams = np.zeros(self.topology.count(EntityKind.STORAGE))
        for j in self.jobs:
            if isinstance(j, TrainingJob):
                for sto in (j.io_storage, j.persisting(t)):
                    if sto >= 0:
                        streams[sto] += 1
                if j.phase is Phase.RUNNING and j.nodes.size:
                    gpus = self._gpus_of(j.nodes)
                    rank_step[gpus] = j.spec.step_s * self.plant.rank_factor[gpus]
                    cs = j.spec.comm_share
                    job_step[j.index] = j.spec.step_s * (
                        (1 - cs) * rank_step[gpus].max() / j.spec.step_s
                        + cs * float(self.plant.comm[j.nodes].max())
                    )
                if np.isfinite(j.last_save_s):
                    job_ckpt[j.index] = j.last_save_s
                if j.phase in (Phase.RUNNING, Phase.SAVING):
                    job_since[j.index] = j.durable_age(t)
            elif j.phase is Phase.RUNNING:
                up = j.slot_node[(j.slot_node >= 0) & (j.slot_ready <= t)]
                if up.size:
                    gpus = self._gpus_of(up)
                    # Inference servers export per-GPU iteration latency too (vLLM, Triton).
                    rank_step[gpus] = j.spec.step_s * self.plant.rank_factor[gpus]
                    job_step[j.index] = j.spec.step_s * float(self.plant.rank_factor[gpus].mean())
        hb = np.where(self.plant.node_down, t - self.node_down_since, np.nan)
        recent = [(ts, g, c) for ts, g, c in self.xids if t - self.world.tick_s < ts <= t]
        self.xids = [x for x in self.xids if x[0] > t - self.world.tick_s]
        return Snapshot(
            t=t, busy=busy, rank_step_s=rank_step, offline=self.fleet.in_repair.copy(), silent=fx.node_silent,
            heartbeat_age=hb, storage_streams=streams, job_step_s=job_step, job_checkpoint_s=job_ckpt, job_since_s=job_since,
            xid_gpu=np.array([x[1] for x in recent], np.int64), xid_code=np.array([x[2] for x in recent], np.int64),
            xid_t=np.array([x[0] for x in recent]),
        )  # fmt: skip

    def _node_index(self, eid: str) -> int | None:
        kind, _, name = eid.partition("/")
        gidx = self.topology.lookup(f"node/{name}" if kind in ("node", "link") else eid)
        if gidx is None:
            return None
        if kind == "gpu":
            return int(self.topology.gpu_node[int(self.topology.local[gidx])])
        return int(self.topology.local[gidx]) if kind in ("node", "link") else None

    def _apply(self, t: float, actions: list[Action]) -> None:
        for a in actions:
            self.actions[a.verb.value] += 1
            if a.verb in (Verb.DRAIN, Verb.EVICT, Verb.SWAP):
                node = self._node_index(a.target)
                if node is not None:
                    self._remove(t, node, a)
            elif a.verb is Verb.CHECKPOINT:
                gidx = self.topology.lookup(a.target)
                if gidx is not None:
                    job = self.jobs[int(self.topology.local[gidx])]
                    if isinstance(job, TrainingJob):
                        job.checkpoint_now(t, self, self.world.scenario.operations.min_checkpoint_gap_s)
            elif a.verb in (Verb.REROUTE, Verb.RESTORE_ROUTE):
                node = self._node_index(a.target)
                if node is not None:
                    self.rerouted[node] = a.verb is Verb.REROUTE
            elif a.verb in (Verb.SWITCH_STORAGE, Verb.RESTORE_STORAGE):
                self._storage(a)
            elif a.verb is Verb.ISLAND:
                self._island(t, a)

    def _remove(self, t: float, node: int, a: Action) -> None:
        if a.verb is not Verb.SWAP:
            self.fleet.drain(t, node, Actor.POLICY, not self._affected(node, t), a.reason)
        if a.verb is Verb.DRAIN:
            return
        j = int(self.fleet.node_job[node])
        if j < 0:
            return
        job = self.jobs[j]
        if isinstance(job, TrainingJob):
            if job.phase is not Phase.DONE:
                job.restart_elsewhere(t, {node}, self)
        else:
            self._release_replicas(job, node, t, graceful=True)

    def _release_replicas(self, job: InferenceJob, node: int, t: float, *, graceful: bool) -> None:
        """Free the node of the job's replicas on it: an eviction moves them off with nothing lost,
        a failure loses the batch in flight."""
        for slot in np.flatnonzero(job.slot_node == node).tolist():
            if graceful:
                job.vacate(slot)
            else:
                job.lose(slot, t)
        self.fleet.node_job[node] = FREE
        self._placed()

    def _storage(self, a: Action) -> None:
        gidx = self.topology.lookup(a.target)
        if gidx is None:
            return
        sto = int(self.topology.local[gidx])
        for j in self.jobs:
            if not isinstance(j, TrainingJob):
                continue
            primary, fallback = int(self.world.job_storage[j.index]), int(self.world.job_fallback[j.index])
            if a.verb is Verb.SWITCH_STORAGE and j.storage == sto and fallback >= 0 and fallback != sto:
                j.storage = fallback
            elif a.verb is Verb.RESTORE_STORAGE and primary == sto and j.storage != sto:
                j.storage = primary

    def _island(self, t: float, a: Action) -> None:
        gidx = self.topology.lookup(a.target)
        if gidx is None:
            return
        kind = self.topology.kind_of(gidx)
        local = int(self.topology.local[gidx])
        topo = self.topology
        if kind is EntityKind.RACK:
            dom = np.flatnonzero(topo.node_rack == local)
        elif kind is EntityKind.CDU:
            dom = np.flatnonzero(topo.rack_cdu[topo.node_rack] == local)
        elif kind is EntityKind.SWITCH:
            dom = np.flatnonzero(topo.node_leaf == local)
        else:
            return
        usable = self._usable()
        for j in self.jobs:
            if isinstance(j, InferenceJob):
                self._move_replicas(t, j, dom, usable)
                continue
            if not j.holds_nodes:
                continue
            inside = np.intersect1d(j.nodes, dom)
            if inside.size == 0:
                continue
            adm = self._admission(j.spec.job_class).copy()
            adm[dom] = 2
            if self.fleet.pick(int(inside.size), adm, usable) is not None:
                j.restart_elsewhere(t, set(inside.tolist()), self)
            else:
                j.checkpoint_now(t, self, self.world.scenario.operations.min_checkpoint_gap_s)

    def _move_replicas(self, t: float, j: InferenceJob, dom: IntArray, usable: npt.NDArray[np.bool_]) -> None:
        """Move the job's replicas out of the domain, as many as free admitted nodes outside it can
        take; the scheduler restarts them there (``slot_restart_s``)."""
        if j.phase is not Phase.RUNNING:
            return
        inside = np.intersect1d(j.slot_node[j.slot_node >= 0], dom)
        adm = self._admission(j.spec.job_class).copy()
        adm[dom] = 2
        room = int((self.fleet.free() & usable & (adm < 2)).sum())
        for n in inside[:room].tolist():
            self._release_replicas(j, n, t, graceful=True)

    # ---- timeline and result ------------------------------------------------------------------------
    def _sample(self, t0: float, t1: float, dt: float) -> None:
        w = self.world
        b = min(int((t0 - w.start) / (w.end - w.start) * self._bins), self._bins - 1)
        reserved = sum(j.gpus for j in self.jobs if j.start <= t0 < j.end)
        self._bin_res[b] += reserved * dt
        self._bin_prog[b] += self._made
        nb = min(int((t1 - w.start) / (w.end - w.start) * self._bins), self._bins - 1)
        if nb != b or t1 >= w.end:
            self._bin_kept[b] = self._kept()
        if self._focus.size and (nb != b or t1 >= w.end):
            st = self.policy.node_states()[self._focus].astype(np.int8)
            st[self.fleet.drained[self._focus]] = DRAINED_CODE
            st[self.fleet.in_repair[self._focus]] = REPAIR_CODE
            self._focus_states[:, b] = st

    def _focus_domain(self) -> tuple[str, IntArray]:
        for f in self.faults:
            if f.source == "declared" and not f.benign:
                nodes = domain_nodes(self.topology, f)
                if nodes.size:
                    return f"{f.kind} on {f.target}", nodes[:FOCUS_MAX_NODES]
        first = self.world.initial_nodes[0]
        return f"job {self.world.scenario.jobs[0].name}", first[:FOCUS_MAX_NODES]

    def _result(self, wall_s: float) -> RunResult:
        w = self.world
        jobs = []
        for j in self.jobs:
            span = max(min(j.end, w.end) - j.start, 0.0)
            jobs.append(
                JobResult(
                    name=j.spec.name, job_class=j.spec.job_class.value, gpus=j.gpus, reserved_gpu_s=span * j.gpus,
                    buckets=tuple(float(x) for x in j.buckets), failures=j.failures, restarts=j.restarts,
                    saves=j.saves if isinstance(j, TrainingJob) else 0,
                )
            )  # fmt: skip
        names = self.topology.names[EntityKind.NODE]
        drains = [
            DrainRecord(d.t, f"node/{names[d.node]}", d.actor, d.false, d.reason) for d in self.fleet.drains
        ]
        prog = np.where(self._bin_res > 0, self._bin_prog / np.maximum(self._bin_res, 1e-9), np.nan)
        reserved = np.cumsum(self._bin_res)
        kept = np.where(reserved > 0, self._bin_kept / np.maximum(reserved, 1e-9), np.nan)
        edges = np.linspace(w.start, w.end, self._bins + 1)
        return RunResult(
            scenario=w.scenario.name, policy=self.policy_name, seed=w.seed, start=w.start, end=w.end,
            node_days=self.n_nodes * (w.end - w.start) / 86400.0, jobs=jobs, faults=self._outcomes(),
            drains=drains, actions=dict(self.actions), timeline_t=(edges[:-1] + edges[1:]) / 2,
            timeline_goodput=prog, timeline_ettr=kept, focus_nodes=[f"node/{names[n]}" for n in self._focus.tolist()],
            focus_states=self._focus_states, focus_title=self._focus_title,
            transitions=len(getattr(self.policy, "transitions", [])), wall_s=wall_s, engine_ticks=self.engine_ticks,
            observed_node_days=self.observed_node_s / 86400.0, outcomes=dict(getattr(self.policy, "outcomes", {})),
        )  # fmt: skip

    def _outcomes(self) -> list[FaultOutcome]:
        from seamguard.twin.scope import fault_scope

        dets = sorted(self.policy.detections, key=lambda d: d.t)
        out = []
        for f in self.faults:
            scope = fault_scope(self.world, f)
            early = f.onset - (self._lead if self.policy_name == "oracle" else 0.0)
            hit = next((d.t for d in dets if d.t >= early and d.entity in scope), math.inf)
            impact = min(f.hard_at, self.impact.get(f.fid, math.inf))
            deadline = f.hard_at if f.hard else f.end
            missed = f.gray and not hit < deadline
            out.append(FaultOutcome(f.fid, f.kind, f.target, f.source, f.benign, f.gray, f.onset, impact, f.hard_at,
                                    hit, missed))  # fmt: skip
        return out
