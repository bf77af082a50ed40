"""The routing controller (``seamguard.serving.routing``): a degraded transfer path loses its
pairing share, replicas that are not admissible get none, loads balance, and what cannot hold the
objective is shed or degraded."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seamguard.serving import RoutingObjective, ServingView, haproxy_weights, plan_routing
from seamguard.serving.routing import pair_hints

OBJ = RoutingObjective(ttft_slo_ms=500.0, itl_slo_ms=50.0, prefill_ms=200.0)


def view(p: int = 2, d: int = 2, **over: object) -> ServingView:
    base: dict[str, object] = {
        "prefill": tuple(f"prefill/{i}" for i in range(p)),
        "decode": tuple(f"decode/{i}" for i in range(d)),
        "prefill_ok": np.ones(p, bool),
        "decode_ok": np.ones(d, bool),
        "prefill_load": np.full(p, 4.0),
        "decode_load": np.full(d, 8.0),
        "path_latency_ms": np.full((p, d), 20.0),
        "path_jitter_ms": np.full((p, d), 2.0),
        "path_failure_rate": np.zeros((p, d)),
        "path_ok": np.ones((p, d), bool),
    }
    base.update(over)
    return ServingView(**base)  # type: ignore[arg-type]


def test_healthy_even_pools_split_evenly_and_sum_to_one() -> None:
    plan = plan_routing(view(), OBJ)
    assert plan.pair_weight.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(plan.pair_weight, 0.25, atol=1e-9)
    np.testing.assert_allclose(plan.prefill_weight, plan.pair_weight.sum(axis=1))
    np.testing.assert_allclose(plan.decode_weight, plan.pair_weight.sum(axis=0))
    assert plan.shed == 0.0 and not plan.degrade and plan.reasons == ()


def test_a_slow_path_between_healthy_replicas_loses_its_share_and_both_ends_re_pair() -> None:
    lat = np.full((2, 2), 20.0)
    lat[0, 0] = 400.0  # 200 ms prefill + 400 ms transfer: over the 500 ms objective
    plan = plan_routing(view(path_latency_ms=lat), OBJ)
    assert plan.pair_weight[0, 0] == 0.0
    # Both replicas still serve: prefill/0 is re-paired with decode/1, decode/0 with prefill/1.
    assert plan.pair_weight[0, 1] == pytest.approx(0.5, abs=1e-6)
    assert plan.pair_weight[1, 0] == pytest.approx(0.5, abs=0.1)
    np.testing.assert_allclose(plan.prefill_weight, 0.5, atol=1e-6)
    np.testing.assert_allclose(plan.decode_weight, 0.5, atol=0.1)  # balance < 1: near, not exact
    assert plan.shed == 0.0 and not plan.degrade
    assert any("prefill/0->decode/0" in r for r in plan.reasons)


@pytest.mark.parametrize(
    "field,value",
    [
        ("path_ok", False),  # the state model calls the path degraded
        ("path_jitter_ms", 120.0),  # 20 + 2 x 120 ms: a tail over the budget
        ("path_failure_rate", 0.5),  # half the transfers fail
    ],
)
def test_each_path_signal_alone_takes_the_pairing_away(field: str, value: object) -> None:
    base = view()
    arr = np.array(getattr(base, field), copy=True)
    arr[1, 1] = value
    plan = plan_routing(view(**{field: arr}), OBJ)
    assert plan.pair_weight[1, 1] == 0.0
    assert plan.pair_weight[1, 0] > 0.4 and plan.pair_weight[0, 1] > 0.4


def test_a_worse_but_good_path_gets_less_than_a_better_one() -> None:
    lat = np.full((1, 2), 20.0)
    lat[0, 1] = 60.0  # still within the objective
    plan = plan_routing(view(1, 2, path_latency_ms=lat, decode_load=np.zeros(2)), OBJ)
    assert 0.0 < plan.pair_weight[0, 1] < plan.pair_weight[0, 0]


def test_replicas_not_admissible_get_nothing() -> None:
    plan = plan_routing(
        view(3, 3, prefill_ok=np.array([True, False, True]), decode_ok=np.array([False, True, True])), OBJ
    )
    assert plan.prefill_weight[1] == 0.0 and plan.decode_weight[0] == 0.0
    assert plan.pair_weight.sum() == pytest.approx(1.0)
    w = haproxy_weights(plan)
    assert w["prefill/1"] == 0 and w["decode/0"] == 0
    assert w["prefill/0"] == w["prefill/2"] == 256


def test_loads_balance_a_busier_replica_gets_less() -> None:
    plan = plan_routing(view(prefill_load=np.array([2.0, 10.0]), decode_load=np.array([30.0, 5.0])), OBJ)
    assert plan.prefill_weight[0] > plan.prefill_weight[1]
    assert plan.decode_weight[1] > plan.decode_weight[0]
    assert plan.pair_weight.sum() == pytest.approx(1.0)


def test_capacity_weighs_marginals_and_itl_over_the_objective_loses_share() -> None:
    plan = plan_routing(view(prefill_capacity=np.array([1.0, 3.0])), OBJ)
    assert plan.prefill_weight[1] == pytest.approx(0.75, abs=1e-6)
    plan = plan_routing(view(decode_itl_ms=np.array([100.0, 30.0])), OBJ)
    assert plan.decode_weight[0] < 0.3


def test_all_paths_degraded_degrades_and_routes_over_the_least_bad() -> None:
    lat = np.array([[900.0, 700.0], [800.0, 1000.0]])
    plan = plan_routing(view(path_latency_ms=lat), OBJ)
    assert plan.degrade
    assert plan.pair_weight.sum() == pytest.approx(1.0)
    assert plan.pair_weight[0, 1] > plan.pair_weight[0, 0]
    assert any("no path holds" in r for r in plan.reasons)


def test_nothing_admissible_sheds_everything() -> None:
    plan = plan_routing(view(prefill_ok=np.zeros(2, bool)), OBJ)
    assert plan.shed == 1.0 and plan.degrade
    assert plan.pair_weight.sum() == 0.0
    assert set(haproxy_weights(plan).values()) == {0}


def test_capacity_short_of_demand_sheds_the_excess() -> None:
    cap = np.full(2, 10.0)
    ok = view(prefill_capacity=cap, decode_capacity=cap, demand_rps=15.0)
    assert plan_routing(ok, OBJ).shed == 0.0  # 15 < 0.9 x 20
    lost = view(
        prefill_capacity=cap, decode_capacity=cap, demand_rps=15.0, prefill_ok=np.array([True, False])
    )
    plan = plan_routing(lost, OBJ)
    assert plan.shed == pytest.approx(1.0 - 9.0 / 15.0)
    assert plan.degrade


def test_unknown_measurements_are_taken_as_the_typical_path() -> None:
    lat = np.full((2, 2), 20.0)
    lat[0, 1] = math.nan
    plan = plan_routing(view(path_latency_ms=lat), OBJ)
    np.testing.assert_allclose(plan.pair_weight, 0.25, atol=1e-9)


def test_haproxy_weights_scale_per_pool_and_hints_rank_decodes() -> None:
    lat = np.full((2, 3), 20.0)
    lat[0, 0] = 450.0
    plan = plan_routing(view(2, 3, path_latency_ms=lat), OBJ)
    w = haproxy_weights(plan, scale=100)
    assert max(w["decode/0"], w["decode/1"], w["decode/2"]) == 100
    assert all(0 <= v <= 100 for v in w.values())
    hints = pair_hints(plan)
    assert "decode/0" not in [d for d, _ in hints["prefill/0"]]
    assert sum(s for _, s in hints["prefill/1"]) == pytest.approx(1.0)


def test_the_view_checks_its_shapes() -> None:
    with pytest.raises(ValueError, match="path_ok"):
        view(path_ok=np.ones((3, 2), bool))
