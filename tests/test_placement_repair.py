"""Live placement, operator repairs and node admission: the engine's hooks for schedulers."""

from __future__ import annotations

import numpy as np
import pytest

from seamguard.config import load_config
from seamguard.control.admissibility import node_admission
from seamguard.control.controller import Controller
from seamguard.control.engine_world import mark_repaired
from seamguard.model.entities import EntityKind
from seamguard.model.states import JobClass, State
from seamguard.model.topology import Topology
from seamguard.telemetry.batch import TelemetryBatch
from tests.test_controller import CAT, normal_batch

CFG = load_config()


def test_live_placement_replaces_the_job_table(topology: Topology) -> None:
    ctl = Controller(topology, CFG)
    before = ctl.workload_at(10.0)
    assert before.node_job[7] == -1  # n07 is idle in the job table
    ctl.set_placement({"train": ["n00", "n01", "n02", "n03", "n07"]})
    after = ctl.workload_at(10.0)
    nodes = topology.names[EntityKind.NODE]
    assert nodes[7] == "n07" and after.node_job[7] == 0 and after.node_job[4] == -1
    assert after.job_gpus[0] == 5 * 4 and after.job_gpus[1] == 0  # the batch job is not running
    job = topology.members[EntityKind.JOB][0]
    assert ctl._amp is not None and ctl._amp.exposure[job] == 20


@pytest.mark.parametrize(
    ("placement", "message"),
    [
        ({"nope": ["n00"]}, "job 'nope'"),
        ({"train": ["n99"]}, "node 'n99'"),
        ({"train": ["n00"], "batch": ["n00"]}, "node 'n00' to both 'train' and 'batch'"),
    ],
)
def test_bad_placements_are_refused_by_name(
    topology: Topology, placement: dict[str, list[str]], message: str
) -> None:
    ctl = Controller(topology, CFG)
    with pytest.raises(ValueError, match=message):
        ctl.set_placement(placement)


def _xid_batch(topology: Topology, now: float, gpu: str, code: int) -> TelemetryBatch:
    return TelemetryBatch(
        np.array([topology.index[gpu]]),
        np.array([CAT["gpu.xid"].index]),
        np.array([now - 1.0]),
        np.array([float(code)]),
    )


def test_mark_repaired_clears_state_and_xid_memory_but_keeps_offences(topology: Topology) -> None:
    ctl = Controller(topology, CFG)
    rng = np.random.default_rng(1)
    now = 1000.0
    for _ in range(3):
        now += 30.0
        ctl.tick(now, normal_batch(topology, now, rng))
    now += 30.0
    batch = TelemetryBatch.concat(
        [normal_batch(topology, now, rng), _xid_batch(topology, now, "gpu/n02/1", 79)]
    )
    ctl.tick(now, batch)
    gpu = topology.index["gpu/n02/1"]
    assert ctl.states[gpu] == State.FAILED
    offences = ctl.classifier.offences[gpu]
    assert offences >= 1
    now += 600.0
    repair = mark_repaired(ctl, now, ["node/n02"], "GPU 1 replaced (RMA 4711)")
    records = repair.transitions
    # The recovery calls for its undo, which the safety layer holds for the recovery delay.
    assert [(d.action, d.entity, d.state) for d in repair.decisions] == [
        ("restore_admission", "gpu/n02/1", "healthy")
    ]
    assert [r.entity for r in records] == ["gpu/n02/1"]
    assert records[0].from_state == "failed" and records[0].to_state == "healthy"
    assert records[0].reason == "operator: GPU 1 replaced (RMA 4711)"
    assert ctl.states[gpu] == State.HEALTHY
    assert ctl.classifier.offences[gpu] == offences
    # Without the XID memory cleared, the next tick would push it straight back out of healthy.
    now += 30.0
    result = ctl.tick(now, normal_batch(topology, now, rng))
    assert all(t.entity != "gpu/n02/1" for t in result.transitions)
    assert ctl.states[gpu] == State.HEALTHY
    with pytest.raises(ValueError, match="unknown entity 'node/zz'"):
        mark_repaired(ctl, now, ["node/zz"], "x")


