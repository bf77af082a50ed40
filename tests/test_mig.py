"""MIG GPU instances: declared in the inventory, entities under their GPU, never healthier than it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seamguard.config import load_config
from seamguard.control.controller import Controller
from seamguard.control.engine_world import mark_repaired
from seamguard.errors import InputError
from seamguard.model.catalog import signal_catalog
from seamguard.model.entities import EntityKind, kind_of, mig_id
from seamguard.model.inventory import parse_mig_layout, read_inventory
from seamguard.model.states import State
from seamguard.model.topology import Topology, build_topology
from seamguard.telemetry.batch import TelemetryBatch
from tests.test_controller import normal_batch

CAT = signal_catalog()


def write_inventory(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "inventory.csv"
    path.write_text("node,rack,cdu,leaf,gpus,mig\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_the_mig_column_names_each_gpus_instances(tmp_path: Path) -> None:
    inv = read_inventory(
        write_inventory(tmp_path, ["a1,r0,c0,l0,4,7-10", "a2,r0,c0,l0,4,0-1:1;2|3:7-13", "h1,r0,c0,l0,8,"])
    )
    assert [n.mig for n in inv.nodes] == [
        ((7, 8, 9, 10),) * 4,
        ((1, 2), (1, 2), (), tuple(range(7, 14))),
        (),
    ]
    topo = build_topology(inv)
    assert topo.count(EntityKind.MIG) == 16 + 4 + 7
    eid = mig_id("a2", 3, 13)
    assert eid == "gpu/a2/3/mig/13" and topo.lookup(eid) is not None
    assert kind_of(eid) is EntityKind.MIG and topo.kind_of(topo.index[eid]) is EntityKind.MIG
    assert kind_of("gpu/a2/3") is EntityKind.GPU
    local = int(topo.local[topo.index[eid]])
    assert topo.ids[topo.members[EntityKind.GPU][topo.mig_gpu[local]]] == "gpu/a2/3"
    assert int(topo.mig_instance[local]) == 13


@pytest.mark.parametrize(
    ("column", "problem"),
    [
        ("9:1", "GPU index '9' must be an ascending range within 0..3"),
        ("0:1|0:2", "GPU 0 is given MIG instances twice"),
        ("x", "instance id 'x' is not a number or a range a-b"),
        ("3-1", "instance id '3-1' must be an ascending range"),
        ("0:99", "within 0..64"),
    ],
)
def test_a_bad_mig_column_names_the_line_and_the_problem(tmp_path: Path, column: str, problem: str) -> None:
    with pytest.raises(InputError) as err:
        read_inventory(write_inventory(tmp_path, ["a1,r0,c0,l0,4,", f"a2,r0,c0,l0,4,{column}"]))
    assert err.value.where.endswith("inventory.csv:3") and problem in err.value.problem


def test_a_mig_column_on_a_node_without_gpus_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"inventory.csv:2: column 'mig': the node has no GPUs"):
        read_inventory(write_inventory(tmp_path, ["cpu1,r0,c0,l0,0,0:1"]))


def mig_fleet() -> Topology:
    from tests.conftest import small_inventory

    inv = small_inventory()
    nodes = tuple(
        type(n)(**{**n.__dict__, "mig": parse_mig_layout("7-8", n.gpus) if n.node == "n01" else ()})
        for n in inv.nodes
    )
    return build_topology(type(inv)(nodes))


def test_instances_follow_their_gpu_and_plan_nothing_of_their_own() -> None:
    topo = mig_fleet()
    ctl = Controller(topo, load_config())
    rng = np.random.default_rng(0)
    for i in range(4):  # fresh GPU telemetry: its instances are seen with it, so healthy, not unknown
        now = 1000.0 + 30 * i
        ctl.tick(now, normal_batch(topo, now, rng))
    migs = topo.members[EntityKind.MIG]
    assert migs.size == 8 and (ctl.states[migs] == int(State.HEALTHY)).all()
    now = 1000.0 + 30 * 5
    g = topo.index["gpu/n01/2"]
    dbe = TelemetryBatch(
        np.array([g]), np.array([CAT["gpu.ecc_dbe_total"].index]), np.array([now - 1]), np.array([1.0])
    )
    res = ctl.tick(now, TelemetryBatch.concat([normal_batch(topo, now, rng), dbe]))
    failed = {t.entity: t.reason for t in res.transitions if t.to_state == "failed"}
    assert set(failed) == {"gpu/n01/2", "gpu/n01/2/mig/7", "gpu/n01/2/mig/8"}
    assert "its GPU gpu/n01/2" in failed["gpu/n01/2/mig/7"]
    assert ctl.states[topo.index["gpu/n01/1/mig/7"]] == int(State.HEALTHY)  # a sibling GPU's instance
    assert {d.cause for d in res.decisions} == {"gpu/n01/2"}  # the drain comes from the GPU alone


def test_a_repaired_gpu_takes_its_instances_along() -> None:
    topo = mig_fleet()
    ctl = Controller(topo, load_config())
    rng = np.random.default_rng(0)
    for i in range(3):
        ctl.tick(1000.0 + 30 * i, normal_batch(topo, 1000.0 + 30 * i, rng))
    now = 1000.0 + 30 * 4
    g = topo.index["gpu/n01/2"]
    dbe = TelemetryBatch(
        np.array([g]), np.array([CAT["gpu.ecc_dbe_total"].index]), np.array([now - 1]), np.array([1.0])
    )
    ctl.tick(now, TelemetryBatch.concat([normal_batch(topo, now, rng), dbe]))
    back = mark_repaired(ctl, now + 10, ["gpu/n01/2"], "GPU swapped").transitions
    assert {r.entity for r in back} == {"gpu/n01/2", "gpu/n01/2/mig/7", "gpu/n01/2/mig/8"}
    assert all(r.to_state == "healthy" for r in back)


def test_the_storm_brake_counts_an_instance_as_its_gpu() -> None:
    """Five GPUs of seven instances each failing on five racks: five entities, not forty."""
    from seamguard.control.safety import SafetyLayer
    from seamguard.control.safety_config import SafetyConfig
    from seamguard.control.storm import StormConfig
    from seamguard.journal.records import TransitionRecord
    from seamguard.model.inventory import Inventory, NodeRecord

    nodes = tuple(
        NodeRecord(f"m{i}", f"r{i}", f"c{i}", f"l{i}", 1, mig=parse_mig_layout("1-7", 1)) for i in range(5)
    )
    topo = build_topology(Inventory(nodes))
    layer = SafetyLayer(topo, SafetyConfig(storm=StormConfig(max_new=8, max_domains=2)))
    failing = [f"gpu/m{i}/0" for i in range(5)] + [
        f"gpu/m{i}/0/mig/{k}" for i in range(5) for k in range(1, 8)
    ]
    transitions = [TransitionRecord(100.0, e, "healthy", "failed", 1.0, 0.0, 1.0, "XID 79") for e in failing]
    assert not layer.tick(100.0, [], transitions).braked
    assert layer.brake.spread()[0] == 5
    four_more = [TransitionRecord(130.0, f"gpu/m{i}/0/mig/{k}", "healthy", "failed", 1.0, 0.0, 1.0, "x")
                 for i in range(5) for k in range(1, 8)]  # fmt: skip
    assert not layer.tick(130.0, [], four_more).braked  # instances alone add no entity either
