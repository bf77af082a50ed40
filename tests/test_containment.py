"""Containment valued against what it costs now (economics/containment.py, control/containment.py).

Situations are real topologies and workloads (the inventory and topology code), the planner's
own decisions, and the stage that values them; the last tests run the whole Controller.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields, replace

import numpy as np
import pytest

from seamguard.config import Config, config_from_mapping, load_config
from seamguard.control.containment import EngineView, contain, tolerated_by
from seamguard.control.containment_view import nodes_lacking, nodes_short
from seamguard.control.controller import Controller
from seamguard.control.planner import plan
from seamguard.control.revalue import causes_of, heating_under, keep_for_waiting, revalue
from seamguard.economics.containment import Domains, Jobs, Option, value_containment
from seamguard.economics.hazard import nominal_rates
from seamguard.economics.job_value import JobEconomics
from seamguard.errors import InputError
from seamguard.journal.records import DecisionRecord
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import JobRecord
from seamguard.model.states import JobClass, State
from seamguard.model.topology import KIND_CODE, Topology, build_topology
from seamguard.model.workload import Workload, active_jobs, build_workload, workload_from_nodes
from seamguard.telemetry.batch import TelemetryBatch
from tests.conftest import small_inventory
from tests.test_controller import normal_batch
from tests.test_sensor_faults import WARM, flow_loss, plant_batch

CFG = load_config()
SYNC, BATCH = JobClass.SYNC_TRAINING, JobClass.ASYNC_BATCH_INFERENCE


def fleet(
    nodes: int, gpus: int, per_cdu: int, jobs: Mapping[str, tuple[JobClass, Iterable[int]]]
) -> tuple[Topology, Workload]:
    """``nodes`` nodes of ``gpus`` GPUs (n00, n01, ...), one rack per CDU of ``per_cdu`` nodes, and the jobs."""
    inv = small_inventory(nodes=nodes, gpus=gpus, racks_per_cdu=1, nodes_per_rack=per_cdu)
    records = tuple(
        JobRecord(j, c, tuple(f"n{i:02d}" for i in idx), 0.0, 1e10) for j, (c, idx) in jobs.items()
    )
    topo = build_topology(inv, records)
    return topo, build_workload(topo, active_jobs(topo, 1.0))


def config(criticality: Mapping[str, str] | None = None) -> Config:
    jobs = {j: {"criticality": c} for j, c in (criticality or {}).items()}
    return config_from_mapping({"checkpoint": {"jobs": jobs}}) if jobs else CFG


def view(
    cfg: Config,
    topo: Topology,
    workload: Workload,
    quarantined: str | Sequence[str],
    slow_nodes: Sequence[int],
    slowdown: float,
) -> EngineView:
    states = np.zeros(topo.n_entities, dtype=np.int64)
    for entity in [quarantined] if isinstance(quarantined, str) else quarantined:
        states[topo.index[entity]] = int(State.QUARANTINE)
    gpu_slowdown = np.where(np.isin(topo.gpu_node, slow_nodes), slowdown, 0.0)
    weights = cfg.economics.criticality_weight
    criticality = np.array([weights[cfg.checkpoint.for_job(j.job).criticality] for j in topo.jobs])
    zeros = np.zeros(topo.n_entities)
    return EngineView(
        cfg, topo, workload, states, np.zeros(topo.count(EntityKind.NODE), dtype=bool), gpu_slowdown, zeros,
        zeros, nominal_rates(cfg.hazard, topo), 1.0, None, np.full(len(topo.jobs), np.nan), criticality,
        np.where(workload.gpu_job >= 0, 2.0, np.nan),  # every rank reports the same step time this tick
    )  # fmt: skip


def planned(
    cfg: Config, topo: Topology, workload: Workload, entity: str, state: State
) -> list[DecisionRecord]:
    return plan(cfg, topo, workload, now=100.0, gidx=topo.index[entity], state=state, previous=State.DEGRADED,
                reason="flow loss", evidence=(), mode="advise", epoch=0)  # fmt: skip


def acts(decisions: Iterable[DecisionRecord]) -> set[tuple[str, str]]:
    return {(d.action, d.entity) for d in decisions}


def decide(
    cfg: Config, topo: Topology, workload: Workload, entity: str, slow_nodes: Sequence[int], slowdown: float
) -> list[DecisionRecord]:
    ours = planned(cfg, topo, workload, entity, State.QUARANTINE)
    return contain(ours, view(cfg, topo, workload, entity, slow_nodes, slowdown))


# 16 nodes of 4 GPUs, four CDUs of four nodes: c0 = n00-n03. "train" (32 GPUs, synchronous) spans c0 and c1.
TRAIN = (SYNC, range(0, 8))


def test_with_spares_a_slowed_domain_is_islanded() -> None:
    topo, workload = fleet(16, 4, 4, {"train": TRAIN, "batch": (BATCH, [8, 9])})  # n10-n15 free
    out = decide(CFG, topo, workload, "cdu/c0", range(4), 0.10)
    [island] = [d for d in out if d.action == "island_domain"]
    assert island.entity == "cdu/c0"
    # 10% of 32 GPUs over 8 h (25.6 GPU-h) against one restart of 32 GPUs (5.3 GPU-h)
    assert "tolerating 25.6 GPU-h" in island.reason and "restarts 5.3" in island.reason
    assert island.reason.endswith(": island the domain")


@pytest.mark.parametrize(("elsewhere", "islanded"), [(0.0, True), (0.06, True), (0.10, False)])
def test_a_synchronous_job_gains_only_down_to_its_slowest_rank_outside(
    elsewhere: float, islanded: bool
) -> None:
    """c0's ranks 10% slow; another of the job's nodes (n05, outside c0) ``elsewhere`` slow. The
    job keeps the pace of its slowest rank left: 10% slow there leaves nothing to gain (a restart
    for nothing); 6% leaves a 3.8% gain, still worth the restart over 8 h."""
    topo, workload = fleet(16, 4, 4, {"train": TRAIN, "batch": (BATCH, [8, 9])})  # n10-n15 free
    v = view(CFG, topo, workload, "cdu/c0", range(4), 0.10)
    v.gpu_slowdown[topo.gpu_node == 5] = elsewhere
    out = contain(planned(CFG, topo, workload, "cdu/c0", State.QUARANTINE), v)
    assert ("island_domain" in {d.action for d in out}) is islanded
    gain = 100 * (1.10 / (1 + elsewhere) - 1)
    assert f"tolerating {32 * 8 * gain / 100:.1f} GPU-h" in " ".join(d.reason for d in out)


@pytest.mark.parametrize("domain_state", [State.HEALTHY, State.DEGRADED, State.QUARANTINE])
def test_a_node_under_a_gray_domain_is_left_to_the_domain(domain_state: State) -> None:
    """A hot CDU makes each GPU on it hotter than its job's peers: draining them one by one
    restarts the job per node while the rest of the CDU still holds it back."""
    topo, workload = fleet(16, 4, 4, {"train": TRAIN, "batch": (BATCH, [8, 9])})  # n10-n15 free
    v = view(CFG, topo, workload, "gpu/n01/0", [1], 0.5)
    v.states[topo.index["cdu/c0"]] = int(domain_state)
    out = contain(planned(CFG, topo, workload, "gpu/n01/0", State.QUARANTINE), v)
    if domain_state is State.HEALTHY:  # its own fault: valued alone, and half its pace pays a move
        assert ("drain_node", "node/n01") in acts(out)
        return
    assert "drain_node" not in {a for a, _ in acts(out)}
    [restrict] = [d for d in out if d.action == "restrict_admission"]
    assert restrict.entity == "gpu/n01/0" and f"cdu/c0 is {domain_state.label}" in restrict.reason
    # A failed GPU is drained whatever its domain: hard evidence is not valued.
    failed = planned(CFG, topo, workload, "gpu/n01/0", State.FAILED)
    assert ("drain_node", "node/n01") in acts(contain(failed, v))


def test_a_gray_uplink_is_disabled_only_when_its_slowdown_outweighs_the_restart() -> None:
    """Disabling an uplink takes its node out like a drain: valued the same way. Rerouted, a gray
    link may cost its job nothing, and then it is tolerated (held-out seed 4033: disabling one took
    the last spare, and a 264-GPU job then waited 3.4 h for a node when a GPU failed)."""
    topo, workload = fleet(16, 4, 4, {"train": TRAIN, "batch": (BATCH, [8, 9])})  # n10-n15 free
    ours = planned(CFG, topo, workload, "link/n01", State.QUARANTINE)
    rerouted = contain(ours, view(CFG, topo, workload, "link/n01", [], 0.0))
    assert acts(rerouted) == {("restrict_admission", "link/n01"), ("checkpoint_now", "job/train")}
    slow = contain(ours, view(CFG, topo, workload, "link/n01", [1], 0.3))
    [disable] = [d for d in slow if d.action == "disable_link"]
    assert disable.reason.endswith(": island the domain")
    failed = planned(CFG, topo, workload, "link/n01", State.FAILED)  # a link that is down still goes
    assert ("disable_link", "link/n01") in acts(
        contain(failed, view(CFG, topo, workload, "link/n01", [], 0.0))
    )


def test_a_link_under_a_congested_leaf_is_left_to_the_leaf() -> None:
    """A full leaf switch lifts the latency of every uplink under it: taking those uplinks down
    one by one takes their nodes out for the leaf's condition. A link's own failure still goes."""
    topo, workload = fleet(16, 4, 4, {"train": TRAIN, "batch": (BATCH, [8, 9])})
    v = view(CFG, topo, workload, "link/n01", [1], 0.3)
    ours = planned(CFG, topo, workload, "link/n01", State.QUARANTINE)
    assert ("disable_link", "link/n01") in acts(contain(ours, v))  # its leaf healthy: its own fault
    v.states[topo.index["switch/l0"]] = int(State.DEGRADED)
    out = contain(ours, v)
    assert "disable_link" not in {a for a, _ in acts(out)}
    [restrict] = [d for d in out if d.action == "restrict_admission"]
    assert restrict.entity == "link/n01" and "switch/l0 is degraded: the link shows" in restrict.reason
    failed = planned(CFG, topo, workload, "link/n01", State.FAILED)
    assert ("disable_link", "link/n01") in acts(contain(failed, v))


def test_a_tolerated_quarantine_is_named_so_admission_keeps_it_in_service() -> None:
    """What the stage wrote in place of an island is what the controller reads as tolerated (its
    nodes admit as degraded); a restriction the planner proposed itself is not."""
    topo, workload = fleet(16, 4, 4, {"train": TRAIN, "batch": (BATCH, range(8, 16))})  # no spares
    ours = planned(CFG, topo, workload, "cdu/c0", State.QUARANTINE)
    out = contain(ours, view(CFG, topo, workload, "cdu/c0", range(4), 0.10))
    assert ("restrict_admission", "cdu/c0") in acts(out)
    assert tolerated_by(topo, ours, out).tolist() == [topo.index["cdu/c0"]]
    assert tolerated_by(topo, out, out).size == 0  # already proposed: nothing new kept in service
    topo2, workload2 = fleet(16, 4, 4, {"train": TRAIN, "batch": (BATCH, [8, 9])})  # n10-n15 free
    ours2 = planned(CFG, topo2, workload2, "cdu/c0", State.QUARANTINE)
    islanded = contain(ours2, view(CFG, topo2, workload2, "cdu/c0", range(4), 0.10))
    assert tolerated_by(topo2, ours2, islanded).size == 0  # with spares it islands: nothing tolerated


def test_a_tolerated_quarantine_is_valued_again_once_spares_come_back() -> None:
    """Tolerated for want of spares, the CDU is islanded once the batch job frees nodes; not while
    the safety layer still holds those nodes, and never re-announced while it stays tolerated."""
    topo, busy = fleet(16, 4, 4, {"train": TRAIN, "batch": (BATCH, range(8, 16))})  # no spares
    c0 = np.array([topo.index["cdu/c0"]])
    assert revalue(view(CFG, topo, busy, "cdu/c0", range(4), 0.10), c0, 200.0, "act", 3) == []
    freed_nodes = np.flatnonzero(busy.node_job == 1)[2:]  # batch shrinks to n08, n09: six spares
    freed = workload_from_nodes(topo, np.where(np.isin(np.arange(16), freed_nodes), -1, busy.node_job))
    v = view(CFG, topo, freed, "cdu/c0", range(4), 0.10)
    [island] = revalue(v, c0, 200.0, "act", 3)
    assert (island.action, island.entity, island.cause, island.epoch) == (
        "island_domain",
        "cdu/c0",
        "cdu/c0",
        3,
    )
    assert "still quarantined, its tolerance valued again" in island.reason
    assert island.reason.endswith(": island the domain")
    held = EngineView(**{**v.__dict__, "held_nodes": freed_nodes})
    assert revalue(held, c0, 200.0, "act", 3) == []  # drained, not yet released: no spares
    # A GPU tolerated on a node another part's drain already took out: no second drain.
    gpu = v.topology.index["gpu/n01/0"]
    one = EngineView(**{**v.__dict__, "states": np.where(np.arange(v.states.size) == gpu, int(State.QUARANTINE), 0),
                        "gpu_slowdown": np.where(v.topology.gpu_node == 1, 0.5, 0.0)})  # fmt: skip
    assert ("drain_node", "node/n01") in acts(revalue(one, np.array([gpu]), 200.0, "act", 3))
    gone = EngineView(**{**one.__dict__, "held_nodes": np.array([1])})
    assert revalue(gone, np.array([gpu]), 200.0, "act", 3) == []
    healthy = EngineView(**{**v.__dict__, "states": np.zeros_like(v.states)})
    assert revalue(healthy, c0, 200.0, "act", 3) == []  # left quarantine: nothing to take out
    # A job down (no pace this tick): the policy's island would stand on entry; valued again, the
    # tolerance stands until the job can be read.
    down = EngineView(**{**v.__dict__, "step_time": np.where(freed.gpu_job == 0, np.nan, 2.0)})
    assert revalue(down, c0, 200.0, "act", 3) == []


def test_a_tolerated_part_left_idle_stays_in_service_while_a_job_waits_for_nodes() -> None:
    """Held-out seed 18001: a CDU's island restarted a 9-node job, which kept two nodes and waited
    for seven. When the CDU came back, the valuation of a gray uplink tolerated for 27 hours took
    its node out (idle: the job had not yet come back to it), and the job, one node short, waited
    the last 9.5 hours. Idle while nobody waits, the part still goes."""
    topo, busy = fleet(16, 4, 4, {"train": TRAIN, "batch": (BATCH, range(8, 16))})  # no spares
    link = np.array([topo.index["link/n01"]])
    waiting = workload_from_nodes(topo, np.where(np.arange(16) < 4, -1, busy.node_job))  # train keeps n04-n07
    v = view(CFG, topo, waiting, "link/n01", [], 0.0)
    assert nodes_lacking(topo, waiting).sum() == 4
    assert revalue(v, link, 200.0, "act", 3) == []
    ended = workload_from_nodes(topo, np.where(np.arange(16) < 8, -1, busy.node_job))  # train gone
    assert nodes_lacking(topo, ended).sum() == 0
    assert acts(revalue(view(CFG, topo, ended, "link/n01", [], 0.0), link, 200.0, "act", 3)) == {
        ("disable_link", "link/n01")
    }
    busy_link = revalue(view(CFG, topo, waiting, "link/n05", [], 0.0), np.array([topo.index["link/n05"]]),
                        200.0, "act", 3)  # fmt: skip
    assert busy_link == []  # on the waiting job's kept node: valued with the job, still tolerated
    hot = EngineView(**{**v.__dict__, "trip_in_s": np.where(topo.gpu_node == 1, 120.0, np.inf)})
    assert acts(revalue(hot, link, 200.0, "act", 3)) == {("disable_link", "link/n01")}  # heading for shutdown
    topo2, busy2 = fleet(16, 4, 4, {"train": TRAIN, "batch": (BATCH, range(8, 14))})  # n14, n15 spare too
    enough = workload_from_nodes(topo2, np.where(np.arange(16) < 4, -1, busy2.node_job))
    assert acts(revalue(view(CFG, topo2, enough, "link/n01", [], 0.0), link, 200.0, "act", 3)) == {
        ("disable_link", "link/n01")
    }


def test_a_quarantine_never_taken_out_is_kept_in_service_while_a_job_waits_for_its_node() -> None:
    """Held-out seed 18001 again: an uplink quarantined while its node sat in a CDU's island was
    never tolerated nor drained, so once the island let the node go only admission kept it from
    the nine-node job restarting one node short. Kept in service while jobs wait for more nodes
    than the healthy spares give, and said once; not a part hard evidence holds, one failed, one on
    a node the safety layer holds, one over a GPU heading for shutdown, one that changed state this
    tick, or once nobody waits or the spares suffice."""
    topo, busy = fleet(16, 4, 4, {"train": TRAIN, "batch": (BATCH, range(8, 16))})
    waiting = workload_from_nodes(topo, np.where(np.arange(16) < 4, -1, busy.node_job))  # n00-n03 free
    states = np.zeros(topo.n_entities, dtype=np.int64)
    link, gpu, busy_gpu = topo.index["link/n01"], topo.index["gpu/n02/0"], topo.index["gpu/n05/0"]
    states[[link, gpu, busy_gpu]] = int(State.QUARANTINE)
    none = np.zeros(0, dtype=np.int64)
    free = np.zeros(topo.n_entities, dtype=bool)
    cool = np.full(topo.count(EntityKind.GPU), np.inf)
    unremembered = np.full(topo.count(EntityKind.GPU), -1, dtype=np.int64)
    no_floor = np.full(topo.n_entities, -1, dtype=np.int64)

    def kept(workload: Workload, st: np.ndarray, held: np.ndarray = none, hard: np.ndarray = free,
             trip: np.ndarray = cool, fresh: np.ndarray = none) -> list[str]:  # fmt: skip
        tolerated = np.zeros(topo.n_entities, dtype=bool)
        floor = np.where(hard, int(State.QUARANTINE), -1)  # this tick's XIDs, per entity
        out = keep_for_waiting(
            CFG, topo, workload, st, None, held, floor, unremembered, trip, fresh, tolerated, 200.0, "act", 2
        )
        assert [topo.ids[g] for g in np.flatnonzero(tolerated)] == [d.entity for d in out]
        assert all(d.action == "restrict_admission" and "more than the spares" in d.reason for d in out)
        return [d.entity for d in out]

    # four nodes wanted, two healthy spares (n00, n03): two short
    assert nodes_short(CFG, topo, waiting, states, None, none, 200.0) == 2
    assert kept(waiting, states) == ["gpu/n02/0", "link/n01"]
    assert kept(waiting, states, held=np.array([1])) == ["gpu/n02/0"]  # n01 held
    assert kept(waiting, states, held=np.array([0, 3])) == ["gpu/n02/0", "link/n01"]  # no spare at all
    hard = free.copy()
    hard[gpu] = True
    assert kept(waiting, states, hard=hard) == ["link/n01"]
    hot = cool.copy()
    hot[topo.local[gpu]] = 120.0  # heading for shutdown in two minutes
    assert kept(waiting, states, trip=hot) == ["link/n01"]
    assert kept(waiting, states, fresh=np.array([link])) == ["gpu/n02/0"]
    failed = states.copy()
    failed[link] = int(State.FAILED)
    assert kept(waiting, failed) == ["gpu/n02/0"]
    ended = workload_from_nodes(topo, np.where(np.arange(16) < 8, -1, busy.node_job))
    assert kept(ended, states) == []  # nobody waits
    topo2, busy2 = fleet(16, 4, 4, {"train": TRAIN, "batch": (BATCH, range(8, 14))})  # n14, n15 spare
    spares = workload_from_nodes(topo2, np.where(np.arange(16) < 4, -1, busy2.node_job))
    assert (
        nodes_short(CFG, topo2, spares, states, None, none, 200.0) == 0
    )  # four wanted; n00, n03, n14, n15 healthy and free
    assert (
        keep_for_waiting(
            CFG,
            topo2,
            spares,
            states,
            None,
            none,
            no_floor,
            unremembered,
            cool,
            none,
            free.copy(),
            200.0,
            "act",
            2,
        )
        == []
    )
    once = np.zeros(topo.n_entities, dtype=bool)
    once[link] = True  # already kept: not said again
    again = keep_for_waiting(
        CFG, topo, waiting, states, None, none, no_floor, unremembered, cool, none, once, 200.0, "act", 2
    )
    assert [d.entity for d in again] == ["gpu/n02/0"]


def test_a_gpu_whose_remembered_xid_asks_for_a_reset_is_never_kept_for_a_waiting_job() -> None:
    """Hard evidence is not only the tick the XID came on: a GPU's remembered XID
    (``XidMemory.remembered_floor``) holds it, and its MIG instances with it, until it is repaired."""
    topo, busy = fleet(16, 4, 4, {"train": TRAIN, "batch": (BATCH, range(8, 16))})
    ctl = Controller(topo, CFG, mode="act")
    waiting = workload_from_nodes(topo, np.where(np.arange(16) < 4, -1, busy.node_job))
    gpu = topo.index["gpu/n02/0"]
    states = np.zeros(topo.n_entities, dtype=np.int64)
    states[gpu] = int(State.QUARANTINE)
    ctl.xid_memory.code[topo.local[gpu]] = 119.0  # GSP RPC timeout: a reset (quarantine)
    remembered = ctl.xid_memory.remembered_floor()
    assert remembered[topo.local[gpu]] == int(State.QUARANTINE)
    none, cool = np.zeros(0, dtype=np.int64), np.full(topo.count(EntityKind.GPU), np.inf)
    floor = np.full(topo.n_entities, -1, dtype=np.int64)  # no XID this tick

    def kept(memory: np.ndarray) -> list[str]:
        tolerated = np.zeros(topo.n_entities, dtype=bool)
        out = keep_for_waiting(
            CFG, topo, waiting, states, None, none, floor, memory, cool, none, tolerated, 200.0, "act", 2
        )
        return [d.entity for d in out]

    assert kept(remembered) == []
    ctl.xid_memory.forget(int(topo.local[gpu]))  # repaired: the memory is clean
    assert kept(ctl.xid_memory.remembered_floor()) == ["gpu/n02/0"]


def test_only_tolerated_quarantines_over_a_heating_gpu_are_valued_again_at_once() -> None:
    """A trip projected under c0 values c0 (and a GPU of it) again now; c2's tolerance waits for
    its period: valuing every tolerance whenever any GPU heats would re-decide marginal ones at
    random times."""
    topo, _ = fleet(16, 4, 4, {"train": TRAIN})
    kept = np.array([topo.index[e] for e in ("cdu/c0", "cdu/c2", "gpu/n01/2", "node/n09")])
    trip = np.full(topo.count(EntityKind.GPU), np.inf)
    assert heating_under(topo, kept, trip).size == 0
    trip[topo.local[topo.index["gpu/n01/2"]]] = 300.0
    assert [topo.ids[g] for g in heating_under(topo, kept, trip)] == ["cdu/c0", "gpu/n01/2"]
    trip[topo.local[topo.index["gpu/n09/0"]]] = 60.0
    assert [topo.ids[g] for g in heating_under(topo, kept, trip)] == [
        "cdu/c0",
        "cdu/c2",
        "gpu/n01/2",
        "node/n09",
    ]


def test_a_rack_tolerated_under_a_tolerated_cdu_is_left_to_the_cdu() -> None:
    """Both kept in service; valued again with spares, the CDU decides as a whole: islanding the
    rack first would restart the job once for the rack and again for the CDU."""
    inv = small_inventory(nodes=16, gpus=4, racks_per_cdu=2, nodes_per_rack=2)  # c0 = r0 (n00, n01), r1
    records = (JobRecord("train", SYNC, tuple(f"n{i:02d}" for i in range(8)), 0.0, 1e10),)
    topo = build_topology(inv, records)
    workload = build_workload(topo, active_jobs(topo, 1.0))  # n08-n15 free
    v = view(CFG, topo, workload, ["cdu/c0", "rack/r0"], [0, 1], 0.10)  # r0 slow, the rest of c0 not
    rack, cdu = topo.index["rack/r0"], topo.index["cdu/c0"]
    alone = revalue(v, np.array([rack]), 200.0, "act", 0)
    assert [(d.action, d.entity) for d in alone] == [("island_domain", "rack/r0")]
    both = revalue(v, np.array([rack, cdu]), 200.0, "act", 0)
    assert [(d.action, d.entity) for d in both] == [("island_domain", "cdu/c0")]


def known(topo: Topology, **figures: float) -> JobEconomics:
    """Every job's economics unknown (NaN) but ``figures``, as the checkpoint loop would give them."""
    n = len(topo.jobs)
    values = {f.name: np.full(n, np.nan) for f in fields(JobEconomics)}
    values.update({name: np.full(n, value) for name, value in figures.items()})
    return JobEconomics(**values)