def test_a_counter_that_moved_during_the_repair_is_not_a_new_failure(topology: Topology) -> None:
    ctl = Controller(topology, CFG)
    rng = np.random.default_rng(2)
    now = 1000.0
    for _ in range(3):
        now += 30.0
        ctl.tick(now, normal_batch(topology, now, rng))
    gpu = topology.index["gpu/n02/1"]
    # The GPU's double-bit error happened while it was out (its last report before it died said 0);
    # it comes back from repair with the driver's count of 1 and never increases again.
    now += 3600.0
    mark_repaired(ctl, now, ["node/n02"], "GPU reseated")
    for _ in range(3):
        now += 30.0
        batch = normal_batch(topology, now, rng, overrides={("gpu/n02/1", "gpu.ecc_dbe_total"): 1.0})
        ctl.tick(now, batch)
        assert ctl.states[gpu] == State.HEALTHY
    now += 30.0
    batch = normal_batch(topology, now, rng, overrides={("gpu/n02/1", "gpu.ecc_dbe_total"): 2.0})
    ctl.tick(now, batch)
    assert ctl.states[gpu] == State.FAILED  # a real new error still counts


def test_node_admission_takes_the_worst_of_its_dependencies(topology: Topology) -> None:
    states = np.full(topology.n_entities, int(State.HEALTHY), dtype=np.int64)
    states[topology.index["gpu/n01/2"]] = int(State.QUARANTINE)
    states[topology.index["cdu/c1"]] = int(State.DEGRADED)  # racks r2, r3: nodes n04-n07
    sync = node_admission(CFG, topology, states, JobClass.SYNC_TRAINING)
    batch = node_admission(CFG, topology, states, JobClass.ASYNC_BATCH_INFERENCE)
    assert sync.tolist() == [0, 2, 0, 0, 1, 1, 1, 1]  # n01 deny (a GPU in quarantine), CDU c1 avoid
    assert batch.tolist() == [0, 2, 0, 0, 0, 0, 0, 0]  # batch inference admits degraded


def test_rows_and_pdus_nobody_classifies_do_not_make_every_node_avoided() -> None:
    """Rows and PDUs report nothing and are never classified: the engine holds them unknown for
    good. Read as an ancestor's verdict, that made every node one a synchronous job should avoid,
    so no node anywhere was a spare. A node whose own telemetry is silent is still avoided."""
    from seamguard.model.topology import build_topology
    from seamguard.twin.cluster import ClusterSpec, generate_cluster

    inv = generate_cluster(ClusterSpec(cdus=2, racks_per_cdu=2, nodes_per_rack=2, gpus_per_node=2,
                                       nodes_per_leaf=4, storage="ckpt0", gpu_model="H100"))  # fmt: skip
    topo = build_topology(inv)
    assert topo.members[EntityKind.ROW].size and topo.members[EntityKind.PDU].size
    assert not Controller(topo, CFG).classifier.classified[topo.members[EntityKind.ROW]].any()
    states = np.full(topo.n_entities, int(State.HEALTHY), dtype=np.int64)
    states[topo.members[EntityKind.ROW]] = int(State.UNKNOWN)
    states[topo.members[EntityKind.PDU]] = int(State.UNKNOWN)
    assert node_admission(CFG, topo, states, JobClass.SYNC_TRAINING).tolist() == [0] * 8
    states[topo.index["node/n0003"]] = int(State.UNKNOWN)  # its exporter went silent
    assert node_admission(CFG, topo, states, JobClass.SYNC_TRAINING).tolist() == [0, 0, 0, 1, 0, 0, 0, 0]


def test_a_node_that_keeps_failing_is_a_lemon_for_synchronous_jobs_only(topology: Topology) -> None:
    from seamguard.control.classifier import Changes
    from seamguard.control.lemons import LemonMemory

    memory = LemonMemory.create(topology, CFG.classifier)
    day, failed, healthy = 86400.0, int(State.FAILED), int(State.HEALTHY)
    states = np.full(topology.n_entities, healthy, dtype=np.int64)

    def fail(now: float, *entities: str) -> None:
        idx = np.array([topology.index[e] for e in entities], dtype=np.int64)
        k = idx.size
        memory.record(
            now,
            topology,
            Changes(idx, np.full(k, healthy), np.full(k, failed), np.ones(k, bool), np.zeros(k)),
        )

    def sync() -> list[int]:
        return node_admission(CFG, topology, states, JobClass.SYNC_TRAINING, memory.lemons()).tolist()

    fail(0.0, "gpu/n02/1", "gpu/n02/3", "gpu/n05/0")  # one tick, one failure per node however many parts
    assert sync() == [0] * 8
    fail(2 * day, "link/n02")  # repaired, back, and its uplink fails two days later: a lemon
    assert sync() == [0, 0, 1, 0, 0, 0, 0, 0]
    batch = node_admission(CFG, topology, states, JobClass.ASYNC_BATCH_INFERENCE, memory.lemons())
    assert batch.tolist() == [0] * 8  # async work does not stop for one rank
    fail(12 * day, "node/n05")  # n05's first failure is mostly forgotten: no pattern yet
    assert sync() == [0] * 8  # and ten days of good service have forgiven n02
