"""Where a campaign's runs execute: spawned processes on this machine, or Ray tasks.

Each (seed, policy) run is independent and deterministic, so either gives the serial results;
workers report progress in simulated seconds through a queue the parent drains.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from contextlib import ExitStack
from multiprocessing.synchronize import Event as EventType
from typing import Any, Protocol

from seamguard.errors import InputError
from seamguard.twin.results import RunResult
from seamguard.twin.scenario import Scenario
from seamguard.twin.sim import Twin
from seamguard.twin.world import World, build_world

# Progress of one run: (policy, seed, simulated seconds done since the run's start). Seconds, not
# steps, because steps vary in length; every run's last call carries its whole duration.
StepCallback = Callable[[str, int, float], None]
_Message = tuple[str, int, float]

ENGINES = ("local", "ray")
PROGRESS_PERIOD_S = 0.25  # a worker reports a run's progress at most this often (plus its end)
POLL_S = 0.1  # how often the parent drains the progress queue while it waits


class _Sink(Protocol):
    """What a worker puts progress into: a Manager queue proxy or a Ray queue."""

    def put(self, item: _Message) -> None: ...


def progress(
    on_step: StepCallback, policy: str, seed: int, start: float, end: float, period_s: float = 0.0
) -> Callable[[float], None]:
    """Twin time -> seconds done in the run, at most one call per ``period_s`` of wall time
    but always the last one, which carries the run's exact duration."""
    last = -float("inf")

    def relay(t: float) -> None:
        nonlocal last
        final = t >= end - 1e-9
        now = time.monotonic()
        if final or now - last >= period_s:
            last = now
            on_step(policy, seed, (end - start) if final else t - start)

    return relay


# In a pool worker: set by the parent when the campaign fails or is interrupted (None elsewhere).
_stop: EventType | None = None


def _init_worker(stop: EventType) -> None:
    """Ctrl-C is the parent's to handle: a worker ignores it and stops when ``stop`` is set."""
    global _stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _stop = stop


def _run_one(scenario: Scenario, seed: int, policy: str, sink: _Sink | None) -> RunResult:
    """One run in a worker (a pool process or a Ray task); progress goes to ``sink``, throttled."""
    world = build_world(scenario, seed)
    send = None
    if sink is not None:
        send = progress(
            lambda p, s, done: sink.put((p, s, done)), policy, seed, world.start, world.end, PROGRESS_PERIOD_S
        )
    stop = _stop

    def relay(t: float) -> None:
        if stop is not None and stop.is_set():  # a cheap check: a semaphore, no round trip
            raise RuntimeError(f"{policy}, seed {seed}: stopped, the campaign failed or was interrupted")
        if send is not None:
            send(t)

    return run_noted(world, policy, relay if send is not None or stop is not None else None)


def run_noted(world: World, policy: str, relay: Callable[[float], None] | None) -> RunResult:
    """One run; an exception it raises carries a note naming the scenario, policy and seed (a
    pool of many scenarios' runs would otherwise not say which one failed)."""
    try:
        return Twin(world, policy).run(relay)
    except Exception as exc:
        exc.add_note(f"in the twin run of scenario {world.scenario.name}, policy {policy}, seed {world.seed}")
        raise


def run_pool(
    scenario: Scenario, runs: list[tuple[int, str]], on_step: StepCallback | None, workers: int
) -> list[RunResult]:
    """Spawned processes, not forked ones: a fork copies the parent's locks but not the threads
    that hold them (numpy's, the progress bar's), and a child can hang on one. On a failure or
    Ctrl-C the running runs stop at their next step rather than run to their end."""
    return run_tasks([(scenario, seed, policy) for seed, policy in runs], on_step, workers)


def run_tasks(
    tasks: list[tuple[Scenario, int, str]], on_step: StepCallback | None, workers: int
) -> list[RunResult]:
    """``run_pool`` for runs of several scenarios in one pool (sampled scenarios: one pool keeps
    both workers busy across scenarios); results in ``tasks`` order."""
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    with ExitStack() as stack:
        sink = None if on_step is None else stack.enter_context(ctx.Manager()).Queue()
        pool = stack.enter_context(
            ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(stop,))
        )
        futures = [pool.submit(_run_one, scenario, seed, policy, sink) for scenario, seed, policy in tasks]
        try:
            _wait_pool(futures, sink, on_step)
        except BaseException:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)  # before the Manager its runs write to goes
            raise
        return [f.result() for f in futures]


def _wait_pool(futures: list[Future[RunResult]], sink: Any, on_step: StepCallback | None) -> None:
    """Until every run is done, feeding their progress to ``on_step``; the first failure stops it."""
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=POLL_S, return_when=FIRST_EXCEPTION)
        _drain(sink, on_step)
        for f in done:
            f.result()  # raises the run's own exception
    _drain(sink, on_step)  # a worker puts its last message before its run returns


def _drain(sink: Any, on_step: StepCallback | None) -> None:
    if sink is None or on_step is None:
        return
    while True:
        try:
            policy, seed, done = sink.get_nowait()
        except queue.Empty:
            return
        on_step(policy, seed, done)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError("--engine", "ray is not installed: pip install 'seamguard[ray]'") from None
    return ray


def _connect_ray(ray: Any, workers: int | None) -> bool:
    """Join the cluster at RAY_ADDRESS (or the one already joined), else start a local instance
    of ``workers`` CPUs; True if we started it, so that we stop only what we started."""
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return False
    ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False, log_to_driver=False)
    return True


def run_ray(
    scenario: Scenario, runs: list[tuple[int, str]], on_step: StepCallback | None, workers: int | None
) -> list[RunResult]:
    """One Ray task per run; progress comes back through a Ray queue (an actor)."""
    ray = _import_ray()
    started = _connect_ray(ray, workers)
    try:
        from ray.util.queue import Queue

        sink = None if on_step is None else Queue()
        task = ray.remote(_run_one)
        shared = ray.put(scenario)  # one copy in the object store, not one per task
        refs = [task.remote(shared, seed, policy, sink) for seed, policy in runs]
        try:
            _wait_ray(ray, refs, sink, on_step)
        except BaseException:
            for ref in refs:
                ray.cancel(ref)  # a cluster we only joined would otherwise go on running them
            raise
        results: list[RunResult] = ray.get(refs)
        return results
    finally:
        if started:
            ray.shutdown()


def _wait_ray(ray: Any, refs: list[Any], sink: Any, on_step: StepCallback | None) -> None:
    """Until every task is done, feeding their progress to ``on_step``; the first failure stops it."""
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
        _drain_ray(sink, on_step)
        try:
            ray.get(ready)  # raises a failed run's exception now, not after the others
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, InputError):  # the user's mistake, not Ray's: say it plainly
                raise exc.cause from None
            raise
    _drain_ray(sink, on_step)


def _drain_ray(sink: Any, on_step: StepCallback | None) -> None:
    if sink is None or on_step is None:
        return
    n = sink.qsize()
    for policy, seed, done in sink.get_nowait_batch(n) if n else ():
        on_step(policy, seed, done)