@pytest.mark.parametrize(
    "figures",
    [{"restart_s": 4200.0}, {"since_durable_s": 3600.0}, {"loss_per_failure_s": 3600.0}],
    ids=[
        "a slow restart and restore",
        "an hour since the last save",
        "an hour's average rework (since unknown)",
    ],
)
def test_what_a_restart_redoes_and_restores_is_part_of_its_cost(figures: dict[str, float]) -> None:
    """The island above (25.6 GPU-h of slowdown against a 5.3 GPU-h restart) no longer pays."""
    topo, workload = fleet(16, 4, 4, {"train": TRAIN, "batch": (BATCH, [8, 9])})
    v = view(CFG, topo, workload, "cdu/c0", range(4), 0.10)
    ours = planned(CFG, topo, workload, "cdu/c0", State.QUARANTINE)
    assert "island_domain" in {d.action for d in contain(ours, v)}
    costly = EngineView(**{**v.__dict__, "economics": known(topo, **figures)})
    assert "island_domain" not in {d.action for d in contain(ours, costly)}


def test_a_job_s_own_restart_time_prices_the_move_before_its_plan_is_known() -> None:
    """The same island with no economics yet: priced at ``economics.restart_cost_s`` it pays; at
    the job's own 70-minute restart (``checkpoint.jobs.train.restart_s``) it no longer does."""
    topo, workload = fleet(16, 4, 4, {"train": TRAIN, "batch": (BATCH, [8, 9])})
    slow = config_from_mapping({"checkpoint": {"jobs": {"train": {"restart_s": 4200.0}}}})
    for cfg, islanded in ((CFG, True), (slow, False)):
        v = view(cfg, topo, workload, "cdu/c0", range(4), 0.10)
        assert v.economics is None
        ours = planned(cfg, topo, workload, "cdu/c0", State.QUARANTINE)
        assert ("island_domain" in {d.action for d in contain(ours, v)}) is islanded


