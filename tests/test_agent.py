"""The training-side advisor: plans from the engine's risk and its own measurements, falls back
to a fixed schedule when the source fails, and never blocks past the collective timeout."""

from __future__ import annotations

import importlib.metadata
import logging
import math
from dataclasses import replace

import pytest
from packaging.requirements import Requirement

from seamguard.agent import Advisor, Fallback, Instruction, SourceError, StaticSource
from seamguard.economics.checkpoint_modes import JobCheckpoint, Mode, StoragePath, Survival
from seamguard.economics.job_risk import JobRisk
from seamguard.model.states import State

HOUR = 3600.0
# 1 TB of state, no room in host memory: storage saves only, each one blocking.
DISK_ONLY = JobCheckpoint(
    size_gb=1000.0, changed_share=1.0, host_copy_gbps=0.0, peer_gbps=0.0, overhead_s=5.0
)


def path(
    name: str, write_gbps: float, read_gbps: float | None = None, state: State = State.HEALTHY
) -> StoragePath:
    return StoragePath(name, write_gbps, read_gbps if read_gbps is not None else 1.5 * write_gbps, state)


def risk(mtbf_s: float, *paths: StoragePath, host: float = 1.0) -> JobRisk:
    return JobRisk("train", 0.0, mtbf_s, mtbf_s, Survival(host=host), tuple(paths), "")


class Switchable:
    """A source whose answer a test changes: a risk, or an error to raise."""

    def __init__(self, answer: JobRisk | Exception) -> None:
        self.answer = answer
        self.calls = 0

    def risk(self, job: str) -> JobRisk:
        self.calls += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return replace(self.answer, job=job)


def advisor(source: object, checkpoint: JobCheckpoint = DISK_ONLY, **kw: object) -> Advisor:
    options: dict[str, object] = {
        "timeout_s": 3600.0,
        "fallback": Fallback(target="b", interval_s=1800.0),
        "refresh_s": 0.0,
    }
    options.update(kw)
    return Advisor("train", checkpoint, source, **options)  # type: ignore[arg-type]


def run_until_instruction(adv: Advisor, step_s: float = 60.0, limit: int = 10_000) -> Instruction:
    for step in range(limit):
        todo = adv.step(step, step_s)
        if todo is not None:
            return todo
    raise AssertionError(f"no instruction in {limit} steps; last plan: {adv.plan}")


def test_a_path_measured_slow_loses_the_job_to_another() -> None:
    # The engine says path a delivers 10 GB/s and b 5 GB/s: a full save to a blocks least.
    adv = advisor(StaticSource(6 * HOUR, (path("a", 10.0), path("b", 5.0))))
    first = run_until_instruction(adv)
    assert (first.mode, first.target) == (Mode.FULL, "a")
    # The save took 500 s: a delivers 2 GB/s to this job now, whatever the engine last said.
    adv.saved(Mode.FULL, "a", blocking_s=500.0, durable_s=500.0, size_gb=1000.0)
    assert adv.measured["a"].write_gbps == pytest.approx(2.0)
    second = run_until_instruction(adv)
    assert second.target == "b"
    assert adv.plan is not None and adv.plan.choice is not None
    assert adv.plan.choice.blocking_s == pytest.approx(1000 / 5 + 5)  # b at the engine's figure
    # b measured as the engine said; a's measurement goes stale and the engine's figure returns.
    adv.saved(Mode.FULL, "b", blocking_s=200.0, durable_s=200.0, size_gb=1000.0)
    adv.step(0, adv.measured_fresh_s + 1.0)
    assert run_until_instruction(adv).target == "a"


