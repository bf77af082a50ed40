"""The diagnosis as the daemon serves it (``ops.diagnosis_view``) on the small fleet of
tests/conftest.py: a job at risk names what the planner's policy does about its unwell parts now,
findings carry the healthy time they hold back, and one job's view keeps only what touches it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from seamguard.config import load_config
from seamguard.control.controller import Controller
from seamguard.diagnose.modes import RISK_MITIGATION, Finding, Mode
from seamguard.model.states import State
from seamguard.model.topology import build_topology
from seamguard.ops.diagnosis_view import diagnosis_view
from tests.conftest import small_inventory, small_jobs

NOW = 1000.0


def controller() -> Controller:
    return Controller(build_topology(small_inventory(), small_jobs()), load_config())


def test_a_job_at_risk_names_the_planners_actions_on_its_unwell_parts() -> None:
    ctl = controller()
    ctl.classifier.state[ctl.topology.index["cdu/c0"]] = int(State.DEGRADED)
    at_risk = Finding("train", Mode.HEALTHY, 0.8, (), (), np.nan, 0.0, 0.0, RISK_MITIGATION, None,
                      risk=("cdu/c0",), risk_since=NOW - 60)  # fmt: skip
    [f] = diagnosis_view(ctl, NOW, [at_risk]).findings
    assert f.mitigation.endswith(
        "Planned now: checkpoint_now (cdu/c0 degraded); restrict_admission (cdu/c0 degraded)"
    ), f.mitigation
    # healthy again by the time it is served: the policy has nothing for a healthy CDU to do
    ctl.classifier.state[ctl.topology.index["cdu/c0"]] = int(State.HEALTHY)
    [f] = diagnosis_view(ctl, NOW, [at_risk]).findings
    assert f.mitigation == RISK_MITIGATION


def test_findings_parts_and_domains_in_one_view_and_a_jobs_share_of_it() -> None:
    ctl = controller()
    slow = Finding("train", Mode.NETWORK, 0.8, ("switch/l1",), (), NOW, 0.0, 20 * 0.25 / 1.25, "", "reroute")
    calm = replace(slow, job="batch", mode=Mode.HEALTHY, entities=(), rate_gpu_h_per_h=0.0, action=None)
    view = diagnosis_view(ctl, NOW, [slow, calm])
    assert view.findings[0].held_back_gpu_s_per_s == pytest.approx(16 * 0.2)  # train's 16 GPUs off l1
    assert [(p.entity, p.jobs) for p in view.parts] == [("switch/l1", ("train",))]
    assert view.domains and view.domains[0].takes_down_gpus >= view.domains[-1].takes_down_gpus
    batch = view.to_json("batch")
    assert [j["job"] for j in batch["jobs"]] == ["batch"] and batch["parts"] == []  # type: ignore[index]
    assert all("batch" in d["jobs"] for d in batch["domains"])  # type: ignore[index,union-attr,operator]