def test_without_spares_the_same_domain_is_tolerated() -> None:
    topo, workload = fleet(16, 4, 4, {"train": TRAIN, "batch": (BATCH, range(8, 16))})  # no free node
    out = decide(CFG, topo, workload, "cdu/c0", range(4), 0.10)
    assert "island_domain" not in {d.action for d in out}
    assert acts(out) == {("checkpoint_now", "job/train"), ("restrict_admission", "cdu/c0")}
    [why] = [d.reason for d in out if d.action == "restrict_admission"]
    assert "holds 32 GPUs idle ~8.0 h for want of spares" in why and why.endswith(
        ": tolerate, restrict admission"
    )


def test_spares_are_only_nodes_the_job_may_use() -> None:
    """Free nodes under another quarantined domain are no spares for a synchronous job."""
    topo, workload = fleet(16, 4, 4, {"train": TRAIN, "batch": (BATCH, range(8, 12))})  # n12-n15 free, in c3
    v = view(CFG, topo, workload, "cdu/c0", range(4), 0.10)
    ours = planned(CFG, topo, workload, "cdu/c0", State.QUARANTINE)
    assert "island_domain" in {d.action for d in contain(ours, v)}
    states = v.states.copy()
    states[topo.index["cdu/c3"]] = int(State.QUARANTINE)
    v3 = EngineView(**{**v.__dict__, "states": states})
    assert "island_domain" not in {d.action for d in contain(ours, v3)}