def test_a_slow_background_persist_moves_tiered_saves_too() -> None:
    # With host memory, a tiered save blocks for the host copy only; its persist's speed is what
    # the advisor measures (durable minus blocking) and what sets how late the copy is durable.
    ckpt = replace(DISK_ONLY, host_copy_gbps=100.0)
    adv = advisor(StaticSource(6 * HOUR, (path("a", 10.0), path("b", 5.0)), Survival(host=0.5)), ckpt)
    first = run_until_instruction(adv)
    assert (first.mode, first.target) == (Mode.TIERED, "a")
    adv.saved(Mode.TIERED, "a", blocking_s=15.0, durable_s=15.0 + 1000.0, size_gb=1000.0)
    assert adv.measured["a"].write_gbps == pytest.approx(1.0)
    assert run_until_instruction(adv).target == "b"


def test_an_unsafe_path_is_worth_nothing_however_fast_it_measured() -> None:
    src = Switchable(risk(6 * HOUR, path("a", 10.0), path("b", 5.0)))
    adv = advisor(src)
    adv.saved(Mode.FULL, "a", blocking_s=10.0, durable_s=10.0, size_gb=1000.0)  # 100 GB/s
    src.answer = risk(6 * HOUR, path("a", 10.0, state=State.RECOVERY_UNSAFE), path("b", 5.0))
    for _ in range(3):
        todo = run_until_instruction(adv)
        assert todo.target == "b"
        adv.saved(todo.mode, todo.target, blocking_s=205.0, durable_s=205.0, size_gb=1000.0)


def test_a_rising_hazard_shortens_the_interval_and_orders_a_save_now() -> None:
    src = Switchable(risk(24 * HOUR, path("a", 10.0)))
    adv = advisor(src)
    for step in range(10):  # ten minutes since the job's start, its last durable state
        assert adv.step(step, 60.0) is None
    assert adv.plan is not None
    calm = adv.plan.interval_s
    assert calm > 3000  # Young: sqrt(2 x 105 s x 24 h) = 71 min
    src.answer = risk(20 * 60.0, path("a", 10.0))  # a part under the job starts failing
    todo = adv.step(10, 60.0)
    assert adv.plan.interval_s < 600 < calm  # sqrt(2 x 105 s x 20 min) = 8.4 min, already past
    assert todo is not None
    assert (todo.mode, todo.target, todo.deadline_s) == (Mode.FULL, "a", 0.0)
    assert todo.reason.startswith("save now: 11.0 min since the last durable copy")


def test_a_due_save_is_announced_with_its_deadline_and_an_ignored_one_repeated_an_interval_later() -> None:
    adv = advisor(StaticSource(6 * HOUR, (path("a", 10.0),)))
    first = run_until_instruction(adv, step_s=100.0)
    assert adv.plan is not None
    interval = adv.plan.interval_s
    assert 0 < first.deadline_s <= 100.0  # due before the next step ends, not yet past
    assert not first.reason.startswith("save now")
    issued_at = adv.clock_s
    repeats = []
    while adv.clock_s < issued_at + 2.5 * interval:  # the loop ignores every instruction
        if adv.step(0, 100.0) is not None:
            repeats.append(adv.clock_s - issued_at)
    assert len(repeats) == 2
    assert repeats[0] == pytest.approx(interval, abs=100.0)
    assert repeats[1] - repeats[0] == pytest.approx(interval, abs=100.0)


