"""Multi-rank PyTorch with seamguard's advisor: rank 0 asks, every rank saves (docs/agent.md).

A job of N ranks has one advisor, on rank 0: only rank 0 asks seamguard for the job's risk, so N
ranks do not each poll the daemon, and only rank 0 is told about saves. Its answer (an
``Instruction``, or None) reaches every rank through ``torch.distributed.broadcast_object_list``,
every ``--every`` steps, so that all ranks enter the same collective save at the same step: a
``torch.distributed.checkpoint`` save of the DDP model and its optimizer to ``OUT/<target>``.

The job keeps no copy in host memory (``host_copy_gbps=0``), so every instruction is a blocking
save to a storage path (``full``, or ``incremental``, which writes the whole of a dense model);
examples/torch_train.py carries out all four modes in one process.

    .venv/bin/python examples/torch_ddp_train.py --world-size 2 --steps 300
    torchrun --nproc-per-node 2 examples/torch_ddp_train.py --out /shared/ckpt --service http://127.0.0.1:8470

Under torchrun (``RANK`` and ``WORLD_SIZE`` set) each process is a rank, and ``--out`` names a
directory every rank writes to; otherwise the example spawns ``--world-size`` ranks on this
machine. CPU only, with the gloo backend. The job's name defaults to its Slurm job id as
seamguard's Slurm source names it (``$SLURM_JOB_ID``; ``${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}``
for an array task), else ``train``.

Each rank prints one JSON line per save it took part in (``event``, ``rank``, ``step``, ``mode``,
``target``); rank 0 also prints each instruction with its reason, and every rank the loss of the
last checkpoint loaded back into a fresh model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.nn.parallel import DistributedDataParallel

from seamguard.agent import Advisor, Fallback, HttpSource, Instruction, RiskSource, StaticSource
from seamguard.economics.checkpoint_modes import JobCheckpoint, Mode, StoragePath, Survival
from seamguard.model.states import State

OVERHEAD_S = 0.002  # a save's fixed cost at this toy scale
PATHS = ("ckpt0", "ckpt1")
BATCH = 32


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # torchrun started this process: one rank
        if not args.out:
            raise SystemExit("under torchrun, --out must name a directory every rank writes to")
        _rank(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), "env://", args, Path(args.out))
        return 0
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="seamguard-ddp-"))
    try:
        out.mkdir(parents=True, exist_ok=True)
        store = f"file://{out / '.rendezvous'}"  # no port to pick: the ranks meet in a file
        mp.spawn(_rank, args=(args.world_size, store, args, out), nprocs=args.world_size)
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)
    return 0


def scheduler_job() -> str | None:
    """This job's name in seamguard's job table when its Slurm source placed it: the job id as
    squeue prints it (an array task's is ``ARRAYID_TASK``, not its own ``SLURM_JOB_ID``)."""
    env = os.environ
    array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return env.get("SLURM_JOB_ID")


def _rank(rank: int, world: int, init: str, args: argparse.Namespace, out: Path) -> None:
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        _train(rank, world, args, out)
    finally:
        dist.destroy_process_group()


def _train(rank: int, world: int, args: argparse.Namespace, out: Path) -> None:
    torch.manual_seed(args.seed)  # the same data on every rank; each trains on its own share
    x, y = _data(2048, 64, 10)
    x, y = x[rank::world], y[rank::world]
    model = DistributedDataParallel(_model())
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    _train_step(model, optim, x[:BATCH], y[:BATCH])  # Adam's state exists from the first step: size it now
    size_gb = _size_gb(model, optim)
    advisor = _advisor(args, size_gb) if rank == 0 else None  # the job's one advisor
    since_asked = 0.0  # training seconds since rank 0 last asked
    last: Path | None = None
    for step in range(args.steps):
        t0 = time.perf_counter()
        i = (step * BATCH) % len(x)
        _train_step(model, optim, x[i : i + BATCH], y[i : i + BATCH])
        since_asked += args.model_step_s or time.perf_counter() - t0
        if (step + 1) % args.every:
            continue  # every rank skips the same steps: the broadcast below is a collective
        todo: Instruction | None = None
        if advisor is not None:
            todo = advisor.step(step, since_asked)  # looks ahead to the next ask, --every steps on
            if todo is not None:
                _emit(event="instruction", rank=rank, step=step, mode=todo.mode.value, target=todo.target,
                      reason=todo.reason, planning=advisor.planning)  # fmt: skip
        since_asked = 0.0
        box = [todo]
        dist.broadcast_object_list(box, src=0)  # rank 0's answer, on every rank
        todo = box[0]
        if todo is None:
            continue
        blocking_s, last = _save(todo, step, model, optim, out)
        _emit(event="save", rank=rank, step=step, mode=todo.mode.value, target=todo.target)
        if advisor is not None:  # a blocking save is durable when it returns
            advisor.saved(todo.mode, todo.target, blocking_s, blocking_s, size_gb)
    if advisor is not None:
        _emit(event="done", rank=rank, clock_s=advisor.clock_s, refresh_s=advisor.refresh_s)
    if last is not None:
        _emit(event="restored", rank=rank, where=str(last), loss=_restored_loss(last, x, y))


def _advisor(args: argparse.Namespace, size_gb: float) -> Advisor:
    job = args.job or scheduler_job() or "train"
    checkpoint = JobCheckpoint(
        size_gb, changed_share=1.0, host_copy_gbps=0.0, peer_gbps=0.0, overhead_s=OVERHEAD_S
    )
    return Advisor(
        job,
        checkpoint,
        _source(args),
        timeout_s=args.timeout_s,
        fallback=Fallback(target=PATHS[-1], interval_s=args.fallback_interval_s, mode=Mode.FULL),
        refresh_s=args.refresh_s,
    )


def _source(args: argparse.Namespace) -> RiskSource:
    if args.service:
        return HttpSource(args.service, timeout_s=args.service_timeout_s)
    # Scaled to this toy model, whose saves take milliseconds, so that a short run saves often.
    paths = tuple(StoragePath(n, g, 1.5 * g, State.HEALTHY) for n, g in zip(PATHS, (0.02, 0.01), strict=True))
    return StaticSource(args.mtbf_s, paths, Survival(host=0.0))


def _save(
    todo: Instruction, step: int, model: nn.Module, optim: torch.optim.Optimizer, out: Path
) -> tuple[float, Path]:
    """The save every rank makes together: dcp writes each rank's part and rank 0 the metadata."""
    if todo.mode not in (Mode.FULL, Mode.INCREMENTAL):  # host_copy_gbps=0: never planned
        raise ValueError(f"this example keeps no copy in host memory; cannot carry out {todo.mode.value}")
    where = out / todo.target / f"step-{step:06d}"
    t0 = time.perf_counter()
    model_sd, optim_sd = get_state_dict(model, optim)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=where)
    return time.perf_counter() - t0, where