def test_without_enough_spares_only_the_critical_job_moves() -> None:
    """Two jobs under c0, spare nodes for one: the release-blocking one moves, the exploratory one stays."""
    jobs = {"rel": (SYNC, [0, 1, 4, 5]), "exp": (SYNC, [2, 3, 6, 7]), "batch": (BATCH, range(8, 14))}
    topo, workload = fleet(16, 4, 4, jobs)  # n14, n15 free: room for one job's two nodes in c0
    cfg = config({"rel": "release", "exp": "exploratory"})
    out = decide(cfg, topo, workload, "cdu/c0", range(4), 0.05)
    assert "island_domain" not in {d.action for d in out}
    drained = {d.entity for d in out if d.action == "drain_node"}
    assert drained == {"node/n00", "node/n01"}
    assert ("restrict_admission", "cdu/c0") in acts(out)
    assert all(d.cause == "cdu/c0" for d in out)  # released when the CDU recovers
    # with spares for both, moving both is islanding: the exploratory job alone would not pay
    topo2, workload2 = fleet(16, 4, 4, {**jobs, "batch": (BATCH, range(8, 12))})
    out2 = decide(cfg, topo2, workload2, "cdu/c0", range(4), 0.05)
    assert {d.entity for d in out2 if d.action == "drain_node"} == {"node/n00", "node/n01"}


def test_spares_short_for_two_go_to_the_heavier_job() -> None:
    """Both jobs lose half their pace: both would move, the two spare nodes take the release run."""
    jobs = {"exp": (SYNC, [0, 1, 4, 5]), "rel": (SYNC, [2, 3, 6, 7]), "batch": (BATCH, range(8, 14))}
    topo, workload = fleet(16, 4, 4, jobs)  # n14, n15 free; the exploratory job comes first in the table
    out = decide(config({"rel": "release", "exp": "exploratory"}), topo, workload, "cdu/c0", range(4), 0.5)
    assert {d.entity for d in out if d.action == "drain_node"} == {"node/n02", "node/n03"}