def test_a_failing_source_gives_the_fixed_interval_one_warning_and_planning_again_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="seamguard.agent")
    src = Switchable(risk(20 * 60.0, path("a", 10.0), path("b", 5.0)))
    adv = advisor(src, fallback=Fallback(target="b", interval_s=1800.0, mode=Mode.FULL))
    todo = run_until_instruction(adv)
    assert adv.planning and todo.target == "a"
    adv.saved(todo.mode, todo.target, 105.0, 105.0, 1000.0)

    src.answer = SourceError("http://engine:8470/v1/jobs/train/risk unreachable: connection refused")
    gaps, since_saved = [], 0.0
    for step in range(300):  # five hours of one-minute steps without the engine
        todo = adv.step(step, 60.0)
        since_saved += 60.0
        if todo is not None:
            assert (todo.mode, todo.target) == (Mode.FULL, "b")
            assert todo.reason.startswith("fallback, the risk source failed (http://engine:8470")
            gaps.append(since_saved)
            adv.saved(todo.mode, todo.target, 205.0, 205.0, 1000.0)
            since_saved = 0.0
    assert not adv.planning
    # Every 30 min from save to save (to the minute step), where the engine's 20-min MTBF called
    # for every 8.4 min: the 205 s a save blocks count, the step announcing it may be early.
    assert len(gaps) >= 8 and all(1800 - 60 <= g + 205 <= 1800 for g in gaps[1:])
    failed = [r for r in caplog.records if "risk source failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].levelno == logging.WARNING
    assert "full to b every 1800 s" in failed[0].getMessage()

    src.answer = risk(20 * 60.0, path("a", 10.0), path("b", 5.0))
    todo = run_until_instruction(adv)
    assert adv.planning and todo.target == "a" and not todo.reason.startswith("fallback")
    for step in range(50):
        adv.step(step, 60.0)
    assert [r.getMessage() for r in caplog.records if "answers again" in r.getMessage()] == [
        "job train, step 0: risk source answers again; planning from its hazard"
    ]
    assert len(caplog.records) == 2


def test_any_error_in_the_source_is_a_fallback_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="seamguard.agent")
    adv = advisor(Switchable(ZeroDivisionError("a bug in a custom source")))
    todo = run_until_instruction(adv)
    assert todo.reason.startswith("fallback, the risk source failed (a bug in a custom source)")
    bad = Switchable(risk(0.0, path("a", 10.0)))  # a nonsensical answer is a failure too
    adv = advisor(bad)
    adv.step(0, 60.0)
    assert not adv.planning
    assert "mtbf_s must be positive" in caplog.records[-1].getMessage()


def test_the_source_is_asked_every_refresh_interval_not_every_step() -> None:
    src = Switchable(risk(6 * HOUR, path("a", 10.0)))
    adv = advisor(src, refresh_s=300.0)
    for step in range(30):  # 30 min of one-minute steps
        adv.step(step, 60.0)
    assert src.calls == 6


def test_no_instruction_blocks_past_the_collective_timeout(caplog: pytest.LogCaptureFixture) -> None:
    # Path a: full save blocks 1000/1.5 + 5 = 672 s, restore fast. Path b: blocks 505 s, but
    # restores at 0.1 GB/s (2.8 h). Without a timeout the planner takes a; with 600 s it must not.
    paths = (path("a", 1.5, 100.0), path("b", 2.0, 0.1))
    unbounded = advisor(StaticSource(HOUR, paths), timeout_s=3600.0)
    assert run_until_instruction(unbounded).target == "a"
    bounded = advisor(StaticSource(HOUR, paths), timeout_s=600.0)
    for _ in range(5):
        todo = run_until_instruction(bounded)
        assert bounded.plan is not None and bounded.plan.choice is not None
        assert todo.target == "b" and bounded.plan.choice.blocking_s <= 600.0
        bounded.saved(todo.mode, todo.target, 505.0, 505.0, 1000.0)
    # Nothing fits: no instruction at all, and one warning saying why.
    caplog.set_level(logging.WARNING, logger="seamguard.agent")
    stuck = advisor(StaticSource(HOUR, paths), timeout_s=300.0)
    assert all(stuck.step(step, 60.0) is None for step in range(500))
    warned = [r.getMessage() for r in caplog.records]
    assert warned == [
        "job train: no checkpoint can protect it now: every surviving copy blocks longer than the 300 s collective timeout"
    ]


