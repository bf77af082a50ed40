"""Quarantine budgets at their edges: each test pins one bound where a one-character change to the
rule (a floor, a ``<`` for ``<=``, a sign, a rounding) would change which drain is refused.

Written from the mutants mutmut found surviving in ``control/budgets.py`` (docs/testing.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from seamguard.control.budgets import (
    BudgetConfig,
    Budgets,
    PartitionConfig,
    check_partitions,
    domain_incidence,
)
from seamguard.errors import InputError
from seamguard.model.inventory import Inventory, JobClass, JobRecord, NodeRecord
from seamguard.model.topology import Topology, build_topology
from tests.conftest import small_inventory
from tests.test_safety import OPEN, fleet


def budgets(topo: Topology, **bounds: object) -> Budgets:
    return Budgets(topo, BudgetConfig.model_validate({**OPEN, "domain_kinds": (), **bounds}))


def ix(*nodes: int) -> np.ndarray:
    return np.array(nodes, dtype=np.int64)


def test_a_fleet_share_that_rounds_to_zero_still_allows_exactly_one_node() -> None:
    b = budgets(fleet(nodes=10, per_rack=5), max_fleet_pct=5.0)  # 5% of 10 = 0.5: the floor of 1 holds
    assert b.check(ix(0), 0.0) is None
    b.take(ix(0), 0.0)
    refusal = b.check(ix(1), 0.0)
    assert refusal is not None and refusal.startswith("budget max_fleet_pct")
    assert "(at most 5% = 1)" in refusal


def test_an_hourly_share_that_rounds_to_zero_still_allows_exactly_one_quarantine() -> None:
    b = budgets(fleet(nodes=10, per_rack=5), per_hour_pct=5.0)
    b.take(ix(0), 0.0)
    refusal = b.check(ix(1), 10.0)
    assert refusal is not None and refusal.startswith("budget per_hour_pct") and "= 1)" in refusal


def test_the_hourly_share_counts_the_nodes_asked_for_not_only_those_already_taken() -> None:
    b = budgets(fleet(nodes=100, per_rack=10), per_hour_pct=2.0)  # 2 an hour
    assert b.check(ix(0, 1), 0.0) is None
    refusal = b.check(ix(0, 1, 2), 0.0)  # nothing taken yet: three at once is over
    assert refusal is not None and refusal.startswith("budget per_hour_pct")


def test_the_rolling_hour_forgets_a_quarantine_exactly_one_hour_later() -> None:
    b = budgets(fleet(), per_hour=1)
    b.take(ix(0), 100.0)
    assert b.check(ix(1), 3699.0) is not None
    assert b.started_last_hour(3699.0) == 1
    assert b.check(ix(1), 3700.0) is None  # the window is (now - 1 h, now]
    assert b.started_last_hour(3700.0) == 0


def test_the_rolling_hour_is_measured_in_time_late_in_a_run() -> None:
    b = budgets(fleet(), per_hour=2)
    b.take(ix(0, 1), 50_000.0)  # two nodes at once, long after t=0
    assert b.started_last_hour(50_010.0) == 2
    refusal = b.check(ix(2), 50_010.0)
    assert refusal is not None and refusal.startswith("budget per_hour:")


def test_an_in_service_share_that_is_a_whole_number_of_nodes_is_kept_exactly() -> None:
    b = budgets(fleet(nodes=10, per_rack=5), partitions={"fleet": {"min_in_service_pct": 80.0}})
    assert b.partition_min.tolist() == [8]  # 80% of 10 is 8, not 9 for a rounding slip
    b.take(ix(0, 1), 0.0)
    refusal = b.check(ix(2), 0.0)
    assert refusal is not None and "must keep 8" in refusal


@pytest.mark.parametrize(("nodes", "pct", "keep"), [(404, 50.0, 202), (300, 34.0, 102), (7, 50.0, 4)])
def test_an_in_service_share_is_rounded_up_to_whole_nodes(nodes: int, pct: float, keep: int) -> None:
    b = budgets(fleet(nodes=nodes, per_rack=4), partitions={"fleet": {"min_in_service_pct": pct}})
    assert b.partition_min.tolist() == [keep]


def test_a_job_is_a_domain_of_its_placed_nodes_only() -> None:
    inv = small_inventory(nodes=8, nodes_per_rack=4)
    jobs = (
        JobRecord("train", JobClass.SYNC_TRAINING, ("n02", "n03", "n04", "n05", "gone"), 0.0, 1e7),
        JobRecord("serve", JobClass.ONLINE_DECODE, ("n06", "n07"), 0.0, 1e7),
    )
    matrix, labels = domain_incidence(build_topology(inv, jobs), ("job",))
    assert labels == ["job/train", "job/serve"]
    # A node the inventory does not know (``gone``) belongs to no column; no other node stands in.
    assert matrix.toarray().astype(int).T.tolist() == [[0, 0, 1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0, 1, 1]]


def test_a_job_domain_bounds_how_much_of_one_job_is_quarantined() -> None:
    jobs = (JobRecord("train", JobClass.SYNC_TRAINING, ("n00", "n01", "n02", "n03"), 0.0, 1e7),)
    topo = build_topology(small_inventory(nodes=8, nodes_per_rack=4), jobs)
    b = budgets(topo, domain_pct=25.0, domain_kinds=("job",))
    b.take(ix(0), 0.0)
    refusal = b.check(ix(1), 0.0)
    assert refusal is not None and "job/train has 1 of 4" in refusal
    assert b.check(ix(4), 0.0) is None  # a node outside the job is not bounded by it


def test_a_row_is_a_domain_when_the_inventory_names_rows() -> None:
    inv = Inventory(
        tuple(
            NodeRecord(node=f"n{i:02d}", rack=f"r{i // 2}", cdu="c0", leaf="l0", gpus=4, row=f"w{i // 4}")
            for i in range(8)
        )
    )
    b = budgets(build_topology(inv), domain_pct=25.0, domain_kinds=("row",))
    assert b.domain_labels == ["row/w0", "row/w1"] and b.domain_size.tolist() == [4, 4]
    b.take(ix(0), 0.0)
    refusal = b.check(ix(2), 0.0)  # another rack, same row
    assert refusal is not None and "row/w0 has 1 of 4" in refusal


def test_no_domain_kinds_and_no_partitions_leave_only_the_fleet_bounds() -> None:
    b = budgets(fleet(nodes=8, per_rack=4), max_nodes=3)
    assert b.domains.shape == (8, 0) and b.partitions.shape == (8, 0)
    b.take(ix(0, 1, 2), 0.0)
    refusal = b.check(ix(3), 0.0)
    assert refusal is not None and refusal.startswith("budget max_nodes")


def test_a_partition_matching_no_node_names_its_patterns() -> None:
    with pytest.raises(InputError, match=r"partitions\.ghost\.nodes.*\('x\*',\) match no node"):
        check_partitions({"ghost": PartitionConfig(nodes=("x*",))}, ["n00"])


def test_the_bounds_reported_are_the_lower_of_the_count_and_the_share() -> None:
    """What GET /metrics reports as the fleet's and the hour's limits (service/metrics.py)."""
    b = budgets(fleet(nodes=100, per_rack=10), max_nodes=7, max_fleet_pct=5.0, per_hour=3, per_hour_pct=10.0)
    assert (b.fleet_bound(), b.hour_bound()) == (5, 3)
    tiny = budgets(fleet(nodes=10, per_rack=5), max_nodes=7, max_fleet_pct=5.0, per_hour=9, per_hour_pct=1.0)
    assert (tiny.fleet_bound(), tiny.hour_bound()) == (1, 1)  # shares that round to 0 keep a floor of 1