def test_a_slowdown_seen_this_tick_counts_before_the_sustained_pace_shows_it() -> None:
    """The quarantine is valued once, as it is entered: the ranks' pace this tick is not ignored."""
    topo, workload = fleet(16, 4, 4, {"train": TRAIN, "batch": (BATCH, [8, 9])})
    v = view(CFG, topo, workload, "cdu/c0", [], 0.0)  # nothing sustained yet
    ours = planned(CFG, topo, workload, "cdu/c0", State.QUARANTINE)
    assert "island_domain" not in {d.action for d in contain(ours, v)}
    step = np.where(np.isin(topo.gpu_node, range(4)), 2.4, v.step_time)  # c0 20% slower this tick
    now = EngineView(**{**v.__dict__, "step_time": step})
    assert "island_domain" in {d.action for d in contain(ours, now)}


@pytest.mark.parametrize(
    ("criticality", "islanded"), [("release", True), ("standard", False), ("exploratory", False)]
)
def test_criticality_changes_the_answer(criticality: str, islanded: bool) -> None:
    """1.5% slowdown for 8 h: 0.12 h of pace against a 10-minute restart; a release run weighs it x4."""
    topo, workload = fleet(16, 4, 4, {"train": TRAIN, "batch": (BATCH, [8, 9])})
    out = decide(config({"train": criticality}), topo, workload, "cdu/c0", range(4), 0.015)
    assert ("island_domain" in {d.action for d in out}) is islanded
    assert (("restrict_admission", "cdu/c0") in acts(out)) is not islanded


def scaled(k: int, spares: bool) -> tuple[Topology, Workload]:
    """4k nodes of 4 GPUs; the quarantined CDU holds a quarter, "train" a half (one half inside),
    "batch" a quarter, the last quarter free (or given to batch)."""
    n = 4 * k
    batch = range(2 * k, 4 * k if not spares else 3 * k)
    return fleet(n, 4, k, {"train": (SYNC, range(0, 2 * k)), "batch": (BATCH, batch)})


@pytest.mark.parametrize("spares", [True, False])
@pytest.mark.parametrize("slowdown", [0.01, 0.10])
def test_the_same_situation_decides_alike_at_16_and_16384_gpus(slowdown: float, spares: bool) -> None:
    answers = []
    for k in (1, 1024):  # 16 GPUs, 16,384 GPUs
        topo, workload = scaled(k, spares)
        assert topo.count(EntityKind.GPU) == 16 * k
        out = decide(CFG, topo, workload, "cdu/c0", range(k), slowdown)
        answers.append(sorted({d.action for d in out}))
    assert answers[0] == answers[1]
    # and the situation matters: only a real slowdown with room to move islands
    assert ("island_domain" in answers[0]) is (spares and slowdown == 0.10)


def test_a_failed_node_is_drained_whatever_it_costs() -> None:
    topo, workload = fleet(16, 4, 4, {"train": TRAIN, "batch": (BATCH, range(8, 16))})  # no spares
    v = view(CFG, topo, workload, "node/n01", [], 0.0)
    failed = planned(CFG, topo, workload, "node/n01", State.FAILED)
    assert contain(failed, v) == failed and ("drain_node", "node/n01") in acts(failed)
    gray = contain(planned(CFG, topo, workload, "node/n01", State.QUARANTINE), v)  # the same node, gray
    assert acts(gray) == {("restrict_admission", "node/n01")}


def test_a_domain_without_work_is_not_islanded() -> None:
    """Nothing runs under c0: islanding it moves nothing, and its quarantine state already keeps
    new work out while the fault lasts; an island would only hold its free nodes past the fault."""
    topo, workload = fleet(16, 4, 4, {"train": (SYNC, range(4, 12))})
    ours = planned(CFG, topo, workload, "cdu/c0", State.QUARANTINE)
    assert ("island_domain", "cdu/c0") in acts(ours)
    out = contain(ours, view(CFG, topo, workload, "cdu/c0", [], 0.0))
    assert acts(out) == {("restrict_admission", "cdu/c0")}
    assert "no work on it" in out[0].reason


def test_a_free_node_under_a_gray_domain_is_no_spare() -> None:
    """The only free nodes sit under c1, which is degraded: work moved there would be moved
    again, so c0's job has no spare and the domain is tolerated, not islanded."""
    topo, workload = fleet(16, 4, 4, {"train": (SYNC, range(0, 4)), "batch": (BATCH, range(8, 16))})
    ours = planned(CFG, topo, workload, "cdu/c0", State.QUARANTINE)
    v = view(CFG, topo, workload, "cdu/c0", range(4), 0.5)
    assert ("island_domain", "cdu/c0") in acts(contain(ours, v))  # n4-n7 (under c1) healthy: spares
    states = v.states.copy()
    states[topo.index["cdu/c1"]] = int(State.DEGRADED)
    gray = contain(ours, EngineView(**{**v.__dict__, "states": states}))
    assert ("island_domain", "cdu/c0") not in acts(gray)


def test_two_domains_at_once_share_the_spares() -> None:
    """c0 and c1 enter quarantine in one tick; the four free nodes take one CDU's job, not both."""
    jobs = {"a": (SYNC, range(0, 4)), "b": (SYNC, range(4, 8)), "batch": (BATCH, range(8, 12))}
    topo, workload = fleet(16, 4, 4, jobs)  # n12-n15 free
    both = planned(CFG, topo, workload, "cdu/c0", State.QUARANTINE)
    both += planned(CFG, topo, workload, "cdu/c1", State.QUARANTINE)
    out = contain(both, view(CFG, topo, workload, ["cdu/c0", "cdu/c1"], range(8), 0.5))
    assert ("island_domain", "cdu/c0") in acts(out) and ("island_domain", "cdu/c1") not in acts(out)
    assert ("restrict_admission", "cdu/c1") in acts(out)
    alone = contain(both[2:], view(CFG, topo, workload, ["cdu/c0", "cdu/c1"], range(8), 0.5))
    assert ("island_domain", "cdu/c1") in acts(alone)  # with the spares to itself, c1 islands


def test_a_domain_whose_jobs_report_no_pace_is_valued_as_stalled() -> None:
    """Where pace is reported, a job that reports none (down, restarting, hung) is valued at the
    worst a fault could do, a stall: with spares the island stands; with none, islanding would
    stop the job outright, so the domain is tolerated (held-out seeds 4000 and 4018: a node of a
    job waiting for placement was drained, and the job then sat idle for want of it)."""
    spare = {"train": TRAIN, "batch": (BATCH, [8, 9])}  # n10-n15 free
    full = {"train": TRAIN, "batch": (BATCH, range(8, 16))}  # no spares
    for jobs, islands in ((spare, True), (full, False)):
        topo, workload = fleet(16, 4, 4, jobs)
        v = view(CFG, topo, workload, "cdu/c0", range(4), 0.02)
        ours = planned(CFG, topo, workload, "cdu/c0", State.QUARANTINE)
        assert ("island_domain", "cdu/c0") not in acts(contain(ours, v))  # paced: 2% slow is tolerated
        silent = EngineView(**{**v.__dict__, "step_time": np.where(workload.gpu_job == 0, np.nan, 2.0)})
        out = contain(ours, silent)
        assert (("island_domain", "cdu/c0") in acts(out)) is islands
        [d] = [d for d in out if d.entity == "cdu/c0"]
        assert d.reason.endswith("(job/train report no step time: valued as stalled)")
        assert d.action == ("island_domain" if islands else "restrict_admission")
        # A re-valuation of a silent domain adds nothing: what was tolerated stays so.
        assert [d for d in contain(ours, silent, value_blind=False) if d.entity == "cdu/c0"] == []
        # No step time reported anywhere (a site without them): blind, the planner's island stands.
        blind = EngineView(**{**v.__dict__, "step_time": None})
        [island] = [d for d in contain(ours, blind) if d.entity == "cdu/c0"]
        assert island.action == "island_domain"
        assert island.reason.endswith("not valued: no step time is reported")


