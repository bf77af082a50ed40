"""One run of the twin: a scenario, a seed and a policy, stepped through simulated time.

Each step (one engine tick, ``scenario.tick_s``): the faults' effects and hard failures are
applied to the plant, the plant integrates its physics, the jobs run and are charged for every
second, people and schedulers do their part (repairs, prolog checks, triage), and, where the
policy observes, the twin renders telemetry, hands it to the policy and carries out the
actions it answers with. The same step order runs for every policy; only the policy differs.

This module holds the loop, the fleet's state and what a policy may ask of it (``FleetView``);
the parts of a step live beside it, as functions of the twin: ``fault_events`` (hard failures and
when a gray fault starts to cost), ``operations`` (people and schedulers), ``observation`` (the
telemetry a policy sees), ``verbs`` (carrying out a policy's actions), ``timeline`` (the run's
record and result), and ``storage_env`` (what a save or a restore costs, handed to the jobs).
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
from seamguard.twin import fault_events, observation, operations, timeline, verbs
from seamguard.twin.accounting import Bucket
from seamguard.twin.effects import Effects, apply_faults
from seamguard.twin.fault_events import HardEvent
from seamguard.twin.faults import Fault
from seamguard.twin.fleet import FREE, Fleet, domain_nodes, node_faults
from seamguard.twin.jobs import InferenceJob, JobEvent, Phase, TrainingJob
from seamguard.twin.plant import Plant
from seamguard.twin.policies.base import Policy, save_ahead_s
from seamguard.twin.policies.binary import BinaryPolicy
from seamguard.twin.policies.oracle import OraclePolicy
from seamguard.twin.policies.seamguard import NO_FIREWALL, SeamguardPolicy
from seamguard.twin.results import RunResult
from seamguard.twin.serving import ServingModel
from seamguard.twin.storage_env import StorageEnv
from seamguard.twin.telemetry import Emitter
from seamguard.twin.timeline import DRAINED_CODE, REPAIR_CODE
from seamguard.twin.windows import WindowPlan, plan_windows
from seamguard.twin.world import World
from seamguard.yaml_input import merge_mappings

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
POLICIES: tuple[str, ...] = ("binary", "young-daly", "seamguard", "oracle")
COOLED_TIME_CONSTANTS = 3.0  # after a CDU fault, its racks' excess heat is 5 % of what it was
# Run by name only, to measure what tiered saves are worth: young-daly saving tiered (at Daly's
# interval for the tiered save's blocking cost), and seamguard restricted to remote storage; and
# what the firewall is worth: seamguard never containing a gray leaf (``NO_FIREWALL``).
VARIANTS: tuple[str, ...] = ("young-daly-tiered", "seamguard-remote", "seamguard-nofirewall")
__all__ = [
    "DRAINED_CODE",
    "POLICIES",
    "REPAIR_CODE",
    "VARIANTS",
    "Twin",
    "make_policy",
    "without_ground_truth",
]


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
    if name in ("seamguard", "seamguard-remote", "seamguard-nofirewall"):
        config = dict(pol.seamguard.config)
        if name == "seamguard-nofirewall":
            config = merge_mappings(config, NO_FIREWALL)
        return SeamguardPolicy(world, config, remote_only=name == "seamguard-remote", name=name)
    raise ValueError(f"unknown policy {name!r}; expected one of {', '.join(POLICIES + VARIANTS)}")


class Twin:
    """One run's simulated cluster; the scheduler a policy sees (``FleetView``)."""

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
        self.fault_nodes = [domain_nodes(topo, f) for f in world.faults]  # by fid, fixed for the run
        # Per facility fault: onset, counted until (``affected``), its nodes as a mask.
        cooled = COOLED_TIME_CONSTANTS * sc.physics.cooling.rack_time_constant_s
        self._facility = [
            (f.onset, f.end + (cooled if f.spec.target is EntityKind.CDU else 0.0),
             np.isin(np.arange(self.n_nodes), self.fault_nodes[f.fid]))
            for f in world.faults
            if f.spec.facility and not f.benign
        ]  # fmt: skip
        self.cleared: set[int] = set()
        self.fired: set[int] = set()
        self.on_node = node_faults(world.faults, topo)
        self.broken_since = np.full(self.n_nodes, math.inf)
        self.node_down_since = np.full(self.n_nodes, math.inf)
        self.rerouted = np.zeros(self.n_nodes, bool)
        self.made = 0.0  # progress made this step, all jobs (for the goodput timeline)
        self.input_slow = np.ones(len(self.jobs))  # per job: steps stretched waiting for input
        self._node_start = np.searchsorted(topo.gpu_node, np.arange(self.n_nodes))
        self.fault_gpus = [self.gpus_of(nodes) for nodes in self.fault_nodes]
        self.xids: list[tuple[float, int, int]] = []
        self.actions: Counter[str] = Counter()
        self.impact: dict[int, float] = {}
        self._placement_version = 0
        self._placement_cache: dict[str, list[str]] | None = None
        self.engine_ticks = 0
        self.hang_timeout_s = sc.operations.hang_timeout_s
        self.env = StorageEnv(world, self.plant, self.policy, self.jobs, self.hang_timeout_s)
        self.serving = ServingModel(world, self.jobs, policy) if sc.serving is not None else None
        self.sdc_due: list[tuple[float, Fault]] = []
        self.timeline = timeline.new_timeline(world)
        obs = sc.observation
        self.windowed = obs.mode == "windows"
        self.plan: WindowPlan = plan_windows(world)
        self.lead = save_ahead_s(world)
        self._next_window = 0  # position in plan.by_open
        self.watching: list[int] = []  # faults whose window is open
        self.cleared_at: dict[int, float] = {}
        self.held = np.zeros(world.n_cells, bool)  # cells kept open by the policy's judgement
        self.cell_nodes = [
            np.flatnonzero(world.node_cell == c).astype(np.int64) for c in range(world.n_cells)
        ]
        self._quiet_s = max(obs.quiet_step_min * 60.0, world.tick_s)
        self._job_times = np.unique(np.concatenate([world.job_start, world.job_end]))
        self.now = 0.0  # the time of the policy's current observation
        self.observed_node_s = 0.0  # node-seconds a policy saw telemetry for (windows mode: the cells)

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
        """Whether ``count`` spares can take ``job``'s ranks once every job already waiting for
        nodes has its own: the one that moves saves first, and the scheduler fills the others'
        empty places meanwhile, so a free node another job waits for is no spare."""
        need = count + self._waiting_for_nodes(job)
        return self.fleet.pick(need, admission, self.usable()) is not None

    def _waiting_for_nodes(self, but: int) -> int:
        need = 0
        for j in self.jobs:
            if j.index == but:
                continue
            if isinstance(j, TrainingJob):
                if j.phase is Phase.RECOVERING:
                    need += j.spec.nodes - int(j.nodes.size)
                elif j.holds_nodes:
                    need += len(j.replace)
            elif j.phase is Phase.RUNNING:
                need += int((j.slot_node < 0).sum())
        return need

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
        return j.durable_age(self.now) if isinstance(j, TrainingJob) else math.nan

    def placed(self) -> None:
        """Placement changed: a new version for the policy, and a fresh ``placement`` map."""
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
    def broken(self) -> npt.NDArray[np.bool_]:
        dead = np.zeros(self.n_nodes, bool)
        np.logical_or.at(dead, self.topology.gpu_node, self.plant.gpu_dead)
        return dead | self.plant.node_down | self.plant.link_down

    def usable(self) -> npt.NDArray[np.bool_]:
        """What a prolog health check passes: no dead GPU, host up, link up."""
        return ~self.broken()

    def affected(self, node: int, t: float, broken: npt.NDArray[np.bool_] | None = None) -> bool:
        """Is anything really wrong with the node or its domain now, or about to be (a fault due
        within a save's time, which is how early the oracle acts)? The false-quarantine test.
        A facility fault counts until one tick after its condition is gone: a decision at ``t``
        reads the tick of telemetry before it. A rack's power comes back at the fault's end; a
        CDU's warm water and the GPUs it cooled do not: they relax with ``rack_time_constant_s``,
        so a CDU fault counts until ``COOLED_TIME_CONSTANTS`` of them have passed (95 % of the
        excess heat gone)."""
        for fid in self.on_node[node]:
            f = self.faults[fid]
            if not f.benign and f.onset <= t + self.lead and fid not in self.cleared:
                return True
        seen_until = t - self.world.tick_s
        for onset, gone, nodes in self._facility:
            if onset <= t and seen_until < gone and nodes[node]:
                return True
        return bool((self.broken() if broken is None else broken)[node])

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
                self.finish_job(j, w.end)
        self.timeline.kept[-1] = self.kept()  # the final checkpoint is free: unsaved work counts
        return timeline.result(self, time.perf_counter() - wall)

    def kept(self) -> float:
        """Useful work so far, all jobs: committed, plus what a training job has done since its last
        save (still useful unless a failure rolls it back, which then shows as a drop)."""
        pending = sum(float(j.pending[0]) for j in self.jobs if isinstance(j, TrainingJob))
        return float(sum(j.buckets[Bucket.PRODUCTIVE] for j in self.jobs)) + pending

    def _launch_initial(self, j: TrainingJob | InferenceJob, t: float) -> None:
        nodes = self.world.initial_nodes[j.index]
        self.fleet.node_job[nodes] = j.index
        if isinstance(j, TrainingJob):
            j.launch(t, nodes, self.env, fresh=True)
        else:
            for slot, n in enumerate(nodes.tolist()):
                j.fill(slot, n, t, fresh=True)
            j.phase = Phase.RUNNING
        self.placed()

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
            self.watching.append(int(order[self._next_window]))
            self._next_window += 1
        cool = plan.cooldown_s
        self.watching = [
            fid for fid in self.watching
            if t < min(float(plan.close_t[fid]), self.cleared_at.get(fid, math.inf)) + cool
        ]  # fmt: skip
        return bool(self.watching) or bool(self.held.any())

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
        times.extend(due for due, _ in self.sdc_due)
        return min(times)

    def _step(self, t0: float, t1: float, k: int) -> None:
        dt = t1 - t0
        self._activate(t1)
        events = fault_events.hard_events(self, t0, t1)
        fx = apply_faults(self._fresh_effects(), self.active, t1, self.world.scenario.physics)
        self.input_slow = fx.input_factor(self.world.job_storage)
        tripped = self.plant.advance(t1, dt, fx, self._load(), self.rerouted)
        for g in tripped.tolist():
            events.append(fault_events.gpu_dies(self, t1, g, 79))
        self._run_jobs(t0, t1, events)
        if self.serving is not None:
            self.serving.step(self, t0, t1, fx)
        fault_events.track_impact(self, t1)
        operations.fleet_ops(self, t1)
        batches = observation.observe(self, t1, k, fx)
        if batches is not None:
            self.engine_ticks += 1
            self.now = t1
            verbs.apply_actions(self, t1, self.policy.observe(t1, batches, self))
            if self.windowed:
                observation.settle(self, batches)
        operations.schedule(self, t1)
        self.fleet.send_free_drained_to_repair(t1, operations.repair_seconds(self, t1))
        timeline.sample(self, t0, t1, dt)

    def _fresh_effects(self) -> Effects:
        topo = self.topology
        return Effects.none(topo.count(EntityKind.CDU), topo.count(EntityKind.RACK), self.n_gpus, self.n_nodes,
                            topo.count(EntityKind.SWITCH), topo.count(EntityKind.STORAGE),
                            len(self.jobs))  # fmt: skip

    def _activate(self, t1: float) -> None:
        while self._next_fault < len(self.faults) and self.faults[self._next_fault].onset <= t1:
            self.active.append(self.faults[self._next_fault])
            self._next_fault += 1
        self.active = [
            f for f in self.active if f.fid not in self.cleared and (t1 < f.end or not f.spec.facility)
        ]

    def _load(self) -> FloatArray:
        """Per GPU, the share of the step it computes: 1 under a busy job, 0 idle; a running job
        waiting for input (``input_slow``) computes only 1 / that of each step, idle the rest. A
        hung job (``Phase.DOWN``: its collective waits for the watchdog) spins: NCCL's kernels keep
        its GPUs busy although no step ends, which is how a hang differs from a restart."""
        duty = np.zeros(self.n_nodes)
        for j in self.jobs:
            if isinstance(j, TrainingJob):
                if j.busy or j.phase is Phase.DOWN:
                    duty[j.nodes] = 1.0 / self.input_slow[j.index] if j.phase is Phase.RUNNING else 1.0
            elif j.phase is Phase.RUNNING:
                duty[j.slot_node[j.slot_node >= 0]] = 1.0 / self.input_slow[j.index]
        load = duty[self.topology.gpu_node]
        load[self.plant.gpu_dead] = 0.0
        return load

    # ---- jobs -----------------------------------------------------------------------------------
    def _run_jobs(self, t0: float, t1: float, events: list[HardEvent]) -> None:
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
                verbs.release_replicas(self, job, idx, t, graceful=False)
        rank, rank_clean, comm = self.plant.rank_factor, self.plant.rank_factor_clean, self.plant.comm
        node_rank = node_clean = None
        made_before = sum(j.made for j in self.jobs)
        under = self._under_faults()
        for j in self.jobs:
            if isinstance(j, TrainingJob):
                pace = 1.0
                if j.busy and j.nodes.size:
                    gpus = self.gpus_of(j.nodes)
                    j.healthy_share = 1.0 - float(under[gpus].mean())
                    cs = j.spec.comm_share
                    actual = (1 - cs) * float(rank[gpus].max()) + cs * float(comm[j.nodes].max())
                    actual *= float(self.input_slow[j.index])
                    healthy = (1 - cs) * float(rank_clean[gpus].max()) + cs
                    pace = min(healthy / actual, 1.0)
                j.advance(t0, t1, pace, per_job.get(j.index, []), self.env)
            else:
                if node_rank is None or node_clean is None:
                    node_rank, node_clean = self._node_max(rank), self._node_max(rank_clean)
                nodes = np.maximum(j.slot_node, 0)
                j.advance(
                    t0, t1, np.minimum(node_clean[nodes] / node_rank[nodes], 1.0) / self.input_slow[j.index]
                )
        self.made = sum(j.made for j in self.jobs) - made_before

    def _under_faults(self) -> npt.NDArray[np.bool_]:
        """Per GPU, whether an active fault's condition reaches it (its own, its node's or uplink's,
        its rack's, CDU's or leaf's): the rest of a slowed job are healthy GPUs waiting."""
        under = np.zeros(self.n_gpus, dtype=bool)
        for f in self.active:
            under[f.local if f.spec.target is EntityKind.GPU else self.fault_gpus[f.fid]] = True
        return under

    def node_pace(self) -> FloatArray:
        """Per node, its slowest GPU's pace (healthy step time over actual, at most 1)."""
        return np.minimum(
            self._node_max(self.plant.rank_factor_clean) / self._node_max(self.plant.rank_factor), 1.0
        )

    def _node_max(self, per_gpu: FloatArray) -> FloatArray:
        """Per node, the maximum over its GPUs (GPUs are numbered node by node)."""
        out = np.ones(self.n_nodes)
        has = np.bincount(self.topology.gpu_node, minlength=self.n_nodes) > 0
        if per_gpu.size:
            out[has] = np.maximum.reduceat(per_gpu, self._node_start[has])
        return out

    def _regular(self) -> bool:
        return self.n_gpus == self.n_nodes * self.gpn

    def gpus_of(self, nodes: IntArray) -> IntArray:
        if self._regular():
            return (nodes[:, None] * self.gpn + np.arange(self.gpn)).ravel()
        return np.flatnonzero(np.isin(self.topology.gpu_node, nodes)).astype(np.int64)

    def finish_job(self, j: TrainingJob | InferenceJob, t: float) -> None:
        j.finish()
        nodes = np.flatnonzero(self.fleet.node_job == j.index)
        self.fleet.node_job[nodes] = FREE
        self.placed()

    def admission(self, job_class: JobClass) -> IntArray:
        return self.policy.admission(job_class)
