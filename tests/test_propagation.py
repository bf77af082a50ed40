"""Exposure, FAE and PRS (scoring/propagation.py) on a fleet small enough to count by hand.

small_inventory(): 8 nodes of 4 GPUs, 2 nodes per rack; small_jobs(): ``train`` (synchronous) on
n00-n04, 20 GPUs, and ``batch`` (asynchronous) on n05-n06; n07 idle. Written from the mutants
mutmut found surviving in the module (docs/testing.md).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from seamguard.model.topology import Topology, build_topology
from seamguard.model.workload import build_workload
from seamguard.scoring.propagation import Amplification, amplification, propagation_risk
from tests.conftest import small_inventory, small_jobs


@pytest.fixture
def amp_and_topo() -> tuple[Amplification, Topology]:
    """Per test, not per module: mutmut maps a test to the functions it calls, fixtures included."""
    topo = build_topology(small_inventory(), small_jobs())
    return amplification(topo, build_workload(topo, (0, 1))), topo


@pytest.mark.parametrize(
    ("entity", "exposure", "fae", "local"),
    [
        ("gpu/n00/0", 20.0, 20.0, 1.0),  # one slow rank holds the whole 20-GPU synchronous job
        ("node/n00", 20.0, 5.0, 4.0),
        ("gpu/n05/0", 1.0, 1.0, 1.0),  # an asynchronous job loses only the GPU itself
        ("node/n05", 4.0, 1.0, 4.0),
        ("rack/r2", 24.0, 3.0, 8.0),  # n04 (train, all 20) + n05 (batch, its own 4)
        ("gpu/n07/0", 1.0, 1.0, 1.0),  # idle: no job exposed, FAE never below 1
        ("job/train", 20.0, 1.0, 20.0),
    ],
)
def test_exposure_and_fae_count_the_synchronous_job_whole_and_the_rest_by_gpu(
    amp_and_topo: tuple[Amplification, Topology], entity: str, exposure: float, fae: float, local: float
) -> None:
    amp, topo = amp_and_topo
    g = topo.lookup(entity)
    assert (amp.exposure[g], amp.fae[g], amp.local_gpus[g]) == (exposure, fae, local)


def test_prs_grows_with_exposure_towards_the_gfs() -> None:
    amp = Amplification(exposure=np.array([0.0, 64.0, 128.0, 1e6]), fae=np.ones(4), local_gpus=np.ones(4))
    prs = propagation_risk(np.full(4, 0.5), amp, 64.0)
    assert prs.tolist() == pytest.approx([0.0, 0.5 * (1 - math.exp(-1)), 0.5 * (1 - math.exp(-2)), 0.5])
