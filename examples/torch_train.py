"""A small PyTorch training loop whose checkpoints seamguard's advisor plans (docs/agent.md).

It trains an MLP on synthetic data on the CPU and, after every step, asks the advisor whether
to save, how and where; saves go through ``torch.distributed.checkpoint`` to one of two storage
directories (``OUT/ckpt0``, ``OUT/ckpt1``). From step ``--slow-from`` the writes to
``--slow-path`` are throttled to ``--slow-gbps``, as a storage backend that degrades mid-run;
the advisor measures it from the saves it is told about and moves the job's saves elsewhere.

Modes, as the loop carries them out:

* ``full`` (and ``incremental``: every weight of a dense model changes each step, so an
  incremental save writes it all): ``dcp.save`` to the target, blocking.
* ``in_memory``: a copy of the state in host memory.
* ``tiered``: a copy in host memory now (the blocking part), persisted to the target by
  ``dcp.save`` in a background thread; reported to the advisor once durable.

One JSON line per advisor instruction and per save goes to stdout (``event``, ``step``,
``mode``, ``target``, ``blocking_s``, ...); warnings go to stderr.

    .venv/bin/python examples/torch_train.py --steps 600 --slow-from 150
    .venv/bin/python examples/torch_train.py --service http://127.0.0.1:8470 --job train

Without ``--service`` the risk is static: an MTBF and nameplate throughputs scaled to this toy
model, whose saves take milliseconds, so that a few hundred steps see a dozen saves.

With ``--clock model`` the durations the advisor is told are modelled rather than measured: every
step takes ``--model-step-s``, a write takes its bytes over the path's nameplate (or its throttled)
throughput, a host copy its bytes over ``--host-gbps``, and a background persist finishes once that
much training time has passed. The saves are still real; only the clock is not, so a loaded
machine cannot change what the advisor decides (the integration test runs this way).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import shutil
import sys
import tempfile
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import FileSystemWriter
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner
from torch.distributed.checkpoint.storage import WriteResult

from seamguard.agent import (
    MEMORY,
    Advisor,
    Fallback,
    HttpSource,
    Instruction,
    RiskSource,
    StaticSource,
)
from seamguard.economics.checkpoint_modes import JobCheckpoint, Mode, StoragePath, Survival
from seamguard.model.states import State

State_ = dict[str, Any]
OVERHEAD_S = 0.002  # a save's fixed cost at this toy scale


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    torch.manual_seed(args.seed)
    # dcp says once per save that it saves in a single process: that is this example's intent.
    warnings.filterwarnings("ignore", message="torch.distributed is disabled")
    torch.set_num_threads(1)  # a tiny model: more threads only contend on a small machine
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="seamguard-torch-"))
    try:
        return _train(args, out)
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)


@dataclass(frozen=True)
class ModelClock:
    """Durations from a model of the machine instead of the wall clock (``--clock model``)."""

    step_s: float
    host_gbps: float
    path_gbps: dict[str, float]  # each path's write throughput before any throttling
    slow_gbps: float
    overhead_s: float

    def write_s(self, target: str, size_gb: float, throttled: bool) -> float:
        return self.overhead_s + size_gb / (self.slow_gbps if throttled else self.path_gbps[target])

    def copy_s(self, size_gb: float) -> float:
        return size_gb / self.host_gbps


def _train(args: argparse.Namespace, out: Path) -> int:
    model = nn.Sequential(nn.Linear(128, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = _data(4096, 128, 10)
    _train_step(model, optim, x[:64], y[:64])  # Adam's state exists from the first step: size it now
    state = _state(model, optim)
    size_gb = sum(t.numel() * t.element_size() for t in _tensors(state)) / 1e9
    names = [n.strip() for n in args.paths.split(",") if n.strip()]
    advisor = Advisor(
        args.job,
        JobCheckpoint(
            size_gb, changed_share=1.0, host_copy_gbps=args.host_gbps, peer_gbps=0.0, overhead_s=OVERHEAD_S
        ),
        _source(args, names),
        timeout_s=args.timeout_s,
        fallback=Fallback(target=names[-1], interval_s=args.fallback_interval_s, mode=Mode.TIERED),
        refresh_s=args.refresh_s,
    )
    clock = _clock(args, names)
    saver = Saver(out, args.slow_path, args.slow_from, args.slow_gbps, clock)
    # dcp's first save pays one-off setup: made here, it stays out of the advisor's measurements.
    saver.write(state, "_warmup", -1)
    shutil.rmtree(out / "_warmup")
    _emit(event="start", size_gb=size_gb, source=args.service or "static", out=str(out))
    loss = float("nan")
    for step in range(args.steps):
        t0 = time.perf_counter()
        i = (step * 64) % len(x)
        loss = _train_step(model, optim, x[i : i + 64], y[i : i + 64])
        took = clock.step_s if clock else time.perf_counter() - t0
        saver.advance(took)
        _report(advisor, saver.finished())
        todo = advisor.step(step, took)
        if todo is not None and saver.inflight is not None:
            # A new save waits for the earlier persist, and what that persist measured may change
            # the plan: report it, then ask again, the wait counted as training time lost.
            t0, due = time.perf_counter(), saver.due_in()
            _report(advisor, saver.wait())
            todo = advisor.step(step, due if clock else time.perf_counter() - t0)
        if todo is not None:
            _emit(event="instruction", step=step, mode=todo.mode.value, target=todo.target,
                  deadline_s=todo.deadline_s, reason=todo.reason, planning=advisor.planning)  # fmt: skip
            _report(advisor, saver.save(step, todo, _state(model, optim), size_gb))
    _report(advisor, saver.wait())
    saver.pool.shutdown()
    _emit(event="done", steps=args.steps, loss=loss, since_durable_s=advisor.since_durable_s)
    _restore_check(saver.persisted, x, y)
    return 0


# ---- the saves -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SaveReport:
    step: int
    mode: Mode
    target: str
    blocking_s: float
    durable_s: float
    size_gb: float
    throttled: bool
    where: Path | None  # the checkpoint directory (None: in memory)


class ThrottledWriter(FileSystemWriter):
    """A storage path gone slow: each write is followed by a sleep proportional to its bytes."""

    def __init__(self, path: Path, gbps: float) -> None:
        super().__init__(path)
        self.gbps = gbps

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> torch.futures.Future[list[WriteResult]]:
        done = super().write_data(plan, planner)
        written = sum(r.size_in_bytes for r in done.wait())
        time.sleep(written / (self.gbps * 1e9))
        return done


class Saver:
    """Carries out instructions; one background persist at a time (a new save waits for it).

    Under a model clock, ``now`` is the training time so far and a persist is due once the
    modelled write time has passed; otherwise it is due when its thread returns."""

    def __init__(
        self, out: Path, slow_path: str, slow_from: int, slow_gbps: float, clock: ModelClock | None = None
    ) -> None:
        self.out, self.slow_path, self.slow_from, self.slow_gbps = out, slow_path, slow_from, slow_gbps
        self.clock = clock
        self.now = 0.0
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="persist")
        self.inflight: tuple[Future[float], SaveReport, float] | None = None  # (write, report, due)
        self.memory: State_ | None = None
        self.persisted: SaveReport | None = None  # the newest copy durable on a storage path

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def save(self, step: int, todo: Instruction, state: State_, size_gb: float) -> list[SaveReport]:
        reports = self.wait()  # the loop has waited for an earlier persist already; never two at once
        t0 = time.perf_counter()
        slow = self._throttled(todo.target, step)
        if todo.mode in (Mode.FULL, Mode.INCREMENTAL):
            where = self.write(state, todo.target, step)
            took = self.clock.write_s(todo.target, size_gb, slow) if self.clock else time.perf_counter() - t0
            self.now += took
            self.persisted = SaveReport(step, todo.mode, todo.target, took, took, size_gb, slow, where)
            return [*reports, self.persisted]
        self.memory = copy.deepcopy(state)
        took = self.clock.copy_s(size_gb) if self.clock else time.perf_counter() - t0
        self.now += took
        if todo.mode is Mode.IN_MEMORY:
            return [*reports, SaveReport(step, todo.mode, MEMORY, took, took, size_gb, False, None)]
        where = self.out / todo.target / f"step-{step:06d}"
        persist = self.clock.write_s(todo.target, size_gb, slow) if self.clock else math.nan
        pending = SaveReport(step, todo.mode, todo.target, took, took + persist, size_gb, slow, where)
        due = self.now + persist if self.clock else math.inf
        self.inflight = (self.pool.submit(self._timed_write, self.memory, todo.target, step), pending, due)
        return reports

    def due_in(self) -> float:
        """Model seconds until the background persist is due (0 with none, or the wall clock)."""
        if self.inflight is None or self.clock is None:
            return 0.0
        return max(self.inflight[2] - self.now, 0.0)

    def finished(self) -> list[SaveReport]:
        """The background persist, once it has completed."""
        if self.inflight is None:
            return []
        future, _, due = self.inflight
        if not (self.now >= due if self.clock else future.done()):
            return []
        return self.wait()

    def wait(self) -> list[SaveReport]:
        if self.inflight is None:
            return []
        future, pending, due = self.inflight
        self.inflight = None
        took = future.result()
        if self.clock:  # the modelled persist, waited for in training time
            self.now = max(self.now, due)
            self.persisted = pending
        else:
            self.persisted = replace(pending, durable_s=pending.blocking_s + took)
        return [self.persisted]

    def write(self, state: State_, target: str, step: int) -> Path:
        where = self.out / target / f"step-{max(step, 0):06d}"
        gbps = self.slow_gbps if self._throttled(target, step) else None
        writer = ThrottledWriter(where, gbps) if gbps is not None else FileSystemWriter(where)
        dcp.save(state, storage_writer=writer, no_dist=True)
        return where

    def _timed_write(self, state: State_, target: str, step: int) -> float:
        t0 = time.perf_counter()
        self.write(state, target, step)
        return time.perf_counter() - t0

    def _throttled(self, target: str, step: int) -> bool:
        return target == self.slow_path and step >= self.slow_from


def _report(advisor: Advisor, reports: list[SaveReport]) -> None:
    for r in reports:
        advisor.saved(r.mode, r.target, r.blocking_s, r.durable_s, r.size_gb)
        _emit(event="save", step=r.step, mode=r.mode.value, target=r.target, blocking_s=r.blocking_s,
              durable_s=r.durable_s, size_gb=r.size_gb, throttled=r.throttled)  # fmt: skip


def _restore_check(last: SaveReport | None, x: torch.Tensor, y: torch.Tensor) -> None:
    """Load the newest persisted checkpoint into a fresh model: the saves are real checkpoints."""
    if last is None or last.where is None:
        return
    fresh = nn.Sequential(nn.Linear(128, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    into = {"model": fresh.state_dict()}
    dcp.load(into, checkpoint_id=last.where, no_dist=True)
    fresh.load_state_dict(into["model"])
    with torch.no_grad():
        loss = float(nn.functional.cross_entropy(fresh(x), y))
    _emit(event="restored", step=last.step, target=last.target, loss=loss)


# ---- training --------------------------------------------------------------------------------
def _data(n: int, dim: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random teacher labels random inputs: learnable, and the same every run."""
    x = torch.randn(n, dim)
    return x, (x @ torch.randn(dim, classes)).argmax(dim=1)


