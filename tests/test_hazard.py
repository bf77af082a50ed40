"""Live hazard: a job's failure rate from its parts' nominal rates and the engine's scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seamguard.config import config_from_mapping, load_config
from seamguard.economics.hazard import DAY_S, job_hazard
from seamguard.errors import InputError
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import JobRecord
from seamguard.model.states import JobClass
from seamguard.model.topology import Topology, build_topology
from seamguard.model.workload import workload_from_nodes
from seamguard.twin.cluster import ClusterSpec, generate_cluster

CFG = load_config()


def fleet(cdus: int, racks: int, nodes: int, jobs: dict[str, range]) -> tuple[Topology, np.ndarray]:
    inv = generate_cluster(ClusterSpec(cdus=cdus, racks_per_cdu=racks, nodes_per_rack=nodes, gpus_per_node=8,
                                       nodes_per_leaf=16, storage="ckpt0", gpu_model="H100"))  # fmt: skip
    names = [n.node for n in inv.nodes]
    recs = [
        JobRecord(j, JobClass.SYNC_TRAINING, tuple(names[i] for i in r), 0.0, 1e9) for j, r in jobs.items()
    ]
    topo = build_topology(inv, recs)
    node_job = np.full(len(names), -1, dtype=np.int64)
    for k, r in enumerate(jobs.values()):
        node_job[list(r)] = k
    return topo, node_job


def test_a_healthy_llama_sized_job_fails_at_the_published_rate() -> None:
    # 2,048 nodes of 8 GPUs in one job: the Llama 3 405B run saw 419 interruptions in 54 days.
    topo, node_job = fleet(32, 16, 4, {"llama": range(2048)})
    work = workload_from_nodes(topo, node_job)
    zero = np.zeros(topo.n_entities)
    hz = job_hazard(CFG.hazard, topo, work, zero, zero)
    assert hz.rate_per_s[0] * 54 * DAY_S == pytest.approx(419, rel=0.01)
    assert hz.mtbf_s(0) / 3600 == pytest.approx(54 * 24 / 419, rel=0.01)
    assert hz.rate_per_s[0] == pytest.approx(hz.nominal_per_s[0])


def test_a_suspect_gpu_raises_its_job_only_and_is_named() -> None:
    topo, node_job = fleet(2, 2, 4, {"a": range(0, 8), "b": range(8, 16)})
    work = workload_from_nodes(topo, node_job)
    gfs, prs = np.zeros(topo.n_entities), np.zeros(topo.n_entities)
    gpu = topo.index["gpu/n0003/5"]
    gfs[gpu] = 0.5
    hz = job_hazard(CFG.hazard, topo, work, gfs, prs)
    h = CFG.hazard
    added = h.base_per_day[EntityKind.GPU] / DAY_S * (math.exp(h.gfs_gain * 0.5) - 1)
    assert hz.rate_per_s[0] - hz.nominal_per_s[0] == pytest.approx(added)
    assert hz.rate_per_s[1] == pytest.approx(hz.nominal_per_s[1])  # job b does not run there
    assert hz.top_part[0] == gpu
    prs[gpu] = 0.5  # spreading trouble makes it likelier still
    assert job_hazard(h, topo, work, gfs, prs).rate_per_s[0] > hz.rate_per_s[0]
    gfs[gpu] = 5.0  # never more than max_multiplier times nominal
    capped = job_hazard(h, topo, work, gfs, np.zeros(topo.n_entities))
    limit = h.base_per_day[EntityKind.GPU] / DAY_S * (h.max_multiplier - 1)
    assert capped.rate_per_s[0] - capped.nominal_per_s[0] == pytest.approx(limit)


def test_a_cdu_under_a_job_counts_once_however_many_racks() -> None:
    cfg = config_from_mapping({"hazard": {"base_per_day": {"cdu": 1.0}}})
    topo, node_job = fleet(2, 2, 4, {"wide": range(0, 16), "narrow": range(0, 0)})
    work = workload_from_nodes(topo, node_job)
    zero = np.zeros(topo.n_entities)
    with_cdu = job_hazard(cfg.hazard, topo, work, zero, zero).rate_per_s[0]
    without = job_hazard(CFG.hazard, topo, work, zero, zero).rate_per_s[0]
    assert (with_cdu - without) * DAY_S == pytest.approx(2.0)  # two CDUs under 4 racks, 16 nodes


def test_bad_hazard_config_is_named() -> None:
    with pytest.raises(InputError, match=r"hazard.*base_per_day.gpu.*finite and >= 0"):
        config_from_mapping({"hazard": {"base_per_day": {"gpu": -1.0}}})
    with pytest.raises(InputError, match=r"hazard.*max_multiplier"):
        config_from_mapping({"hazard": {"max_multiplier": 0.5}})


def test_the_engine_reports_a_hot_gpu_as_a_shorter_mtbf_for_its_job_only(topology: Topology) -> None:
    from seamguard.control.controller import Controller
    from tests.test_controller import normal_batch

    ctl = Controller(topology, CFG)
    rng = np.random.default_rng(4)
    now = 1000.0
    for _ in range(3):
        now += 30.0
        ctl.tick(now, normal_batch(topology, now, rng))
    calm = ctl.job_hazard()
    now += 30.0
    ctl.tick(now, normal_batch(topology, now, rng, overrides={("gpu/n02/1", "gpu.temp_c"): 96.0}))
    hot = ctl.job_hazard()
    train, batch = 0, 1
    assert hot.mtbf_s(train) < calm.mtbf_s(train) / 10  # a GPU past its limit is likely to trip
    assert hot.top_part[train] == topology.index["gpu/n02/1"]
    assert hot.rate_per_s[batch] == pytest.approx(calm.rate_per_s[batch])


def test_a_hazard_is_linear_in_the_learnt_scale_and_a_shard_s_cache_follows_its_state() -> None:
    """A shard is asked its hazard at the fleet's scale every tick: the unit hazard is kept and
    scaled, and forgotten whenever the parts under the jobs or their scores move."""
    from seamguard.control.controller import Controller

    topo, node_job = fleet(2, 2, 4, {"a": range(0, 8), "b": range(8, 16)})
    work = workload_from_nodes(topo, node_job)
    gfs, prs = np.zeros(topo.n_entities), np.zeros(topo.n_entities)
    gfs[topo.index["gpu/n0003/5"]] = 0.7
    direct = job_hazard(CFG.hazard, topo, work, gfs, prs, 2.5)
    scaled = job_hazard(CFG.hazard, topo, work, gfs, prs, 1.0).scaled(2.5)
    np.testing.assert_allclose(scaled.rate_per_s, direct.rate_per_s, rtol=1e-12)
    np.testing.assert_allclose(scaled.host_loss_per_s, direct.host_loss_per_s, rtol=1e-12)
    np.testing.assert_array_equal(scaled.top_part, direct.top_part)
    ctl = Controller(topo, CFG)
    names = topo.names[EntityKind.NODE]
    ctl.set_placement({"a": [names[i] for i in range(8)], "b": [names[i] for i in range(8, 16)]})
    both = ctl.job_hazard(3.0).rate_per_s
    ctl.set_placement({"a": [names[i] for i in range(4)], "b": [names[i] for i in range(8, 16)]})
    half = ctl.job_hazard(3.0).rate_per_s
    assert half[0] == pytest.approx(both[0] / 2, rel=0.05) and half[1] == pytest.approx(both[1])
