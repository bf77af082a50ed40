"""Named labelled scenarios: the demo, the detection suite and the fleet-scale benchmark fleet.

Their faults are the twin's (``twin.faults``), checked against the scenario's own topology when
the scenario is defined, so a kind or target typo fails at import rather than scoring as a miss.

Each scenario starts with at least 20 minutes of clean operation, because the trend and peer
detectors need history before a fault can be told from normal variation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from seamguard.model.inventory import Inventory, JobRecord
from seamguard.model.states import JobClass
from seamguard.model.topology import Topology, build_topology
from seamguard.twin.cluster import (
    EPOCH,
    ClusterSpec,
    JobSpec,
    assign_jobs,
    cdu_name,
    generate_cluster,
    node_name,
)
from seamguard.twin.faults import Fault, declare
from seamguard.twin.labelled import SyntheticFleet

MIN = 60.0
# (kind, target, onset in seconds after the start, ramp in seconds): checked by ``twin.faults.declare``
Decl = tuple[str, str, float] | tuple[str, str, float, float]
SYNC, PIPE, ASYNC = JobClass.SYNC_TRAINING, JobClass.PIPELINE_TRAINING, JobClass.ASYNC_BATCH_INFERENCE


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    cluster: ClusterSpec
    jobs: tuple[JobSpec, ...]
    faults: tuple[Fault, ...]  # absolute times, from ``make_scenario``
    duration_s: float
    tick_s: float = 30.0

    @property
    def start(self) -> float:
        return math.floor(EPOCH / self.tick_s) * self.tick_s


def _layout(
    cluster: ClusterSpec, jobs: tuple[JobSpec, ...], start: float, duration_s: float, tick_s: float
) -> tuple[Inventory, tuple[JobRecord, ...], Topology]:
    """Jobs run from the start until one tick past the end: job activity is half-open
    ([start, end)), so the final tick at start + duration still sees them running."""
    inventory = generate_cluster(cluster)
    records = assign_jobs(inventory, jobs, start, start + duration_s + tick_s)
    return inventory, records, build_topology(inventory, records)


def make_scenario(
    name: str,
    description: str,
    cluster: ClusterSpec,
    jobs: tuple[JobSpec, ...],
    faults: tuple[Decl, ...],
    duration_s: float,
    tick_s: float = 30.0,
) -> Scenario:
    """A labelled scenario whose faults are checked against its own layout."""
    if not (duration_s > 0 and tick_s > 0):
        raise ValueError(f"scenario {name!r}: duration_s and tick_s must be positive")
    late = [f"{d[0]} on {d[1]}" for d in faults if d[2] >= duration_s]
    if late:
        raise ValueError(f"scenario {name!r}: fault(s) start after the end: {', '.join(late)}")
    start = math.floor(EPOCH / tick_s) * tick_s
    topology = _layout(cluster, jobs, start, duration_s, tick_s)[2]
    resolved = tuple(
        declare(topology, d[0], d[1], start + d[2], ramp=d[3] if len(d) > 3 else 0.0, fid=i)
        for i, d in enumerate(faults)
    )
    return Scenario(name, description, cluster, jobs, resolved, duration_s, tick_s)


def _demo() -> Scenario:
    cluster = ClusterSpec(cdus=4, racks_per_cdu=3, nodes_per_rack=4, nodes_per_leaf=8)
    # train-a: n0000-n0019 (cdu0, cdu1), train-b: n0020-n0031 (cdu1, cdu2),
    # infer-c: n0032-n0039 (cdu2, cdu3), spare: n0040-n0047 (cdu3).
    jobs = (
        JobSpec("train-a", SYNC, 20),
        JobSpec("train-b", SYNC, 12),
        JobSpec("infer-c", ASYNC, 8),
    )
    faults = (
        ("slow_gpu", "gpu/n0009/1", 0.0),
        ("hbm_ecc", "gpu/n0034/2", 25 * MIN, 75 * MIN),
        ("cdu_flow_loss", "cdu/cdu1", 40 * MIN, 45 * MIN),
        ("pcie_downtrain", "gpu/n0027/5", 60 * MIN),
        ("exporter_silent", "node/n0030", 70 * MIN, 5 * MIN),
        ("link_gray", "link/n0005", 95 * MIN, 40 * MIN),
        ("counter_reset", "gpu/n0036/4", 110 * MIN),
        ("storage_tail", "storage/ckpt0", 120 * MIN, 45 * MIN),
        ("hw_thermal", "gpu/n0002/3", 135 * MIN),
        ("gpu_hard", "gpu/n0038/6", 150 * MIN),
    )
    return make_scenario(
        name="demo",
        description="384 GPUs, two training jobs and a batch-inference job; one of each fault kind "
        "and three benign confounders over three hours",
        cluster=cluster,
        jobs=jobs,
        faults=faults,
        duration_s=180 * MIN,
    )


def _detect_suite() -> Scenario:
    """Four of each fault and benign kind, every one in its own job, node and (for CDUs) cooling
    domain, so that whatever the engine flags can be attributed to exactly one label.

    cdu0-cdu3 carry the four CDU faults and only the jobs placed under them. cdu4-cdu7 each hold
    one instance of every other kind, in this node order (two leaves of 8 nodes per CDU, so the
    four link faults sit on four different leaves): link job (2 nodes), PCIe job (2), slow-GPU
    job (2), hot-GPU job (2), storage job (2, its own checkpoint target), HBM job (1),
    XID 79 job (1), silent-exporter job (1), counter-reset job (1), a clean job (2).
    """
    cluster = ClusterSpec(cdus=8, racks_per_cdu=4, nodes_per_rack=4, nodes_per_leaf=8)
    jobs: list[JobSpec] = [
        JobSpec("c0-sync", SYNC, 12), JobSpec("c0-async", ASYNC, 4),
        JobSpec("c1-sync", SYNC, 16),
        JobSpec("c2-pipe", PIPE, 8), JobSpec("c2-sync", SYNC, 8),
        JobSpec("c3-sync", SYNC, 8), JobSpec("c3-async", ASYNC, 8),
    ]  # fmt: skip
    faults: list[Decl] = []
    for i in range(4):
        first = 16 * (4 + i)
        at = first

        def take(name: str, job_class: JobClass, nodes: int, storage: str = "ckpt0") -> str:
            nonlocal at
            jobs.append(JobSpec(name, job_class, nodes, storage))
            node = node_name(cluster, at)
            at += nodes
            return node

        hour = 3600.0 * i
        link = take(f"link-{i}", SYNC, 2)
        pcie = take(f"pcie-{i}", SYNC, 2)
        slow = take(f"slow-{i}", SYNC, 2)
        hot = take(f"hot-{i}", ASYNC if i < 2 else PIPE, 2)
        take(f"ckpt-{i}", (SYNC, ASYNC, PIPE, SYNC)[i], 2, storage=f"ckpt{i + 1}")
        hbm = take(f"hbm-{i}", SYNC, 1)
        bus = take(f"bus-{i}", ASYNC if i % 2 else SYNC, 1)
        quiet = take(f"quiet-{i}", ASYNC, 1)
        reset = take(f"reset-{i}", SYNC, 1)
        take(f"clean-{i}", SYNC, 2)
        assert at == first + 16
        faults += [
            ("cdu_flow_loss", f"cdu/{cdu_name(cluster, i)}", 25 * MIN + hour, 45 * MIN),
            ("hbm_ecc", f"gpu/{hbm}/{(2 * i + 1) % 8}", 30 * MIN + hour, 60 * MIN),
            ("link_gray", f"link/{link}", 35 * MIN + hour, 40 * MIN),
            ("pcie_downtrain", f"gpu/{pcie}/{(3 * i + 2) % 8}", 40 * MIN + hour),
            ("storage_tail", f"storage/ckpt{i + 1}", 45 * MIN + hour, 45 * MIN),
            ("gpu_hard", f"gpu/{bus}/{(5 * i + 3) % 8}", 50 * MIN + hour),
            ("hw_thermal", f"gpu/{hot}/{(i + 4) % 8}", 55 * MIN + hour),
            ("slow_gpu", f"gpu/{slow}/{(7 * i + 5) % 8}", 0.0),
            ("exporter_silent", f"node/{quiet}", 27 * MIN + hour, 10 * MIN),
            ("counter_reset", f"gpu/{reset}/{(i + 6) % 8}", 32 * MIN + hour),
        ]
    return make_scenario(
        name="detect-suite",
        description="1,024 GPUs, 47 jobs; four of every fault kind and benign confounder, each on "
        "its own target, over six hours",
        cluster=cluster,
        jobs=tuple(jobs),
        faults=tuple(faults),
        duration_s=360 * MIN,
    )


def scale_scenario(gpus: int) -> Scenario:
    """A mostly clean fleet of ``gpus`` GPUs (8 per node, 8 nodes per rack, 16 racks per CDU where
    the count allows) with one synchronous job per 64 nodes and a handful of faults."""
    if gpus <= 0 or gpus % 8:
        raise ValueError(f"gpus must be a positive multiple of 8, got {gpus}")
    n_nodes = gpus // 8
    per_rack = math.gcd(n_nodes, 8)
    racks = n_nodes // per_rack
    per_cdu = math.gcd(racks, 16)
    cluster = ClusterSpec(cdus=racks // per_cdu, racks_per_cdu=per_cdu, nodes_per_rack=per_rack)
    spare = n_nodes // 16
    if n_nodes - spare >= 64:
        n_jobs, size = (n_nodes - spare) // 64, 64
    else:
        n_jobs, size = 1, max(n_nodes - spare, 1)
    jobs = tuple(JobSpec(f"job{j:04d}", ASYNC if j % 4 == 3 else SYNC, size) for j in range(n_jobs))

    def node(frac: float, plus: int = 0) -> str:
        return node_name(cluster, min(int(n_nodes * frac) + plus, n_nodes - 1))

    faults = (
        ("slow_gpu", f"gpu/{node(0.25)}/0", 0.0),
        ("hbm_ecc", f"gpu/{node(1 / 3)}/1", 2 * MIN, 30 * MIN),
        ("link_gray", f"link/{node(0.5)}", 3 * MIN, 20 * MIN),
        ("pcie_downtrain", f"gpu/{node(2 / 3)}/2", 4 * MIN),
        ("cdu_flow_loss", f"cdu/{cdu_name(cluster, cluster.cdus - 1)}", 5 * MIN, 30 * MIN),
        ("gpu_hard", f"gpu/{node(5 / 6)}/5", 6 * MIN),
        ("storage_tail", "storage/ckpt0", 10 * MIN, 30 * MIN),
    )
    return make_scenario(
        name=f"scale-{gpus}",
        description=f"{gpus} GPUs, {n_jobs} jobs, a few faults: tick latency at fleet scale",
        cluster=cluster,
        jobs=jobs,
        faults=faults,
        duration_s=120 * MIN,
    )


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (_demo(), _detect_suite())}


def build(scenario: Scenario, seed: int) -> tuple[Inventory, tuple[JobRecord, ...], Topology, SyntheticFleet]:
    """Inventory, placed jobs, topology and the telemetry generator of one scenario run."""
    start = scenario.start
    inventory, jobs, topology = _layout(
        scenario.cluster, scenario.jobs, start, scenario.duration_s, scenario.tick_s
    )
    fleet = SyntheticFleet(topology, scenario.faults, seed=seed, start=start, tick_s=scenario.tick_s)
    return inventory, jobs, topology, fleet