def _restored_loss(where: Path, x: torch.Tensor, y: torch.Tensor) -> float:
    """The last checkpoint loaded into a fresh model on every rank: the saves are real checkpoints."""
    fresh = DistributedDataParallel(_model())
    optim = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    model_sd, optim_sd = get_state_dict(fresh, optim)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=where)
    set_state_dict(fresh, optim, model_state_dict=state["model"], optim_state_dict=state["optim"])
    with torch.no_grad():
        return float(nn.functional.cross_entropy(fresh(x), y))


# ---- training --------------------------------------------------------------------------------
def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))


def _data(n: int, dim: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random teacher labels random inputs: learnable, and the same every run."""
    x = torch.randn(n, dim)
    return x, (x @ torch.randn(dim, classes)).argmax(dim=1)


def _train_step(model: nn.Module, optim: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    optim.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()  # DDP averages the gradients across the ranks here
    optim.step()
    return loss.item()


def _size_gb(model: nn.Module, optim: torch.optim.Optimizer) -> float:
    model_sd, optim_sd = get_state_dict(model, optim)
    tensors = list(model_sd.values()) + [
        t
        for per_param in optim_sd["state"].values()
        for t in per_param.values()
        if isinstance(t, torch.Tensor)
    ]
    return sum(t.numel() * t.element_size() for t in tensors) / 1e9


def _emit(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")  # one write per line: the ranks share stdout
    sys.stdout.flush()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world-size", type=int, default=2, help="ranks to spawn (not under torchrun)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=1, help="rank 0 asks and broadcasts every this many steps")
    p.add_argument("--out", help="checkpoint directory (default: a temporary one, removed at the end)")
    p.add_argument("--service", help="seamguard's URL (`seamguard run --listen`); default: a static risk")
    p.add_argument("--service-timeout-s", type=float, default=2.0)
    p.add_argument(
        "--job", help="the job's name in seamguard's job table (default: its Slurm job id, else 'train')"
    )
    p.add_argument("--mtbf-s", type=float, default=2.0, help="static source: the job's MTBF (toy scale)")
    p.add_argument("--timeout-s", type=float, default=600.0, help="the job's collective timeout")
    p.add_argument("--refresh-s", type=float, default=0.05, help="training seconds between asking the source")
    p.add_argument(
        "--fallback-interval-s", type=float, default=0.5, help="the fixed interval without a source"
    )
    p.add_argument(
        "--model-step-s", type=float, default=0.0,
        help="tell the advisor each step took this long instead of measuring it (0: measure)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    return p


if __name__ == "__main__":
    raise SystemExit(main())
