"""The field suite: per seed, where and when each fault and confounder happens.

Every seed gets one fault of each kind and every confounder. Faults start after a clean
stretch (30 minutes, less in a shortened run), in staggered lanes so that they do not all
begin together, on targets drawn from the seed such that no two faults' reaches share an
entity; confounders are placed outside every fault's reach. Slow faults are kept to lanes
that leave them time to reach their impact before the run ends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from seamguard.fieldsim.confounders import (
    AppXid,
    ClockSkew,
    Confounder,
    CounterReset,
    FeedStop,
    Glitch,
    InputStall,
    LatchedFlow,
)
from seamguard.fieldsim.faults import (
    HW_POWER_BRAKE,
    HW_SLOWDOWN,
    ColdPlate,
    FailingOptic,
    FallenOffBus,
    Fault,
    HbmDecay,
    LeafCongestion,
    NodeDeath,
    PumpWear,
    StorageDecay,
    Straggler,
)
from seamguard.fieldsim.fleet import (
    SLOT_BY_NAME,
    SLOTS,
    STORAGE_NAMES,
    TRAINING_SLOTS,
    Fleet,
    StoragePlan,
    build_fleet,
)
from seamguard.fieldsim.labels import ConfounderLabel, Reach
from seamguard.fieldsim.plan import FieldPlan, PlannedFault
from seamguard.model.entities import EntityKind

HOUR, MINUTE = 3600.0, 60.0
SUITE_DURATION_S = 7 * HOUR
DEFAULT_TICK_S = 10.0  # as a site config ships (examples/site.yaml); 30 s works too
CLEAN_S = 30 * MINUTE
EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z; each seed starts on its own day
TUNING_SEEDS: tuple[int, ...] = (1, 2, 3)
# Held out: chosen after the engine and the suite were frozen, reported from that one run, never
# tuned on; a fix made after seeing them retires them (docs/performance.md keeps their result).
# 1205-1209 were chosen at commit baa0178; 1210-1214 after the fix that 1206 called for;
# 1215-1219 after a review's fixes (clock, baselines, flatlines at an alarm, cadence); 1220-1224
# after counters' rates took their interval from the source's stamps and a node's own signals
# left its exporter's clock domain (the false action on tuning seed 2); 1225-1229 after peer
# baselines were learnt against their cohort's common level, not its raw median (the idle link
# 1220 quarantined).
HELD_OUT_SEEDS: tuple[int, ...] = (1225, 1226, 1227, 1228, 1229)
STORAGE_CAPACITY_GBPS = {"main": 40.0, "minor": 25.0}
# Time a slow fault needs from onset to reach its impact (lanes later than end - this are refused).
NEEDS_S: dict[str, float] = {
    "cold_plate": 60 * MINUTE, "pump_wear": 60 * MINUTE, "hbm_decay": 55 * MINUTE,
    "storage_decay": 50 * MINUTE, "failing_optic": 25 * MINUTE, "leaf_congestion": 8 * MINUTE,
    "straggler": 5 * MINUTE, "xid79": 5 * MINUTE, "node_death": 5 * MINUTE,
}  # fmt: skip
ORDER = ("pump_wear", "storage_decay", "leaf_congestion", "cold_plate", "straggler", "failing_optic",
         "hbm_decay", "xid79", "node_death")  # fmt: skip  # widest reach first


def _lanes(rng: np.random.Generator, start: float, duration_s: float) -> dict[str, float]:
    """Each fault kind's onset: staggered lanes, slow kinds where they can still mature."""
    clean = min(CLEAN_S, 0.3 * duration_s)
    first, last = start + clean, start + 0.92 * duration_s
    width = (last - first) / len(ORDER)
    onsets = first + width * (np.arange(len(ORDER)) + rng.uniform(0.0, 0.6, len(ORDER)))
    kinds = list(ORDER)
    for _ in range(2000):
        order = [kinds[i] for i in rng.permutation(len(kinds))]
        if all(on + NEEDS_S[k] <= start + duration_s for on, k in zip(onsets, order, strict=True)):
            break  # a short run cannot satisfy this: the last permutation drawn stands
    return {k: float(on) for k, on in zip(order, onsets, strict=True)}


