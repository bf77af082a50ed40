"""examples/torch_train.py end to end: a real PyTorch loop whose saves the advisor moves off a
storage path that slows down mid-run."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "torch_train.py"


def require_torch() -> None:
    if importlib.util.find_spec("torch") is not None:
        return
    why = "torch is not installed (pip install -e '.[torch]' installs the CPU build, torch==2.13.0)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}: CI installs '.[dev]', which must bring it")
    pytest.skip(f"{why}: the PyTorch example cannot run")


def test_the_advisor_moves_the_saves_off_a_path_that_slows(tmp_path: Path) -> None:
    require_torch()
    slow_from = 150
    args = ["--steps", "500", "--slow-from", str(slow_from), "--out", str(tmp_path), "--clock", "model"]
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    told = [e for e in events if e["event"] == "instruction"]
    saves = [e for e in events if e["event"] == "save"]
    assert told and saves, done.stdout
    # Every instruction was carried out and reported, with what it blocked.
    assert all(s["blocking_s"] >= 0 and s["durable_s"] >= s["blocking_s"] for s in saves)
    assert told[0]["target"] == "ckpt0"  # the static source rates ckpt0 faster
    slowed = next((i for i, e in enumerate(events) if e["event"] == "save" and e["throttled"]), None)
    assert slowed is not None, f"no save reached the throttled path:\n{done.stdout}"
    assert events[slowed]["target"] == "ckpt0" and events[slowed]["step"] >= slow_from
    after = [e for e in events[slowed + 1 :] if e["event"] in ("instruction", "save")]
    assert after and all(e["target"] != "ckpt0" for e in after), done.stdout
    assert any(e["event"] == "save" for e in after), done.stdout
    # The mode may change with the target (a slow persist makes a memory copy relatively better);
    # whatever it is, it is one the loop knows how to carry out.
    assert {e["mode"] for e in told} <= {"full", "incremental", "in_memory", "tiered"}
    # The job's checkpoints are real: the newest one persisted loads into a fresh model.
    restored = [e for e in events if e["event"] == "restored"]
    assert len(restored) == 1 and math.isfinite(restored[0]["loss"]), done.stdout
    assert (tmp_path / restored[0]["target"] / f"step-{restored[0]['step']:06d}" / ".metadata").is_file()
