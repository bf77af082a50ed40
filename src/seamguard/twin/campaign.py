"""Many runs of the twin: every policy on every seed of one scenario, on the very same faults.

The world (cluster, per-GPU spread, faults and their times) is a function of (scenario, seed),
so each policy of a seed meets identical conditions and their difference is the policy's doing.
Every (seed, policy) run is independent and deterministic, so runs can go to other processes
(``engine="local"``) or to a Ray cluster (``engine="ray"``) and still give the serial results.
"""

from __future__ import annotations

import copyreg
import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from contextlib import ExitStack
from multiprocessing.synchronize import Event as EventType
from typing import Any, Protocol

from seamguard.errors import InputError
from seamguard.twin.results import RunResult
from seamguard.twin.scenario import Scenario
from seamguard.twin.sim import POLICIES, Twin
from seamguard.twin.world import build_world

# Progress of one run: (policy, seed, simulated seconds done since the run's start). Seconds, not
# steps, because steps vary in length; every run's last call carries its whole duration.
StepCallback = Callable[[str, int, float], None]
_Message = tuple[str, int, float]

ENGINES = ("local", "ray")
PROGRESS_PERIOD_S = 0.25  # a worker reports a run's progress at most this often (plus its end)
POLL_S = 0.1  # how often the parent drains the progress queue while it waits


def _reduce_input_error(exc: InputError) -> tuple[type[InputError], tuple[str, str]]:
    return InputError, (exc.where, exc.problem)


# A bad input met inside a worker (a scenario or config value) must reach the CLI as itself; its
# two-argument constructor does not survive pickling's default of rebuilding from the message.
copyreg.pickle(InputError, _reduce_input_error)


class _Sink(Protocol):
    """What a worker puts progress into: a Manager queue proxy or a Ray queue."""

    def put(self, item: _Message) -> None: ...


def parse_policies(text: str) -> tuple[str, ...]:
    """``binary,seamguard`` -> the named policies, refusing unknown or repeated names."""
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    if not names:
        raise InputError("--policies", f"name at least one of {', '.join(POLICIES)}")
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise InputError(
            "--policies", f"unknown {', '.join(map(repr, unknown))}; expected {', '.join(POLICIES)}"
        )
    if len(set(names)) != len(names):
        raise InputError("--policies", f"a policy is named twice in {text!r}")
    return names


def seed_list(count: int, first: int = 0) -> tuple[int, ...]:
    if count < 1:
        raise InputError("--seeds", f"need at least one seed, got {count}")
    if first < 0:
        raise InputError("--first-seed", f"must be non-negative, got {first}")
    return tuple(range(first, first + count))


def check_engine(engine: str, workers: int | None) -> None:
    """Refuse an unknown engine or a worker count below one before anything starts."""
    if engine not in ENGINES:
        raise InputError("--engine", f"unknown {engine!r}; expected one of {', '.join(ENGINES)}")
    if workers is not None and workers < 1:
        raise InputError("--workers", f"need at least one worker, got {workers}")


def run_seconds(scenario: Scenario) -> float:
    """Simulated seconds in one run: a progress bar's total per run."""
    return scenario.duration_s


def run_campaign(
    scenario: Scenario,
    policies: Sequence[str],
    seeds: Sequence[int],
    on_step: StepCallback | None = None,
    *,
    engine: str = "local",
    workers: int | None = None,
) -> list[RunResult]:
    """Every (seed, policy) pair, seed-major so that early results already compare policies.

    ``engine="local"`` runs ``workers`` processes (default: one per CPU, at most one per run;
    1 runs in this process); ``engine="ray"`` runs each pair as a Ray task, on the cluster at
    ``RAY_ADDRESS`` or on a local instance of ``workers`` CPUs. The order and the results are
    those of a serial run whichever finishes first.
    """
    check_engine(engine, workers)
    runs = [(seed, policy) for seed in seeds for policy in policies]
    if engine == "ray":
        return _run_ray(scenario, runs, on_step, workers)
    n = min(workers or os.cpu_count() or 1, len(runs))  # no idle processes to start
    if n <= 1:
        return _run_serial(scenario, policies, seeds, on_step)
    return _run_pool(scenario, runs, on_step, n)


def _run_serial(
    scenario: Scenario, policies: Sequence[str], seeds: Sequence[int], on_step: StepCallback | None
) -> list[RunResult]:
    """In this process, one world per seed shared by its policies: cheap for tests and small runs."""
    results = []
    for seed in seeds:
        world = build_world(scenario, seed)
        for policy in policies:
            relay = None if on_step is None else _progress(on_step, policy, seed, world.start, world.end)
            results.append(Twin(world, policy).run(relay))
    return results


def _progress(
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
        send = _progress(
            lambda p, s, done: sink.put((p, s, done)), policy, seed, world.start, world.end, PROGRESS_PERIOD_S
        )
    stop = _stop

    def relay(t: float) -> None:
        if stop is not None and stop.is_set():  # a cheap check: a semaphore, no round trip
            raise RuntimeError(f"{policy}, seed {seed}: stopped, the campaign failed or was interrupted")
        if send is not None:
            send(t)

    return Twin(world, policy).run(relay if send is not None or stop is not None else None)


def _run_pool(
    scenario: Scenario, runs: list[tuple[int, str]], on_step: StepCallback | None, workers: int
) -> list[RunResult]:
    """Spawned processes, not forked ones: a fork copies the parent's locks but not the threads
    that hold them (numpy's, the progress bar's), and a child can hang on one. On a failure or
    Ctrl-C the running runs stop at their next step rather than run to their end."""
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    with ExitStack() as stack:
        sink = None if on_step is None else stack.enter_context(ctx.Manager()).Queue()
        pool = stack.enter_context(
            ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(stop,))
        )
        futures = [pool.submit(_run_one, scenario, seed, policy, sink) for seed, policy in runs]
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


def _run_ray(
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
