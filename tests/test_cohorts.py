"""Peer cohorts: who a GPU is compared with, including the optional GPU-model cohort."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from seamguard.config import config_from_mapping
from seamguard.control.controller import Controller
from seamguard.errors import InputError
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import Inventory, read_inventory
from seamguard.model.topology import build_topology
from seamguard.model.workload import build_workload
from seamguard.scoring.cohorts import cohort_groups
from tests.conftest import small_inventory, small_jobs

MODEL_RULE = {
    "detectors": {
        "peer": {"gpu.sm_clock_mhz": {"cohort": "model", "measure": "relative", "warn": 0.06, "crit": 0.25,
                                      "z_min": 4.0, "direction": "low", "weight": 0.6}}
    }
}  # fmt: skip


def with_models(inv: Inventory) -> Inventory:
    return Inventory(tuple(replace(n, model="H100" if i < 4 else "B200") for i, n in enumerate(inv.nodes)))


def test_model_cohort_groups_gpus_by_their_nodes_model() -> None:
    topo = build_topology(with_models(small_inventory()), small_jobs())
    workload = build_workload(topo, tuple(range(len(topo.jobs))))
    groups = cohort_groups("model", EntityKind.GPU, topo, workload)
    assert groups is not None
    ids, n = groups
    assert n == 2 and topo.models == ("H100", "B200")
    assert (ids == np.where(topo.gpu_node < 4, 0, 1)).all()


def test_model_column_is_read_from_the_inventory(tmp_path: Path) -> None:
    path = tmp_path / "inv.csv"
    path.write_text("node,rack,cdu,leaf,gpus,model\nn0,r0,c0,l0,8,H100-SXM5-80GB\nn1,r0,c0,l0,8,\n")
    inv = read_inventory(path)
    assert [n.model for n in inv.nodes] == ["H100-SXM5-80GB", ""]
    topo = build_topology(inv)
    assert topo.node_model.tolist() == [0, -1]


def test_model_cohort_without_models_is_refused_naming_the_rule() -> None:
    cfg = config_from_mapping(MODEL_RULE)
    topo = build_topology(small_inventory(), small_jobs())
    with pytest.raises(InputError, match=r"detectors\.peer\.gpu\.sm_clock_mhz.*no 'model' column"):
        Controller(topo, cfg)
    Controller(build_topology(with_models(small_inventory()), small_jobs()), cfg)  # accepted with models