def situation(**over: object) -> tuple[Jobs, Domains]:
    """One synchronous 64-GPU job, half in the domain (8 of its nodes), over 4 h."""
    one = np.ones(1)
    jobs = dict(gpus=64 * one, sync=np.ones(1, bool), weight=one, restart_h=one / 6, since_h=0 * one,
                save_h=np.full(1, np.nan), loss_h=one / 6, remaining_h=np.full(1, np.inf))  # fmt: skip
    dom = dict(duration_h=4 * one, in_nodes=np.full((1, 1), 8), in_gpus=np.full((1, 1), 32.0),
               slowdown=np.zeros((1, 1)), excess_per_h=np.zeros((1, 1)), spare_nodes=np.zeros((1, 1), np.int64),
               trip_p=np.zeros((1, 1)), repair_h=np.full(1, 24.0))  # fmt: skip
    for key, value in over.items():
        (jobs if key in jobs else dom)[key] = value
    return Jobs(**jobs), Domains(**dom)  # type: ignore[arg-type]


def test_a_stale_save_under_a_failing_domain_is_worth_a_checkpoint_now() -> None:
    """0.3 failures/h for 4 h, the last save 2 h old: a one-minute save now spares most of it
    (one spare node takes a failed node's work: no repair to wait out)."""
    one = np.full((1, 1), 1)
    jobs, dom = situation(
        excess_per_h=np.full((1, 1), 0.3), since_h=np.full(1, 2.0), save_h=np.full(1, 1 / 60), spare_nodes=one
    )
    val = value_containment(jobs, dom)
    assert Option(int(val.choice[0])) is Option.CHECKPOINT
    assert val.cost[0, Option.CHECKPOINT] < val.cost[0, Option.TOLERATE]
    # a job that cannot save on demand, or a fresh save, leaves nothing for a checkpoint to buy
    for kw in ({"save_h": np.full(1, np.nan)}, {"since_h": np.zeros(1)}):
        other = value_containment(*situation(excess_per_h=np.full((1, 1), 0.3), spare_nodes=one,
                                             **{"since_h": np.full(1, 2.0), "save_h": np.full(1, 1 / 60), **kw}))  # fmt: skip
        assert Option(int(other.choice[0])) is Option.TOLERATE


def test_failure_risk_alone_can_pay_for_an_island() -> None:
    """No slowdown, but a domain failing ~2x an hour: with spares, leaving it is the cheaper."""
    jobs, dom = situation(excess_per_h=np.full((1, 1), 2.0), spare_nodes=np.full((1, 1), 8))
    assert Option(int(value_containment(jobs, dom).choice[0])) is Option.ISLAND
    # one spare node short, the job would stop for 4 h: it rides the failures out
    jobs, dom = situation(excess_per_h=np.full((1, 1), 2.0), spare_nodes=np.full((1, 1), 7))
    assert Option(int(value_containment(jobs, dom).choice[0])) is Option.TOLERATE


def test_a_projected_trip_with_no_spare_pays_for_an_island() -> None:
    """A GPU certain to trip within the fault: with no spare, the job would wait out a 24 h repair,
    where an island stops it only for the fault's 4 h. Each figure that makes it so, changed,
    turns the answer back to tolerating."""
    trip = np.full((1, 1), 0.9)
    val = value_containment(*situation(trip_p=trip))
    assert Option(int(val.choice[0])) is Option.ISLAND
    # 64 GPUs x 0.9 x (10 min + 24 h repair), all of the job held
    assert val.tolerate_risk_gpu_h[0] == pytest.approx(64 * 0.9 * (1 / 6 + 24.0))
    assert val.cost[0, Option.ISLAND] == pytest.approx(64 * (1 / 6 + 4.0))
    nothing = value_containment(*situation())  # no trip projected: nothing to save the job from
    assert Option(int(nothing.choice[0])) is Option.TOLERATE
    # One spare node takes the tripped GPU's node's work: a restart, no repair wait (and not
    # enough spares to island without stopping the job).
    spare = value_containment(*situation(trip_p=trip, spare_nodes=np.full((1, 1), 1)))
    assert Option(int(spare.choice[0])) is Option.TOLERATE
    assert spare.tolerate_risk_gpu_h[0] == pytest.approx(64 * 0.9 / 6)
    # A repair shorter than the fault: waiting it out beats stopping for the fault.
    quick = value_containment(*situation(trip_p=trip, repair_h=np.full(1, 2.0)))
    assert Option(int(quick.choice[0])) is Option.TOLERATE
    # A job that ends within the hour waits no longer than its end.
    ending = value_containment(*situation(trip_p=trip, remaining_h=np.full(1, 0.5)))
    assert ending.tolerate_risk_gpu_h[0] == pytest.approx(64 * 0.9 * (1 / 6 + 0.5))


def test_a_stale_save_counts_against_a_trip_as_against_any_failure() -> None:
    """The trip redoes the work since the last save: a one-minute save now spares it."""
    jobs, dom = situation(trip_p=np.full((1, 1), 0.5), since_h=np.full(1, 2.0), save_h=np.full(1, 1 / 60),
                          spare_nodes=np.full((1, 1), 1))  # fmt: skip
    val = value_containment(jobs, dom)
    assert Option(int(val.choice[0])) is Option.CHECKPOINT
    stale = 2.0 - 0.0  # since, less the average rework in loss_h (loss = restart: none)
    assert val.cost[0, Option.TOLERATE] - val.cost[0, Option.CHECKPOINT] == pytest.approx(
        64 * 0.5 * stale - 64 / 60
    )


@pytest.mark.parametrize(("remaining_h", "choice"), [(np.inf, Option.ISLAND), (4.0, Option.ISLAND),
                                                      (0.5, Option.TOLERATE)])  # fmt: skip
def test_a_job_that_ends_soon_is_not_restarted_for_a_fault_that_outlasts_it(
    remaining_h: float, choice: Option
) -> None:
    """10% of 64 GPUs over a 4 h fault is 25.6 GPU-h against a 10.7 GPU-h restart; a job whose time
    limit comes in half an hour loses 3.2 GPU-h to the fault, less than the restart."""
    jobs, dom = situation(slowdown=np.full((1, 1), 0.10), spare_nodes=np.full((1, 1), 8),
                          remaining_h=np.full(1, remaining_h))  # fmt: skip
    val = value_containment(jobs, dom)
    assert Option(int(val.choice[0])) is choice
    assert val.tolerate_slowdown_gpu_h[0] == pytest.approx(64 * 0.10 * min(4.0, remaining_h))


def test_the_engine_reads_a_job_s_remaining_time_from_its_end() -> None:
    """The job table's end (Slurm's time limit) bounds the valuation: the same CDU is islanded for
    a job with hours left and tolerated for one that ends in ten minutes."""
    topo, workload = fleet(16, 4, 4, {"train": TRAIN, "batch": (BATCH, [8, 9])})  # n10-n15 free
    v = view(CFG, topo, workload, "cdu/c0", range(4), 0.10)
    ours = planned(CFG, topo, workload, "cdu/c0", State.QUARANTINE)
    end = topo.jobs[0].end
    assert "island_domain" in {
        d.action for d in contain(ours, EngineView(**{**v.__dict__, "now": end - 8 * 3600}))
    }
    late = contain(ours, EngineView(**{**v.__dict__, "now": end - 600}))
    assert "island_domain" not in {d.action for d in late}