def _train_step(model: nn.Module, optim: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    optim.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optim.step()
    return loss.item()


def _state(model: nn.Module, optim: torch.optim.Optimizer) -> State_:
    return {"model": model.state_dict(), "optim": optim.state_dict()}


def _tensors(obj: object) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, list | tuple):
        return [t for v in obj for t in _tensors(v)]
    return []


# ---- wiring ----------------------------------------------------------------------------------
def _source(args: argparse.Namespace, names: list[str]) -> RiskSource:
    if args.service:
        return HttpSource(args.service, timeout_s=args.service_timeout_s)
    plates = _nameplates(args, names)
    paths = [StoragePath(n, g, 1.5 * g, State.HEALTHY) for n, g in zip(names, plates, strict=True)]
    return StaticSource(args.mtbf_s, tuple(paths), Survival(host=args.host_survival))


def _nameplates(args: argparse.Namespace, names: list[str]) -> list[float]:
    plates = [float(g) for g in args.nameplate_gbps.split(",")]
    if len(plates) != len(names):
        raise SystemExit(f"--nameplate-gbps gives {len(plates)} value(s) for {len(names)} path(s) in --paths")
    return plates


def _clock(args: argparse.Namespace, names: list[str]) -> ModelClock | None:
    if args.clock == "wall":
        return None
    plates = _nameplates(args, names)
    if args.model_step_s <= 0:
        raise SystemExit(f"--model-step-s must be positive, got {args.model_step_s}")
    return ModelClock(args.model_step_s, args.host_gbps, dict(zip(names, plates, strict=True)), args.slow_gbps,
                      OVERHEAD_S)  # fmt: skip


