"""The engine's risk service against a live uvicorn on loopback, read through the agent's HTTP
source: the same risk as in-process, a named 404, a guarded controller, and the advisor's
fallback when the service goes away."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import pytest
from fastapi import FastAPI

from seamguard.agent import Advisor, ControllerSource, Fallback, HttpSource, SourceError
from seamguard.agent.wire import read_risk
from seamguard.config import load_config
from seamguard.control.controller import Controller
from seamguard.economics.checkpoint_modes import JobCheckpoint, Mode
from seamguard.economics.job_risk import JobRisk
from seamguard.model.catalog import signal_catalog
from seamguard.model.inventory import Inventory
from seamguard.model.states import JobClass
from seamguard.model.topology import Topology, build_topology
from seamguard.service.app import create_app
from seamguard.service.risk_schema import JobRiskPayload
from seamguard.service.server import RunningServer, serve_in_thread
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.twin.cluster import ClusterSpec, JobSpec, assign_jobs, generate_cluster
from tests.test_controller import normal_batch

CKPT = JobCheckpoint(size_gb=64.0, changed_share=0.3, host_copy_gbps=40.0, peer_gbps=0.0, overhead_s=5.0)


def fleet() -> Topology:
    """Eight 4-GPU nodes in four racks; odd nodes save to ckpt1, even ones to ckpt0."""
    inv = generate_cluster(ClusterSpec(cdus=2, racks_per_cdu=2, nodes_per_rack=2, gpus_per_node=4))
    inv = Inventory(tuple(replace(n, storage=f"ckpt{i % 2}") for i, n in enumerate(inv.nodes)))
    jobs = assign_jobs(
        inv, [JobSpec("train", JobClass.SYNC_TRAINING, 5), JobSpec("batch", JobClass.ASYNC_BATCH_INFERENCE, 2)],
        0.0, 1e7,
    )  # fmt: skip
    return build_topology(inv, jobs)


def with_storage(topo: Topology, batch: TelemetryBatch, now: float, gbps: dict[str, float]) -> TelemetryBatch:
    sig = signal_catalog()["storage.throughput_gbps"]
    ent = [topo.index[f"storage/{name}"] for name in gbps]
    return TelemetryBatch.concat([
        batch,
        TelemetryBatch(np.array(ent), np.full(len(ent), sig.index), np.full(len(ent), now - 1.0),
                       np.array(list(gbps.values()))),
    ])  # fmt: skip


@dataclass
class Live:
    controller: Controller
    lock: threading.Lock
    server: RunningServer


def live_engine() -> Live:
    """A controller ticked on steady telemetry, ckpt1 delivering 5 GB/s of its 40, served."""
    topo = fleet()
    ctl = Controller(topo, load_config())
    rng = np.random.default_rng(0)
    now = 1000.0
    for _ in range(3):
        now += 30.0
        ctl.tick(now, with_storage(topo, normal_batch(topo, now, rng), now, {"ckpt0": 40.0, "ckpt1": 5.0}))
    lock = threading.Lock()
    return Live(ctl, lock, serve_in_thread(create_app(ctl, lock)))


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    engine = live_engine()
    yield engine
    engine.server.stop()


def get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_http_source_reads_the_same_risk_as_the_engine_holds(live: Live) -> None:
    with live.lock:
        expected = live.controller.job_risk("train")
    got = HttpSource(live.server.url).risk("train")
    assert got == expected  # floats cross JSON exactly
    assert {p.name: p.write_gbps for p in got.storage} == {"ckpt0": 40.0, "ckpt1": 5.0}
    assert 0 < got.mtbf_s < math.inf and 0 < got.survival.host < 1
    assert ControllerSource(live.controller, live.lock).risk("train") == expected


def test_an_unknown_job_is_a_404_naming_it(live: Live) -> None:
    status, body = get(f"{live.server.url}/v1/jobs/nope/risk")
    assert status == 404
    assert body == {"detail": "unknown job 'nope': the engine's job table has train, batch"}
    with pytest.raises(SourceError, match=r"/v1/jobs/nope/risk: HTTP 404: unknown job 'nope'"):
        HttpSource(live.server.url).risk("nope")
    with pytest.raises(SourceError, match="the engine has no job 'nope' in its job table"):
        ControllerSource(live.controller).risk("nope")


def test_the_economics_of_every_running_job_are_served(live: Live) -> None:
    status, body = get(f"{live.server.url}/v1/economics")
    assert status == 200
    with live.lock:
        econ = live.controller.economics
    assert econ is not None
    jobs = {row["job"]: row for row in body["jobs"]}  # type: ignore[union-attr, index]
    assert set(jobs) == {"train", "batch"}
    assert jobs["train"]["gpus"] == econ.gpus[0] and jobs["train"]["slip_probability"] is None  # no deadline
    assert 0 < jobs["train"]["expected_ettr"] <= 1  # type: ignore[operator]
    assert body["fleet"]["gpus"] == econ.gpus.sum()  # type: ignore[index]


def test_healthz(live: Live) -> None:
    assert get(f"{live.server.url}/healthz") == (200, {"status": "ok", "jobs": 2})


def test_a_reader_waits_while_the_engine_holds_the_lock(live: Live) -> None:
    source = HttpSource(live.server.url, timeout_s=0.3)
    with live.lock, pytest.raises(SourceError, match=r"no answer within 0\.3 s"):  # the engine is mid-tick
        source.risk("train")
    assert source.risk("train").job == "train"


def test_a_job_without_hazard_crosses_the_wire_as_infinite() -> None:
    # Before its first tick the engine knows no time and no failure rate: both infinite.
    ctl = Controller(fleet(), load_config())
    with warnings.catch_warnings():  # the telemetry store's staleness check may warn before any data
        warnings.simplefilter("ignore", RuntimeWarning)
        risk = ctl.job_risk("train")
    body = JobRiskPayload.from_risk(risk).model_dump_json()
    assert '"mtbf_s":"Infinity"' in body and '"ts":"-Infinity"' in body
    assert read_risk(body) == risk  # the agent's own reader (agent.wire)


def test_a_malformed_answer_is_an_error_naming_the_field() -> None:
    app = FastAPI()
    good = JobRiskPayload.from_risk(sample_risk()).model_dump(mode="json")

    @app.get("/v1/jobs/{job}/risk")
    def bad(job: str) -> dict[str, object]:
        storage = [dict(good["storage"][0], state="wobbly")]  # type: ignore[index]
        return {**good, "mtbf_s": -5.0, "storage": storage}

    server = serve_in_thread(app)
    try:
        with pytest.raises(SourceError) as err:
            HttpSource(server.url).risk("train")
    finally:
        server.stop()
    message = str(err.value)
    assert message.startswith(f"bad risk payload from {server.url}/v1/jobs/train/risk: ")
    assert "mtbf_s: must be greater than 0 (got -5.0)" in message
    assert "storage.0.state: unknown state 'wobbly'" in message


def sample_risk() -> JobRisk:
    return read_risk(json.dumps(
        {"job": "train", "ts": 1.0, "mtbf_s": 3600.0, "nominal_mtbf_s": 7200.0,
         "survival": {"host": 0.9, "peer": 1.0}, "top_part": "",
         "storage": [{"name": "ckpt0", "write_gbps": 40.0, "read_gbps": 60.0, "state": "healthy"}]}
    ))  # fmt: skip


def test_the_advisor_falls_back_when_the_service_stops(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="seamguard.agent")
    engine = live_engine()
    adv = Advisor(
        "train", CKPT, HttpSource(engine.server.url, timeout_s=2.0), timeout_s=600.0,
        fallback=Fallback(target="ckpt0", interval_s=1800.0), refresh_s=0.0,
    )  # fmt: skip
    try:
        assert adv.step(0, 60.0) is None
        assert adv.planning and adv.plan is not None and adv.plan.choice is not None
        # The engine's figure for ckpt1 (5 GB/s, its telemetry) is what the plan priced: ckpt0 it is.
        assert adv.plan.choice.target == "ckpt0"
    finally:
        engine.server.stop()
    deadline = time.monotonic() + 5
    while adv.planning and time.monotonic() < deadline:  # the port is closed: refused at once
        adv.step(1, 60.0)
    assert not adv.planning
    for step in range(2, 40):
        todo = adv.step(step, 60.0)
        if todo is not None:
            assert (todo.mode, todo.target) == (Mode.FULL, "ckpt0")
            assert "unreachable" in todo.reason
            break
    else:
        raise AssertionError("the fallback never ordered a save in 38 min of steps on a 30-min interval")
    failed = [r.getMessage() for r in caplog.records]
    assert len(failed) == 1 and "risk source failed" in failed[0] and engine.server.url in failed[0]