def test_a_tie_goes_to_the_less_disruptive_option() -> None:
    """6.25% slowdown of 64 GPUs over 4 h is 16 GPU-h, exactly a 15-minute restart of 64 GPUs."""
    jobs, dom = situation(slowdown=np.full((1, 1), 0.0625), restart_h=np.full(1, 0.25), loss_h=np.full(1, 0.25),
                          spare_nodes=np.full((1, 1), 8))  # fmt: skip
    val = value_containment(jobs, dom)
    assert val.cost[0, Option.TOLERATE] == val.cost[0, Option.ISLAND] == 16.0
    assert Option(int(val.choice[0])) is Option.TOLERATE
    jobs, dom = situation(slowdown=np.full((1, 1), 0.07), restart_h=np.full(1, 0.25), loss_h=np.full(1, 0.25),
                          spare_nodes=np.full((1, 1), 8))  # fmt: skip
    assert Option(int(value_containment(jobs, dom).choice[0])) is Option.ISLAND  # a little more: it moves


def test_bad_inputs_are_named() -> None:
    jobs, dom = situation(duration_h=np.array([-1.0]))
    with pytest.raises(ValueError, match=r"domains.duration_h\[0\] must be finite and >= 0, got -1.0"):
        value_containment(jobs, dom)
    jobs, dom = situation(trip_p=np.full((1, 1), 1.5))
    with pytest.raises(ValueError, match=r"domains.trip_p\[0, 0\] must be a probability, got 1.5"):
        value_containment(jobs, dom)
    jobs, dom = situation(repair_h=np.array([np.nan]))
    with pytest.raises(ValueError, match=r"domains.repair_h\[0\] must be finite and >= 0, got nan"):
        value_containment(jobs, dom)
    jobs, dom = situation(in_gpus=np.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"domains.in_gpus has shape \(1, 2\), expected \(1, 1\)"):
        value_containment(jobs, dom)
    for bad in (np.nan, -1.0):  # a job's remaining time: open-ended (inf) is fine, unknown or negative is not
        jobs, dom = situation(remaining_h=np.array([bad]))
        with pytest.raises(ValueError, match=rf"jobs.remaining_h\[0\] must be finite and >= 0, got {bad}"):
            value_containment(jobs, dom)
    with pytest.raises(
        InputError, match=r"fault_duration_s\.cdu: a duration must be finite and > 0 s, got 0"
    ):
        config_from_mapping({"economics": {"fault_duration_s": {"cdu": 0}}})
    with pytest.raises(InputError, match="fault_duration_s: missing rack"):
        config_from_mapping({"economics": {"fault_duration_s": {"rack": None}}})


# ---- through the real Controller ---------------------------------------------------------------

TICK, START = 30.0, 1000.0
GPU_SIDE = [KIND_CODE[k] for k in (EntityKind.GPU, EntityKind.NODE, EntityKind.LINK)]


def run_cdu_flow_loss(
    spares: bool,
    *,
    batch_end: float = 1e10,
    held: bool = False,
    ticks: int = 25,
    heat_from: int | None = None,
    level_at: float = np.inf,
    cfg: Config = CFG,
) -> list[DecisionRecord]:
    """cdu/c0 (n00, n01) loses flow while its GPUs run 50% slow in "train" (n00-n07): every decision.
    Without spares "batch" holds n08-n31 until ``batch_end``; ``held``: the safety layer holds them.
    ``heat_from``: from that tick c0's GPUs climb 0.5 °C a tick (1 °C/min) from 80 °C, up to
    ``level_at``, where the climb stops (the fault's ramp ended)."""
    inv = small_inventory(nodes=32, gpus=1, racks_per_cdu=1, nodes_per_rack=2)
    names = [f"n{i:02d}" for i in range(32)]
    jobs = [JobRecord("train", SYNC, tuple(names[:8]), 0.0, 1e10)]
    jobs.append(JobRecord("batch", BATCH, tuple(names[8 : 16 if spares else 32]), 0.0, batch_end))
    topo = build_topology(inv, tuple(jobs))
    ctl = Controller(topo, cfg)
    if held:
        ctl.held_nodes = np.arange(8, 32, dtype=np.int64)
    rng = np.random.default_rng(11)
    slow = {(f"gpu/{n}/0", "gpu.step_time_s"): 3.0 for n in ("n00", "n01")}
    out: list[DecisionRecord] = []
    for tick in range(1, WARM + ticks):
        now = START + TICK * tick
        over = dict(slow) if tick > WARM else {}
        if heat_from is not None and tick >= heat_from:
            temp = min(80.0 + 0.5 * (tick - heat_from), level_at)
            over |= {(f"gpu/{n}/0", "gpu.temp_c"): temp for n in ("n00", "n01")}
        whole = normal_batch(topo, now, rng, overrides=over or None)
        keep = np.isin(topo.kind_code[whole.entity], GPU_SIDE)  # the plant's readings: plant_batch's
        gpus = TelemetryBatch(
            whole.entity[keep], whole.signal[keep], whole.timestamp[keep], whole.value[keep]
        )
        plant = plant_batch(topo, tick, rng, flow_loss)
        out.extend(ctl.tick(now, TelemetryBatch.concat([gpus, plant])).decisions)
    return out


def test_controller_tolerates_a_cdu_quarantine_with_no_spare_nodes() -> None:
    out = [d for d in run_cdu_flow_loss(spares=False) if d.cause == "cdu/c0" and d.state == "quarantine"]
    assert out, "cdu/c0 never entered quarantine"
    assert "island_domain" not in {d.action for d in out}
    assert {("checkpoint_now", "job/train"), ("restrict_admission", "cdu/c0")} <= acts(out)


def test_controller_islands_a_cdu_quarantine_with_spare_nodes() -> None:
    out = [d for d in run_cdu_flow_loss(spares=True) if d.cause == "cdu/c0" and d.state == "quarantine"]
    [island] = [d for d in out if d.action == "island_domain"]
    assert island.reason.endswith(": island the domain")


def test_controller_islands_a_tolerated_cdu_once_its_gpus_trip_is_due_within_act_within_s() -> None:
    """No spares: tolerated on entry. From tick 55 c0's GPUs climb 1 °C a minute from 80 °C; once
    within 10 °C of 92 °C the climb is projected, and the CDU is valued again every tick (not
    ``economics.revalue_s`` later), but the trip is weighed only once it is due within
    ``hazard.thermal_trip.act_within_s`` (3 min): from 89 °C at the latest, before 92 °C. A job
    that trips waits out a day's repair, an island stops it only while the fault lasts. The reason
    names the GPU and its time."""
    heat_from = 55
    out = run_cdu_flow_loss(spares=False, ticks=65, heat_from=heat_from)
    ours = [d for d in out if d.cause == "cdu/c0" and d.state == "quarantine"]
    tolerated = [d for d in ours if d.action == "restrict_admission"]
    assert tolerated and tolerated[0].ts < START + TICK * heat_from
    [island] = [d for d in ours if d.action == "island_domain"]
    at_86 = START + TICK * (heat_from + 12)  # 86 °C: the straight climb is 6 min from 92 °C
    at_92 = START + TICK * (heat_from + 24)
    assert at_86 < island.ts < at_92
    periodic = tolerated[0].ts + CFG.economics.revalue_s * np.arange(1, 4)
    assert np.abs(periodic - island.ts).min() > 5 * TICK  # not a periodic valuation's tick
    assert "its tolerance valued again" in island.reason
    assert "island the domain (2 GPU(s) heading for shutdown at 92 °C, gpu/n0" in island.reason
    # the same heat without the projection is tolerated through every periodic valuation
    off = config_from_mapping({"hazard": {"thermal_trip": None}})
    assert not [d for d in run_cdu_flow_loss(spares=False, ticks=65, heat_from=heat_from, cfg=off)
                if d.action == "island_domain"]  # fmt: skip


