"""The storm brake at its edges: the count and spread thresholds are strict, the window forgets at
exactly ``window_s``, entries accumulate across ticks, and a release needs ``calm_s`` of calm each time.

Written from the mutants mutmut found surviving in ``control/storm.py`` (docs/testing.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from seamguard.control.storm import StormBrake, StormConfig, entity_domains
from seamguard.model.inventory import Inventory, NodeRecord
from seamguard.model.topology import Topology, build_topology
from tests.test_safety import fleet

# 32 nodes, 4 per rack, 2 racks per CDU, one leaf per rack: 8 racks, 4 CDUs, 8 leaves.
# n00 r0 c0 | n04 r1 c0 | n08 r2 c1 | n16 r4 c2 | n20 r5 c2 | n24 r6 c3
TOPO = fleet(nodes=32, per_rack=4, racks_per_cdu=2)
NONE = np.zeros(0, dtype=np.int64)


def brake(max_new: int = 4, max_domains: int = 2) -> StormBrake:
    cfg = StormConfig(max_new=max_new, max_domains=max_domains, window_s=300.0, calm_s=900.0)
    return StormBrake(TOPO, cfg)


def nodes(topo: Topology, *names: str) -> np.ndarray:
    return np.array([topo.lookup(f"node/{n}") for n in names], dtype=np.int64)


def test_the_count_must_exceed_max_new() -> None:
    b = brake(max_new=4)
    assert b.observe(0.0, nodes(TOPO, "n00", "n08", "n16", "n24")) == [] and not b.engaged
    assert b.spread() == (4, {"cdu": 4, "switch": 4, "rack": 4})
    (notice,) = b.observe(10.0, nodes(TOPO, "n04"))
    assert b.engaged and (notice.ts, notice.source, notice.level) == (10.0, "safety", "error")
    assert notice.message.startswith("storm brake ON: 5 entities turned non-healthy within 300 s")


def test_every_kind_must_exceed_max_domains() -> None:
    b = brake(max_new=4, max_domains=3)
    assert b.observe(0.0, nodes(TOPO, "n00", "n04", "n08", "n16", "n20")) == []
    assert b.spread() == (5, {"cdu": 3, "switch": 5, "rack": 5}) and not b.engaged
    b.observe(1.0, nodes(TOPO, "n24"))  # a fourth CDU: now every kind is past 3
    assert b.engaged


def test_the_window_accumulates_ticks_and_forgets_at_exactly_window_s() -> None:
    early = brake()
    early.observe(0.0, nodes(TOPO, "n00", "n08", "n16", "n24"))
    early.observe(299.0, nodes(TOPO, "n04"))
    assert early.engaged  # five within the window, entered over two ticks
    edge = brake()
    edge.observe(0.0, nodes(TOPO, "n00", "n08", "n16", "n24"))
    edge.observe(300.0, nodes(TOPO, "n04"))
    assert not edge.engaged and edge.spread()[0] == 1  # the first four left the window at 300 s


def test_a_release_needs_calm_s_of_calm_every_time(caplog: pytest.LogCaptureFixture) -> None:
    b = brake()
    five = nodes(TOPO, "n00", "n04", "n08", "n16", "n24")
    for start in (0.0, 5_000.0):
        b.observe(start, five)
        assert b.engaged and b.reason.startswith("storm brake ON")
        assert b.observe(start + 299.0, NONE) == []  # still in the window: still a storm
        assert b.observe(start + 300.0, NONE) == []  # calm from here
        assert b.observe(start + 1_199.0, NONE) == [] and b.engaged
        (notice,) = b.observe(start + 1_200.0, NONE)
        assert (notice.ts, notice.source, notice.level) == (start + 1_200.0, "safety", "warning")
        assert (
            notice.message
            == "storm brake released after 900 s calm (0 new in window: 0 cdu, 0 switch, 0 rack)"
        )
        assert b.engaged is False and b.reason == ""
    released = [r for r in caplog.records if r.levelname == "WARNING" and r.name == "seamguard.control.storm"]
    assert [r.getMessage() for r in released] == [notice.message] * 2


def test_a_new_brake_is_off_with_no_reason() -> None:
    b = brake()
    assert b.engaged is False and b.reason == "" and b.spread() == (0, {"cdu": 0, "switch": 0, "rack": 0})
    assert b.observe(0.0, NONE) == [] and b.engaged is False


def test_rows_and_pdus_are_domains_and_an_entity_without_gpus_has_none() -> None:
    inv = Inventory(
        tuple(
            NodeRecord(
                f"n{i:02d}", rack=f"r{i // 2}", cdu="c0", leaf="l0", gpus=2, row=f"w{i // 4}", pdu=f"p{i % 2}"
            )
            for i in range(8)
        )
    )
    topo = build_topology(inv, storage=("spare",))  # a checkpoint target no node uses: no GPU below
    row, pdu = entity_domains(topo, "row"), entity_domains(topo, "pdu")
    assert [int(row[topo.lookup(f"node/n0{i}")]) for i in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [int(pdu[topo.lookup(f"node/n0{i}")]) for i in range(8)] == [0, 1, 0, 1, 0, 1, 0, 1]
    assert int(row[topo.lookup("rack/r1")]) == 0 and int(pdu[topo.lookup("rack/r1")]) == -1  # spans both
    assert int(row[topo.lookup("storage/spare")]) == -1 and int(pdu[topo.lookup("storage/spare")]) == -1
    b = StormBrake(topo, StormConfig(max_new=2, max_domains=1, spread_kinds=("row", "pdu")))
    b.observe(0.0, nodes(topo, "n00", "n01", "n04"))
    assert b.spread() == (3, {"row": 2, "pdu": 2}) and b.engaged
