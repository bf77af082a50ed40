"""examples/torch_ddp_train.py end to end: two ranks (gloo, CPU), one advisor on rank 0 asking a
risk service for the job its Slurm job id names, and every rank taking the same saves."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import pytest

from seamguard.economics.checkpoint_modes import StoragePath, Survival
from seamguard.economics.job_risk import JobRisk
from seamguard.model.states import State
from seamguard.service.risk_schema import JobRiskPayload
from tests.http_stub import serve
from tests.test_torch_example import require_torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "torch_ddp_train.py"
JOB = "4242"  # the Slurm job id, as seamguard's Slurm source names the job
EVERY = 2


class RiskService(BaseHTTPRequestHandler):
    """``GET /v1/jobs/4242/risk`` as ``seamguard run --listen`` answers it; keeps every path asked."""

    asked: ClassVar[list[str]] = []
    body: ClassVar[bytes] = b""

    def do_GET(self) -> None:
        type(self).asked.append(self.path)
        found = self.path == f"/v1/jobs/{JOB}/risk"
        body = self.body if found else b'{"detail": "unknown job"}'
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_rank_zero_asks_and_every_rank_takes_the_same_saves(tmp_path: Path) -> None:
    require_torch()
    # Scaled to the example's toy model (saves of a fraction of a megabyte), so that 200 steps save
    # several times; ckpt0 rated faster than ckpt1.
    paths = (
        StoragePath("ckpt0", 0.02, 0.03, State.HEALTHY),
        StoragePath("ckpt1", 0.01, 0.015, State.HEALTHY),
    )
    risk = JobRisk(JOB, 0.0, 2.0, 2.0, Survival(host=0.0), paths, "")

    class Service(RiskService):
        asked: ClassVar[list[str]] = []
        body: ClassVar[bytes] = JobRiskPayload.from_risk(risk).model_dump_json().encode()

    env = {
        k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in ("RANK", "WORLD_SIZE")
    }
    env["SLURM_JOB_ID"] = JOB
    with serve(Service) as url:
        args = ["--world-size", "2", "--steps", "200", "--every", str(EVERY), "--model-step-s", "0.01"]
        done = subprocess.run(
            [sys.executable, str(EXAMPLE), *args, "--service", url, "--out", str(tmp_path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]

    # Rank 0 alone decided, from the service's risk (never the fallback), on the broadcast steps.
    told = [e for e in events if e["event"] == "instruction"]
    assert len(told) >= 2, done.stdout
    assert all(e["rank"] == 0 and e["planning"] for e in told), done.stdout
    assert all((e["step"] + 1) % EVERY == 0 for e in told)
    # Every rank took exactly the saves rank 0 was told to make: same steps, modes and targets.
    decided = [(e["step"], e["mode"], e["target"]) for e in told]
    for rank in (0, 1):
        took = [
            (e["step"], e["mode"], e["target"]) for e in events if e["event"] == "save" and e["rank"] == rank
        ]
        assert took == decided, f"rank {rank}:\n{done.stdout}"
    assert {m for _, m, _ in decided} <= {"full", "incremental"}  # no host copy: blocking saves only

    # The job was asked for by its Slurm job id, and by one advisor: at most once per refresh_s of
    # its training clock (two ranks polling would have asked about twice as often).
    assert Service.asked and set(Service.asked) == {f"/v1/jobs/{JOB}/risk"}
    [end] = [e for e in events if e["event"] == "done"]
    assert end["rank"] == 0
    assert len(Service.asked) <= end["clock_s"] / end["refresh_s"] + 1, (len(Service.asked), end)

    # The saves are real checkpoints: the last one loads back into a fresh model on both ranks.
    restored = [e for e in events if e["event"] == "restored"]
    assert sorted(e["rank"] for e in restored) == [0, 1], done.stdout
    step, _, target = decided[-1]
    where = tmp_path / target / f"step-{step:06d}"
    assert all(e["where"] == str(where) and math.isfinite(e["loss"]) for e in restored)
    assert (where / ".metadata").is_file()


def test_the_job_name_is_the_slurm_job_id_as_squeue_prints_it(monkeypatch: pytest.MonkeyPatch) -> None:
    require_torch()
    spec = importlib.util.spec_from_file_location("torch_ddp_train", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    assert example.scheduler_job() is None
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert example.scheduler_job() == "4242"
    # An array task: squeue prints 4240_2, while its own SLURM_JOB_ID is another number.
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4240")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert example.scheduler_job() == "4240_2"