class _Placer:
    """Draws targets whose reach stays clear of what earlier draws claimed."""

    def __init__(self, fleet: Fleet, rng: np.random.Generator, end: float) -> None:
        self.fleet, self.rng, self.end = fleet, rng, end
        self.reach = Reach(fleet, end)
        self.claimed: set[str] = set()

    def pick(
        self,
        candidates: Sequence[int],
        reach_of: Callable[[int, float], frozenset[str]],
        at: float,
        what: str,
    ) -> tuple[int, frozenset[str]]:
        order = self.rng.permutation(len(candidates))
        for i in order.tolist():
            reach = reach_of(int(candidates[i]), at)
            if not reach & self.claimed:
                self.claimed |= reach
                return int(candidates[i]), reach
        raise RuntimeError(f"no target left for {what} clear of the other faults' reach")

    def running(self, node: int, a: float, b: float, *, training: bool) -> bool:
        """A job (training, if asked) runs on ``node`` throughout [a, min(b, end))."""
        b = min(b, self.end)
        for j, rec in enumerate(self.fleet.jobs):
            if training and not SLOT_BY_NAME[self.fleet.job_slot[j]].training:
                continue
            if node in self.fleet.job_nodes[j].tolist() and rec.start <= a and rec.end >= b:
                return True
        return False


def plan_run(seed: int, duration_s: float = SUITE_DURATION_S) -> FieldPlan:
    """The whole schedule of one seed. Raises RuntimeError if placement fails (it should not)."""
    if duration_s < 10 * MINUTE:
        raise ValueError(f"a field run needs at least 10 minutes, got {duration_s} s")
    rng = np.random.default_rng([seed, 1])
    start = EPOCH + 86_400.0 * seed
    end = start + duration_s
    onset = _lanes(rng, start, duration_s)

    # The pump's CDU and the minor storage backend's users come first: they shape the fleet.
    pump_cdu = int(rng.integers(0, 4))
    pump_nodes = {n for s in SLOTS for n in s.nodes if _cdu_of_node(n) == pump_cdu}
    eligible = [s for s in TRAINING_SLOTS if not set(SLOT_BY_NAME[s].nodes) & pump_nodes
                and SLOT_BY_NAME[s].pattern in ("always", "restart", "restart2", "late_start")]  # fmt: skip
    minor = str(rng.choice(STORAGE_NAMES))
    main = STORAGE_NAMES[1 - STORAGE_NAMES.index(minor)]
    users = frozenset(str(x) for x in rng.choice(eligible, size=2, replace=False))
    storage = StoragePlan(main=main, minor=minor, minor_slots=users)
    fleet = build_fleet(np.random.default_rng([seed, 2]), start, duration_s, storage)
    topo = fleet.topology
    sto_names = topo.names[EntityKind.STORAGE]
    capacity = np.array([STORAGE_CAPACITY_GBPS["minor" if n == minor else "main"] for n in sto_names])

    place = _Placer(fleet, rng, end)
    reach = place.reach
    faults: list[PlannedFault] = []

    def add(fault: Fault, kind: EntityKind, local: int, r: frozenset[str]) -> None:
        faults.append(PlannedFault(fault, fleet.gid(kind, local), r))

    u = rng.uniform
    n_nodes, n_gpus = fleet.n_nodes, fleet.n_gpus
    for kind in ORDER:
        at = onset[kind]
        if kind == "pump_wear":
            cdu, r = place.pick([pump_cdu], reach.cdu, at, kind)
            add(PumpWear(cdu, at, u(45, 70) * MINUTE, u(0.25, 0.35)), EntityKind.CDU, cdu, r)
        elif kind == "storage_decay":
            sto, r = place.pick([sto_names.index(minor)], reach.storage, at, kind)
            add(StorageDecay(sto, at, u(30, 50) * MINUTE, u(0.2, 0.3)), EntityKind.STORAGE, sto, r)
        elif kind == "leaf_congestion":
            leaves = list(range(topo.count(EntityKind.SWITCH)))
            sw, r = place.pick(leaves, reach.switch, at, kind)
            fault = LeafCongestion(sw, at, u(3, 6) * MINUTE, u(0.6, 1.5), u(82, 93), u(0.05, 0.10))
            add(fault, EntityKind.SWITCH, sw, r)
        elif kind in ("cold_plate", "straggler"):
            hold = 70 * MINUTE if kind == "cold_plate" else 20 * MINUTE
            gpus = [
                g for g in range(n_gpus) if place.running(int(topo.gpu_node[g]), at, at + hold, training=True)
            ]
            g, r = place.pick(gpus, reach.gpu, at, kind)
            if kind == "cold_plate":
                add(ColdPlate(g, at, u(55, 70) * MINUTE, u(2.2, 2.6)), EntityKind.GPU, g, r)
            else:
                bit = HW_SLOWDOWN if rng.random() < 0.5 else HW_POWER_BRAKE
                add(Straggler(g, at, u(0.80, 0.87), bit), EntityKind.GPU, g, r)
        elif kind == "failing_optic":
            nodes = [n for n in range(n_nodes) if place.running(n, at, at + 30 * MINUTE, training=False)]
            n, r = place.pick(nodes, reach.link, at, kind)
            tau = u(12, 25) * MINUTE / math.log(2.5)
            add(FailingOptic(n, at, tau, 2.5, u(0.1, 0.2)), EntityKind.LINK, n, r)
        elif kind == "hbm_decay":
            g, r = place.pick(list(range(n_gpus)), reach.gpu, at, kind)
            add(_hbm(rng, g, at, end), EntityKind.GPU, g, r)
        elif kind == "xid79":
            g, r = place.pick(list(range(n_gpus)), reach.gpu, at, kind)
            add(FallenOffBus(g, at), EntityKind.GPU, g, r)
        else:
            n, r = place.pick(list(range(n_nodes)), reach.node, at, kind)
            add(NodeDeath(n, at), EntityKind.NODE, n, r)

    confounders, labels = _confounders(fleet, place, rng, start, duration_s, pump_cdu)
    return FieldPlan(
        seed=seed, start=start, duration_s=duration_s, storage=storage, capacity_gbps=capacity, fleet=fleet,
        faults=tuple(faults), confounders=tuple(confounders), confounder_labels=tuple(labels),
    )  # fmt: skip


