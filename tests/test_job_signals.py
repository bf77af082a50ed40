"""What the diagnosis reads per job from the engine (``diagnose.job_signals``), on the small fleet of
tests/conftest.py fed with steady telemetry: a step is any report of one, the job's own or a rank's."""

from __future__ import annotations

import numpy as np

from seamguard.control.controller import Controller
from seamguard.diagnose.job_signals import job_signals
from seamguard.model.topology import build_topology
from seamguard.telemetry.batch import TelemetryBatch
from tests.conftest import small_inventory, small_jobs
from tests.test_controller import CFG, normal_batch, with_readings


def test_a_lost_job_report_is_no_silence_while_its_ranks_report_steps() -> None:
    topo = build_topology(small_inventory(), small_jobs(start=0.0))
    ctl = Controller(topo, CFG)
    rng = np.random.default_rng(0)
    now = 1000.0
    ctl.tick(
        now, with_readings(topo, normal_batch(topo, now, rng), now, {("job/train", "job.step_time_s"): 2.0})
    )
    for _ in range(4):  # two minutes: the job's own reports lost, its ranks' arriving
        now += 30.0
        ctl.tick(now, normal_batch(topo, now, rng))
    s = job_signals(ctl, now)
    i = s.jobs.index("train")
    assert now - s.step_seen[i] <= 1.0  # the ranks' reports are a second old, not the job's two minutes
    # and with the ranks silent too (a hung collective), the silence runs from the last report
    rank_step = rank_step_index(ctl)
    for _ in range(3):
        now += 30.0
        b = normal_batch(topo, now, rng)
        keep = b.signal != rank_step
        ctl.tick(now, TelemetryBatch(b.entity[keep], b.signal[keep], b.timestamp[keep], b.value[keep]))
    s = job_signals(ctl, now)
    assert now - s.step_seen[s.jobs.index("train")] >= 90.0


def rank_step_index(ctl: Controller) -> int:
    spec = ctl.catalog.get("gpu.step_time_s")
    assert spec is not None
    return int(spec.index)
