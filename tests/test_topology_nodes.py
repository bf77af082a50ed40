"""Which nodes an entity id covers: one answer for the planner, the safety layer and the twin."""

from __future__ import annotations

from seamguard.model.entities import EntityKind
from seamguard.model.topology import node_of, nodes_below
from tests.test_safety import fleet


def test_a_part_lands_on_its_node_and_a_domain_covers_its_nodes() -> None:
    topo = fleet(nodes=32, per_rack=8, racks_per_cdu=2)
    names = topo.names[EntityKind.NODE]
    at = topo.index.__getitem__
    for eid in ("node/n05", "link/n05", "gpu/n05/3"):
        assert names[node_of(topo, at(eid))] == "n05"
        assert [names[n] for n in nodes_below(topo, at(eid))] == ["n05"]
    assert node_of(topo, at("rack/r1")) is None
    assert [names[n] for n in nodes_below(topo, at("rack/r1"))] == [f"n{i:02d}" for i in range(8, 16)]
    assert nodes_below(topo, at("cdu/c1")).tolist() == list(range(16, 32))
    assert nodes_below(topo, at("switch/l1")).tolist() == [4, 5, 6, 7]  # a leaf of four nodes