def _cdu_of_node(name: str) -> int:
    """CDU of a node by name (before the fleet is built): five H100 racks or four L40S racks each."""
    i = int(name[2:])
    return i // 20 if name.startswith("hn") else 2 + i // 16


def _hbm(rng: np.random.Generator, gpu: int, onset: float, end: float) -> HbmDecay:
    """Bursts of corrected errors, their rate climbing from 1/12 min to 1/1.5 min before the
    uncorrectable one, then continuing at half the final rate."""
    lead = float(rng.uniform(35, 55)) * MINUTE
    impact = onset + lead
    lam0, lam1 = 1 / (12 * MINUTE), 1 / (1.5 * MINUTE)
    times, t = [onset], onset
    while t < end:
        t += float(rng.exponential(1 / lam1))  # thinning against the peak rate
        x = min((t - onset) / lead, 1.0)
        rate = lam0 * (lam1 / lam0) ** x if t < impact else lam1 / 2
        if t < end and rng.random() < rate / lam1:
            times.append(t)
    counts = rng.geometric(1 / 15, len(times))
    return HbmDecay(gpu, onset, impact, tuple(times), tuple(int(c) for c in counts))


def _confounders(
    fleet: Fleet, place: _Placer, rng: np.random.Generator, start: float, duration_s: float, pump_cdu: int
) -> tuple[list[Confounder], list[ConfounderLabel]]:
    """Each confounder with its *scope*: the parts it could fool the engine about, over the time
    it could do so (an action there and then would be because of it). Uplinks are reported by
    the fabric manager, not the node's exporter, so only the latency spikes' scope holds links."""
    topo, reach, end = fleet.topology, place.reach, start + duration_s
    d, u = duration_s, rng.uniform
    out: list[Confounder] = []
    labels: list[ConfounderLabel] = []
    after = 30 * MINUTE  # how long a one-off confounder can still mislead (trend windows, counter rates)

    def label(kind: str, entity: str, scope: Iterable[str], on: float, off: float) -> None:
        labels.append(ConfounderLabel(kind, entity, frozenset(scope), on, min(off, end)))

    taken: set[str] = set()  # parts a confounder already uses

    def free_node() -> int:
        """A node whose parts (GPUs, uplink) are clear of every fault's reach and of the other
        confounders; its job may be shared with a fault (a false action on a part still counts)."""
        nodes = [n for n in range(fleet.n_nodes) if not reach.hardware([n]) & (place.claimed | taken)]
        n = int(rng.choice(nodes))
        taken.update(reach.hardware([n]))
        return n

    def gid(kind: EntityKind, local: int) -> str:
        return fleet.gid(kind, local)

    # A job-wide input stall on a training job clear of every fault; one node misses a scrape after.
    length = u(5, 10) * MINUTE
    s0 = start + u(0.2, 0.85) * d
    jobs = [j for j, rec in enumerate(fleet.jobs) if SLOT_BY_NAME[fleet.job_slot[j]].training
            and rec.start + 5 * MINUTE <= s0 and rec.end >= s0 + length + 2 * MINUTE
            and not reach.nodes(fleet.job_nodes[j].tolist(), start) & place.claimed]  # fmt: skip
    if jobs:
        j = int(rng.choice(jobs))
        nodes = fleet.job_nodes[j].tolist()
        out.append(InputStall(j, s0, s0 + length, u(1.28, 1.32), int(rng.choice(nodes))))
        taken.update(reach.hardware(nodes))
        scope = reach.host(nodes) | {gid(EntityKind.JOB, j)}
        label("input_stall", gid(EntityKind.JOB, j), scope, s0, s0 + length + after)

    for offset in (-90.0, 40.0):
        n = free_node()
        out.append(ClockSkew(n, offset))
        label(f"clock_skew_{offset:+.0f}s", gid(EntityKind.NODE, n), reach.host([n]), start, end)

    n = free_node()
    at = start + u(0.15, 0.85) * d
    out.append(CounterReset(n, at))
    label("counter_reset", gid(EntityKind.NODE, n), reach.host([n]), at, at + after)

    n_cdu = topo.count(EntityKind.CDU)
    other_cdus = [c for c in range(n_cdu) if c != pump_cdu]
    latch_cdu, glitch_cdu = (int(x) for x in rng.choice(other_cdus, size=2, replace=False))
    at = start + u(0.2, 0.7) * d
    out.append(LatchedFlow(latch_cdu, at, 1.0 - u(0.08, 0.15)))
    label("latched_flow_sensor", gid(EntityKind.CDU, latch_cdu), reach.facility(latch_cdu), at, end)

    racks = [r for r in range(topo.count(EntityKind.RACK)) if gid(EntityKind.RACK, r) not in place.claimed]
    rack = int(rng.choice(racks))
    at = start + u(0.3, 0.8) * d
    out.append(FeedStop(rack, at))
    label("bms_feed_stop", gid(EntityKind.RACK, rack), {gid(EntityKind.RACK, rack)}, at, end)

    n = free_node()
    gpu = int(rng.choice(np.flatnonzero(topo.gpu_node == n)))
    at = start + u(0.1, 0.9) * d
    out.append(Glitch("gpu.temp_c", gpu, at, 255.0 if rng.random() < 0.5 else 0.0))
    label("out_of_range_gpu_temp", gid(EntityKind.GPU, gpu), {gid(EntityKind.GPU, gpu), gid(EntityKind.NODE, n)},
          at, at + after)  # fmt: skip
    at = start + u(0.1, 0.9) * d
    out.append(Glitch("cdu.pressure_kpa", glitch_cdu, at, 0.0))
    label(
        "out_of_range_cdu_pressure",
        gid(EntityKind.CDU, glitch_cdu),
        reach.facility(glitch_cdu),
        at,
        at + after,
    )

    n = free_node()
    gpu = int(rng.choice(np.flatnonzero(topo.gpu_node == n)))
    at = start + u(0.1, 0.9) * d
    out.append(AppXid(gpu, at, int(rng.choice([13, 31, 43]))))
    label("application_xid", gid(EntityKind.GPU, gpu), {gid(EntityKind.GPU, gpu), gid(EntityKind.NODE, n)},
          at, at + 2 * after)  # fmt: skip

    # Fleet-wide, always on.
    def every(kind: EntityKind) -> set[str]:
        return {topo.ids[int(i)] for i in topo.members[kind]}

    label("latency_spikes", "fleet", every(EntityKind.LINK), start, end)
    label("inlet_sensor_noise", "fleet", every(EntityKind.RACK), start, end)
    label("storage_after_save", "fleet", every(EntityKind.STORAGE), start, end)
    for j, rec in enumerate(fleet.jobs):  # each start and end: GPUs warming up or cooling down is load
        scope = reach.host(fleet.job_nodes[j].tolist()) | {gid(EntityKind.JOB, j)}
        for at in (rec.start, rec.end):
            if start < at < end:
                label("job_churn", gid(EntityKind.JOB, j), scope, at - MINUTE, at + 15 * MINUTE)
    return out, labels