def test_the_fallback_is_held_to_the_collective_timeout_too() -> None:
    src = Switchable(risk(6 * HOUR, path("a", 10.0), path("b", 5.0)))
    ckpt = replace(DISK_ONLY, host_copy_gbps=100.0)
    adv = advisor(
        src, ckpt, timeout_s=600.0, fallback=Fallback(target="b", interval_s=1800.0, mode=Mode.FULL)
    )
    adv.step(0, 60.0)  # the engine named b once
    adv.saved(Mode.TIERED, "b", blocking_s=15.0, durable_s=15.0 + 2000.0, size_gb=1000.0)  # b: 0.5 GB/s
    src.answer = SourceError("timed out")
    todo = run_until_instruction(adv)
    # A full save to b would block 2005 s now: the fallback keeps its target, in a mode that fits.
    assert (todo.mode, todo.target) == (Mode.TIERED, "b")
    assert "full would block 2005 s, past the 600 s collective timeout" in todo.reason


def test_bad_input_is_named() -> None:
    adv = advisor(StaticSource(HOUR, (path("a", 10.0),)))
    with pytest.raises(ValueError, match="step 3: step_time_s must be"):
        adv.step(3, -1.0)
    with pytest.raises(ValueError, match="saved: unknown mode 'snapshot'"):
        adv.saved("snapshot", "a", 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"saved: durable_s \(1\) cannot be less than blocking_s \(2\)"):
        adv.saved(Mode.FULL, "a", 2.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="saved: size_gb must be a finite number"):
        adv.saved(Mode.FULL, "a", 2.0, 2.0, math.nan)
    with pytest.raises(ValueError, match=r"Advisor\.timeout_s must be a finite number of seconds, positive"):
        advisor(StaticSource(HOUR, ()), timeout_s=0.0)
    with pytest.raises(ValueError, match=r"JobCheckpoint\.changed_share must be in"):
        advisor(StaticSource(HOUR, ()), replace(DISK_ONLY, changed_share=0.0))
    with pytest.raises(ValueError, match=r"Fallback\.interval_s must be a positive"):
        Fallback(target="a", interval_s=0.0)
    with pytest.raises(ValueError, match="an in_memory save targets 'memory'"):
        Fallback(target="a", interval_s=60.0, mode=Mode.IN_MEMORY)
    with pytest.raises(ValueError, match=r"StaticSource\.mtbf_s must be positive"):
        StaticSource(-1.0, ())
    with pytest.raises(ValueError, match=r"StaticSource\.paths names a path twice: a, a"):
        StaticSource(HOUR, (path("a", 1.0), path("a", 2.0)))


def test_a_training_job_importing_the_agent_loads_only_numpy_and_httpx() -> None:
    """The agent runs inside a training job: importing it may load the standard library, numpy
    and httpx (with what they themselves depend on) and nothing else third-party, nor the
    engine's config, controller, sources or actuators. It loaded pydantic through the risk's
    wire schema and, before that, 56 of seamguard's modules with kubernetes and the Slurm source.
    A fresh interpreter, so nothing else has loaded them first."""
    import json
    import subprocess
    import sys

    probe = (
        "import sys, json; before = set(sys.modules); import seamguard.agent; "
        "print(json.dumps(sorted(m for m in sys.modules if m not in before)))"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                       check=True).stdout)  # fmt: skip
    third_party = {m.split(".")[0] for m in loaded} - set(sys.stdlib_module_names) - {"seamguard"}
    allowed = _with_dependencies({"numpy", "httpx"})
    providers = importlib.metadata.packages_distributions()
    foreign = {m for m in third_party if not {d.lower() for d in providers.get(m, [m])} & allowed}
    assert not foreign, f"importing seamguard.agent loads {sorted(foreign)}"
    ours = {m for m in loaded if m.startswith("seamguard.")}
    heavy = ("seamguard.config", "seamguard.control", "seamguard.telemetry", "seamguard.actuators",
             "seamguard.service", "seamguard.journal", "seamguard.scoring", "seamguard.model.topology")  # fmt: skip
    assert not [m for m in ours if m.startswith(heavy)], sorted(ours)


def _with_dependencies(names: set[str]) -> set[str]:
    """``names`` and every distribution they require, transitively (extras left out), lower-case."""
    seen: set[str] = set()
    todo = [n.lower() for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [Requirement(r).name.lower() for r in requires if "extra ==" not in r]
    return seen