def _emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--out", help="checkpoint directory (default: a temporary one, removed at the end)")
    p.add_argument(
        "--paths", default="ckpt0,ckpt1", help="storage path names: one directory each under --out"
    )
    p.add_argument("--slow-path", default="ckpt0", help="the path that becomes slow")
    p.add_argument(
        "--slow-from", type=int, default=150, help="the step from which writes to it are throttled"
    )
    p.add_argument("--slow-gbps", type=float, default=0.005, help="its throughput once throttled (GB/s)")
    p.add_argument("--service", help="the seamguard service's URL (default: a static risk source)")
    p.add_argument("--service-timeout-s", type=float, default=2.0)
    p.add_argument("--job", default="train", help="the job's name in the engine's job table")
    p.add_argument("--mtbf-s", type=float, default=10.0, help="static source: the job's MTBF (toy scale)")
    p.add_argument(
        "--host-survival", type=float, default=0.1, help="static source: a host-memory copy's survival"
    )
    p.add_argument("--nameplate-gbps", default="0.1,0.04", help="static source: each path's write throughput")
    p.add_argument("--host-gbps", type=float, default=2.0, help="device-to-host copy throughput (GB/s)")
    p.add_argument("--timeout-s", type=float, default=600.0, help="the job's collective timeout")
    p.add_argument("--refresh-s", type=float, default=0.05, help="training seconds between asking the source")
    p.add_argument(
        "--fallback-interval-s", type=float, default=0.5, help="the fixed interval without a source"
    )
    p.add_argument(
        "--clock", choices=("wall", "model"), default="wall",
        help="measure durations (wall) or model them from the nameplates (model: load-proof)",
    )  # fmt: skip
    p.add_argument("--model-step-s", type=float, default=0.01, help="model clock: one training step")
    p.add_argument("--seed", type=int, default=0)
    return p


if __name__ == "__main__":
    raise SystemExit(main())
