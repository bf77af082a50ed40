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
    added = h.base_per_day[EntityKind.GPU] / DAY_S * (math.exp(h.gfs_gain[EntityKind.GPU] * 0.5) - 1)
    assert hz.rate_per_s[0] - hz.nominal_per_s[0] == pytest.approx(added)
    assert hz.rate_per_s[1] == pytest.approx(hz.nominal_per_s[1])  # job b does not run there
    assert hz.top_part[0] == gpu
    prs[gpu] = 0.5  # spreading trouble makes it likelier still
    assert job_hazard(h, topo, work, gfs, prs).rate_per_s[0] > hz.rate_per_s[0]
    gfs[gpu] = 5.0  # never more than max_multiplier times nominal
    capped = job_hazard(h, topo, work, gfs, np.zeros(topo.n_entities))
    limit = h.base_per_day[EntityKind.GPU] / DAY_S * (h.max_multiplier - 1)
    assert capped.rate_per_s[0] - capped.nominal_per_s[0] == pytest.approx(limit)


def test_each_part_kind_has_its_own_gain() -> None:
    """The same score on a node's uplink and on one of its GPUs: each raised by its kind's gain
    from its kind's base rate, so a retransmitting link is not read as a failing GPU."""
    cfg = config_from_mapping(
        {"hazard": {"gfs_gain": {"gpu": 10.0, "node": 0.0, "link": 2.0}, "prs_gain": 0.0}}
    )
    topo, node_job = fleet(2, 2, 4, {"a": range(0, 8), "b": range(8, 16)})
    work = workload_from_nodes(topo, node_job)
    zero = np.zeros(topo.n_entities)
    h = cfg.hazard
    for entity, kind, gain in (("gpu/n0003/5", EntityKind.GPU, 10.0), ("link/n0003", EntityKind.LINK, 2.0)):
        gfs = zero.copy()
        gfs[topo.index[entity]] = 0.5
        hz = job_hazard(h, topo, work, gfs, zero)
        added = h.base_per_day[kind] / DAY_S * (math.exp(gain * 0.5) - 1)
        assert hz.rate_per_s[0] - hz.nominal_per_s[0] == pytest.approx(added), entity
    node = zero.copy()
    node[topo.index["node/n0003"]] = 1.0  # a kind whose gain is 0 gains nothing
    assert job_hazard(h, topo, work, node, zero).rate_per_s[0] == pytest.approx(
        job_hazard(h, topo, work, zero, zero).rate_per_s[0]
    )
    with pytest.raises(InputError, match=r"gfs_gain.gpu: a gain must be finite and >= 0"):
        config_from_mapping({"hazard": {"gfs_gain": {"gpu": -1.0}}})


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


def test_one_rule_of_a_signal_may_be_a_precursor() -> None:
    cfg = config_from_mapping({"hazard": {"precursors": ["level:gpu.temp_c", "gpu.xid"]}})
    assert cfg.hazard.precursors == ["level:gpu.temp_c", "gpu.xid"]


@pytest.mark.parametrize(
    ("precursors", "detectors", "message"),
    [
        (["gpu.ecc_sbe"], {}, r"hazard.precursors: unknown signal 'gpu.ecc_sbe'"),
        (["gpu.ecc_sbe_total"], {"counter": {"gpu.ecc_sbe_total": None}}, r"no detector rule scores 'gpu.ecc_sbe_total'"),
        (["gpu.xid", "gpu.xid"], {}, r"hazard.precursors: list each signal once"),
        (["level:gpu.xid"], {}, r"no level rule scores 'gpu.xid'"),
        (["spike:gpu.temp_c"], {}, r"'spike:gpu.temp_c': the rule is one of level, trend, peer"),
    ],
)  # fmt: skip
def test_failure_precursors_are_checked_at_load(
    precursors: list[str], detectors: dict[str, object], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        config_from_mapping({"hazard": {"precursors": precursors}, "detectors": detectors})


def test_the_engine_reports_an_error_storm_as_a_shorter_mtbf_for_its_job_only(topology: Topology) -> None:
    """Correctable errors growing by thousands an hour foreshadow an uncorrectable one: the job
    on that GPU is told to expect a failure far sooner; the job beside it is not."""
    from seamguard.control.controller import Controller
    from tests.test_controller import normal_batch, with_readings

    ctl = Controller(topology, CFG)
    rng = np.random.default_rng(4)
    gpu = topology.index["gpu/n02/1"]
    now = 1000.0

    def tick(errors: float) -> None:
        sbe = {("gpu/n02/1", "gpu.ecc_sbe_total"): errors}
        ctl.tick(now, with_readings(topology, normal_batch(topology, now, rng), now, sbe))

    for _ in range(3):
        now += 30.0
        tick(10.0)
    calm = ctl.job_hazard()
    for k in range(1, 4):
        now += 30.0
        tick(10.0 + 200.0 * k)  # 200 more every 30 s: 24,000 an hour
    storm = ctl.job_hazard()
    train, batch = 0, 1
    assert ctl.gfs_precursor[gpu] > 0.5
    hz = CFG.hazard
    boost = math.exp(
        hz.gfs_gain[EntityKind.GPU] * ctl.gfs_precursor[gpu] + hz.prs_gain * ctl.prs_precursor[gpu]
    )
    # At the learnt scale, the outlier prior's share above 1 with nothing seen yet.
    added = hz.base_per_day[EntityKind.GPU] / DAY_S * (boost - 1.0) * ctl.learner.scale()
    assert storm.rate_per_s[train] - calm.rate_per_s[train] == pytest.approx(added, rel=1e-2)
    assert storm.mtbf_s(train) < calm.mtbf_s(train)
    assert storm.top_part[train] == gpu
    assert storm.rate_per_s[batch] == pytest.approx(calm.rate_per_s[batch], rel=1e-3)


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


def test_a_power_braked_gpu_is_slow_not_likely_to_fail(topology: Topology) -> None:
    """A rack short of power brakes its GPUs: clocks fall and the rank lags, which is harm the
    engine scores, but no failure precursor; the job's hazard stays nominal, so the checkpoint
    loop does not save every few seconds for a failure nothing announces."""
    from tests.test_controller import normal_batch, run

    ctl, _ = run(topology, 3)  # three calm ticks, to 1090 s
    rng, now = np.random.default_rng(4), 1090.0
    calm = ctl.job_hazard()
    braked = {("gpu/n02/1", "gpu.throttle_reasons"): 0x80, ("gpu/n02/1", "gpu.sm_clock_mhz"): 1100.0,
              ("gpu/n02/1", "gpu.step_time_s"): 2.8}  # fmt: skip
    for _ in range(3):
        now += 30.0
        ctl.tick(now, normal_batch(topology, now, rng, overrides=braked))
    gpu = topology.index["gpu/n02/1"]
    assert ctl.gfs[gpu] >= CFG.classifier.degraded_enter  # seen, and scored as trouble
    assert ctl.gfs_precursor[gpu] == 0.0
    np.testing.assert_allclose(
        ctl.job_hazard().rate_per_s, calm.rate_per_s, rtol=1e-3
    )  # the learnt scale drifts