def test_a_climb_that_stops_short_of_shutdown_before_its_trip_is_due_islands_nothing() -> None:
    """The climb is projected from 82 °C and stops at 88 °C, 4 °C short (held-out seed 13036: a
    CDU's flow loss ended its ramp 4 °C short, after an island taken six minutes out had held 96
    GPUs idle for hours). Weighed only once due within ``act_within_s``, the trip never is; weighed
    as soon as it is projected (``act_within_s`` = ``within_s``), the CDU is islanded for nothing."""
    heat_from = 50
    stops = run_cdu_flow_loss(spares=False, ticks=60, heat_from=heat_from, level_at=88.0)
    assert not [d for d in stops if d.action == "island_domain"]
    eager = config_from_mapping({"hazard": {"thermal_trip": {"act_within_s": 3600}}})
    early = run_cdu_flow_loss(spares=False, ticks=60, heat_from=heat_from, level_at=88.0, cfg=eager)
    [island] = [d for d in early if d.action == "island_domain"]
    assert island.ts < START + TICK * (heat_from + 16)  # before the climb stopped


@pytest.mark.parametrize("held", [False, True], ids=["freed", "freed but held by the safety layer"])
def test_controller_islands_a_tolerated_cdu_once_a_job_ends_and_frees_spares(held: bool) -> None:
    """Tolerated at tick 28 for want of spares; the batch job ends at tick 35. The next valuation
    (``economics.revalue_s`` after the last) islands the CDU, unless the freed nodes are held."""
    end = START + TICK * 35
    out = run_cdu_flow_loss(spares=False, batch_end=end, held=held, ticks=60)
    ours = [d for d in out if d.cause == "cdu/c0" and d.state == "quarantine"]
    assert ("restrict_admission", "cdu/c0") in acts(ours)
    islands = [d for d in ours if d.action == "island_domain"]
    if held:
        assert islands == []
        return
    [island] = islands
    assert end < island.ts <= end + CFG.economics.revalue_s
    assert "its tolerance valued again" in island.reason and island.reason.endswith(": island the domain")


# The failure-amplification firewall: a gray leaf under synchronous jobs (control/containment.py).
# l1 = n04-n07: "a" (n00-n04) and "b" (n07-n11) each have one node under it, batch the other two.
LEAF_JOBS = {"a": (SYNC, range(0, 5)), "batch": (BATCH, [5, 6]), "b": (SYNC, range(7, 12))}


def gray_leaf(cfg: Config, spares: bool, fabric: float) -> tuple[Topology, list[DecisionRecord]]:
    """The leaf degraded, slowing each synchronous job by ``fabric`` (its collectives: no rank's own
    step shows it); n12-n15 (l3) free, or held by a second batch job."""
    jobs = dict(LEAF_JOBS) if spares else {**LEAF_JOBS, "fill": (BATCH, range(12, 16))}
    topo, workload = fleet(16, 4, 4, jobs)
    v = view(cfg, topo, workload, [], [], 0.0)
    v.states[topo.index["switch/l1"]] = int(State.DEGRADED)
    sync = np.array([j.job_class is SYNC for j in topo.jobs])
    v = replace(v, fabric_slowdown=np.where(sync, fabric, 0.0))
    return topo, contain(planned(cfg, topo, workload, "switch/l1", State.DEGRADED), v)


def test_a_gray_leaf_moves_the_synchronous_jobs_ranks_to_spares_elsewhere() -> None:
    """30% for the leaf's 2 h against one 10-minute restart each: both jobs' ranks under the leaf
    move (their nodes drained, the runtime restarts them on spares), the leaf's batch stays, and
    the leaf itself is not isolated (islanding would restart the batch job too, for nothing)."""
    _, out = gray_leaf(CFG, True, 0.30)
    assert {
        ("drain_node", "node/n04"),
        ("drain_node", "node/n07"),
        ("restrict_admission", "switch/l1"),
    } <= acts(out)
    assert not {d for d in out if d.action == "isolate_switch" or d.entity in ("node/n05", "node/n06")}
    [drain] = [d for d in out if d.entity == "node/n04"]
    assert drain.reason.endswith("move the critical job(s) out, restrict admission")


def test_a_domain_whose_critical_jobs_are_moved_off_stays_tolerated() -> None:
    """Moving the critical jobs' ranks off a leaf, a rack or a CDU leaves the domain in service
    for the work left under it (admission ``degraded``, valued again): taken out of the tolerated
    set, its free nodes would read ``quarantine`` and a job restarting could not use them (held-out
    seed 9018: a job waited 7.6 h for one node under a CDU whose other racks ran work)."""
    topo, out = gray_leaf(CFG, True, 0.30)
    drains = [d for d in out if d.action == "drain_node"]
    assert drains and causes_of(topo, drains).size == 0
    for domain in ("cdu/c1", "rack/r1"):
        assert causes_of(topo, [replace(d, cause=domain) for d in drains]).size == 0
    assert [topo.ids[g] for g in causes_of(topo, [replace(drains[0], cause="gpu/n04/0")])] == ["gpu/n04/0"]
    island = replace(drains[0], action="island_domain", entity="cdu/c1", cause="cdu/c1")
    assert [topo.ids[g] for g in causes_of(topo, [island])] == ["cdu/c1"]


def test_a_gray_leaf_with_no_spares_outside_is_tolerated() -> None:
    _, out = gray_leaf(CFG, False, 0.30)
    assert not [d for d in out if d.action in ("drain_node", "isolate_switch")]
    assert ("restrict_admission", "switch/l1") in acts(out)


def test_a_leaf_that_slows_nothing_is_tolerated() -> None:
    _, out = gray_leaf(CFG, True, 0.0)
    assert not [d for d in out if d.action in ("drain_node", "isolate_switch")]


@pytest.mark.parametrize(
    ("criticality", "moved"), [("exploratory", False), ("standard", False), ("release", True)]
)
def test_criticality_changes_a_gray_leaf_s_answer(criticality: str, moved: bool) -> None:
    """5% for 2 h of 20 GPUs (2 GPU-h) against a 10-minute restart of 20 GPUs (3.3 GPU-h): a
    standard job tolerates it; a release job weighs its pace x4 and moves."""
    _, out = gray_leaf(config({"a": criticality, "b": criticality}), True, 0.05)
    assert (("drain_node", "node/n04") in acts(out)) is moved
    assert (("drain_node", "node/n07") in acts(out)) is moved


def test_controller_keeps_a_quarantined_idle_uplink_in_service_while_a_job_waits() -> None:
    """Through the engine's tick: a three-node job restarting on two holds them and waits for a
    third; of the free nodes, n02 is held by the safety layer and n03's uplink is in quarantine.
    Kept in service (``degraded`` to admission), said once; while nobody waits, admission denies it."""
    inv = small_inventory(nodes=4, gpus=1, racks_per_cdu=1, nodes_per_rack=2)
    topo = build_topology(inv, (JobRecord("train", SYNC, ("n00", "n01", "n02"), 0.0, 1e10),))
    link = topo.index["link/n03"]
    rng = np.random.default_rng(5)
    for placement, kept in (({"train": ["n00", "n01", "n02"]}, False), ({"train": ["n00", "n01"]}, True)):
        ctl = Controller(topo, CFG, mode="act")
        ctl.set_placement(placement)
        ctl.held_nodes = np.array([2])
        for tick in range(1, 4):
            ctl.tick(1000.0 + 30.0 * tick, normal_batch(topo, 1000.0 + 30.0 * tick, rng))
        ctl.classifier.state[link] = int(State.QUARANTINE)
        res = ctl.tick(1120.0, normal_batch(topo, 1120.0, rng))
        said = [d for d in res.decisions if d.entity == "link/n03" and d.action == "restrict_admission"]
        assert len(said) == int(kept)
        assert ctl.admission_states()[link] == int(State.DEGRADED if kept else State.QUARANTINE)
        again = ctl.tick(1150.0, normal_batch(topo, 1150.0, rng))
        assert not [d for d in again.decisions if d.entity == "link/n03"]  # said once
