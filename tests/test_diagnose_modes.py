"""The diagnosis rules on signals whose right answer is known, one mode at a time: each rule
names its mode, points at the right entities (none for an input stall), and costs what the job
loses; a job's usual pace is learnt from its healthy ticks only. tests/test_diagnose_twin.py runs
the same rules on the twin's telemetry."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from seamguard.diagnose.job_signals import SEAMS, JobSignals
from seamguard.diagnose.modes import Diagnoser, Finding, Mode

GPUS = [f"gpu/n0{i // 4}/{i % 4}" for i in range(16)]


def signals(now: float, step: float = 2.0, **over: object) -> JobSignals:
    base = JobSignals(
        now=now, jobs=("train",), index=np.array([0]), gpus=np.array([16.0]), sync=np.array([True]),
        step_s=np.array([step]), step_seen=np.array([now - 1.0]), ckpt_s=np.array([30.0]), util=np.array([90.0]),
        rank_spread=np.array([0.02]), read_ms=np.array([5.0]), slow_ranks=((),), throttled=((),), unwell={seam: ((),) for seam in SEAMS},
    )  # fmt: skip
    return replace(base, **over)  # type: ignore[arg-type]


def warmed(ticks: int = 120) -> tuple[Diagnoser, float]:
    """A diagnoser that has seen the job healthy for an hour (30 s ticks)."""
    d = Diagnoser()
    now = 1.0e9
    for _ in range(ticks):
        [f] = d.tick(signals(now))
        assert f.mode is Mode.HEALTHY
        now += 30.0
    return d, now


def one(d: Diagnoser, s: JobSignals) -> Finding:
    """The finding once a change has been judged on two ticks in a row (``confirm_ticks``)."""
    d.tick(s)
    [f] = d.tick(replace(s, now=s.now + 30.0, step_seen=s.step_seen + 30.0))
    return f


def unwell(**seams: tuple[str, ...]) -> dict[str, tuple[tuple[str, ...], ...]]:
    return {seam: (seams.get(seam, ()),) for seam in SEAMS}


def test_an_input_stall_blames_no_part() -> None:
    d, now = warmed()
    f = one(d, signals(now, step=2.6, util=np.array([70.0])))
    assert f.mode is Mode.INPUT_STALL and f.entities == () and f.confidence == 0.8
    assert f.action is None and "no part is at fault" in f.mitigation
    assert f.rate_gpu_h_per_h == pytest.approx(16 * 0.3 / 1.3)
    # the same slowdown with its GPUs as busy as ever is less surely input
    d, now = warmed()
    assert one(d, signals(now, step=2.6)).confidence == 0.5


def test_a_gray_leaf_under_the_job_is_the_network() -> None:
    d, now = warmed()
    f = one(d, signals(now, step=2.4, unwell=unwell(fabric=("switch/leaf00",))))
    assert (f.mode, f.entities, f.action) == (Mode.NETWORK, ("switch/leaf00",), "reroute")


def test_a_few_slow_ranks_are_stragglers_unless_they_are_the_hot_ones() -> None:
    d, now = warmed()
    slow = (GPUS[5],)
    f = one(d, signals(now, step=2.3, rank_spread=np.array([0.3]), slow_ranks=(slow,)))
    assert (f.mode, f.entities, f.action) == (Mode.STRAGGLER, slow, "replace_rank")
    d, now = warmed()
    f = one(d, signals(now, step=2.3, rank_spread=np.array([0.3]), slow_ranks=(slow,), throttled=(slow,)))
    assert (f.mode, f.entities) == (Mode.THERMAL_POWER, slow)
    # one GPU at its power cap elsewhere in the job is no limit on it
    d, now = warmed()
    f = one(
        d, signals(now, step=2.3, rank_spread=np.array([0.3]), slow_ranks=(slow,), throttled=((GPUS[9],),))
    )
    assert f.mode is Mode.STRAGGLER
    # more than a quarter of the ranks slow is the whole job, not stragglers
    d, now = warmed()
    many = tuple(GPUS[:6])
    assert (
        one(d, signals(now, step=2.3, rank_spread=np.array([0.3]), slow_ranks=(many,))).mode
        is Mode.INPUT_STALL
    )


def test_an_unwell_cdu_is_a_thermal_or_power_limit() -> None:
    d, now = warmed()
    f = one(d, signals(now, step=2.5, unwell=unwell(facilities=("cdu/cdu0", "rack/r000"))))
    assert (f.mode, f.entities[:2], f.action) == (
        Mode.THERMAL_POWER,
        ("cdu/cdu0", "rack/r000"),
        "checkpoint_now",
    )


def test_a_slow_storage_backend_is_the_storage_io_limit() -> None:
    d, now = warmed()
    f = one(d, signals(now, step=2.5, unwell=unwell(storage=("storage/ckpt0",))))
    assert (f.mode, f.entities) == (Mode.STORAGE_IO, ("storage/ckpt0",))


def test_reads_twice_as_slow_as_usual_are_the_storage_io_limit_though_nothing_is_unwell() -> None:
    d, now = warmed()  # usual reads 5 ms
    f = one(d, signals(now, step=2.5, read_ms=np.array([12.0]), util=np.array([70.0])))
    assert (f.mode, f.confidence) == (Mode.STORAGE_IO, 0.7) and "2.4× usual" in " ".join(f.evidence)
    d, now = warmed()
    assert (
        one(d, signals(now, step=2.5, read_ms=np.array([8.0]), util=np.array([70.0]))).mode
        is Mode.INPUT_STALL
    )


def test_a_checkpoint_twice_as_long_is_a_checkpoint_stall() -> None:
    d, now = warmed()
    f = one(d, signals(now, ckpt_s=np.array([75.0]), unwell=unwell(storage=("storage/ckpt0",))))
    assert (f.mode, f.entities, f.confidence) == (Mode.CHECKPOINT_STALL, ("storage/ckpt0",), 0.8)
    assert f.action == "switch_checkpoint_target"
    d, now = warmed()
    assert one(d, signals(now, ckpt_s=np.array([55.0]))).mode is Mode.HEALTHY  # under twice its usual 30 s


def test_steps_that_stop_are_a_hang_unless_a_save_is_stuck() -> None:
    d, now = warmed()
    late = signals(now + 300, step_seen=np.array([now - 1.0]))  # 300 s without a step; usual step 2 s
    [f] = d.tick(late)  # at once: the minute of silence is the confirmation
    assert (f.mode, f.entities) == (Mode.HANG, ("job/train",)) and f.rate_gpu_h_per_h == 16.0
    d, now = warmed()
    [f] = d.tick(signals(now + 50, step_seen=np.array([now - 1.0])))
    assert f.mode is Mode.HEALTHY  # 51 s: under the minute
    d, now = warmed()
    stuck = replace(late, unwell=unwell(storage=("storage/ckpt0",)))
    assert one(d, stuck).mode is Mode.CHECKPOINT_STALL
    # stopped, its GPUs idle, under an unwell CDU (a thermal trip and its restart) is the heat, not a hang
    d, now = warmed()
    idle = replace(late, util=np.array([3.0]))
    f = one(d, replace(idle, unwell=unwell(facilities=("cdu/cdu0",))))
    assert (f.mode, f.entities) == (Mode.THERMAL_POWER, ("cdu/cdu0",))
    # ...and so is a collective hung, its GPUs spinning, under that CDU (a GPU tripped)
    d, now = warmed()
    assert one(d, replace(late, unwell=unwell(facilities=("cdu/cdu0",)))).mode is Mode.THERMAL_POWER
    # with nothing around it unwell, spinning GPUs are a hung collective, throttle bits or not
    # (a GPU spinning at full use meets its power cap)
    d, now = warmed()
    [f] = d.tick(replace(late, throttled=((GPUS[3],),)))
    assert f.mode is Mode.HANG and "90 % busy" in f.evidence[0]


def test_a_silent_job_with_idle_gpus_is_restarting_not_hung_and_teaches_nothing() -> None:
    d, now = warmed()
    usual = d.usual["train"].util
    for k in range(10):  # five minutes of a restart: no step, its GPUs idle
        [f] = d.tick(signals(now + 300 + 30 * k, step_seen=np.array([now - 1.0]), util=np.array([2.0])))
        assert f.mode is Mode.HEALTHY and f.rate_gpu_h_per_h == 0.0
    assert "restarting, not hung" in f.evidence[0]
    assert d.usual["train"].util == usual  # the idle restart is not learnt as its usual GPU use
    # a job whose GPUs' use is not reported is judged as before: silence is a hang
    d, now = warmed()
    [f] = d.tick(signals(now + 300, step_seen=np.array([now - 1.0]), util=np.array([np.nan])))
    assert f.mode is Mode.HANG


def test_one_noisy_tick_is_no_mode() -> None:
    d, now = warmed()
    [f] = d.tick(signals(now, step=2.6))
    assert f.mode is Mode.HEALTHY
    [f] = d.tick(signals(now + 30))
    assert f.mode is Mode.HEALTHY and d.usual["train"].mode is Mode.HEALTHY


def test_the_cost_so_far_adds_up_and_restarts_with_a_new_mode() -> None:
    d, now = warmed()
    for k in range(121):  # an hour at +30 %, named from its second tick
        [f] = d.tick(signals(now + 30 * k, step=2.6, util=np.array([70.0])))
    assert f.mode is Mode.INPUT_STALL and f.since == now + 30
    assert f.cost_gpu_h == pytest.approx(16 * 0.3 / 1.3 * 119 * 30 / 3600)
    [held] = d.tick(signals(now + 30 * 121))  # one healthy tick: the stall is still named...
    assert held.mode is Mode.INPUT_STALL and held.cost_gpu_h > f.cost_gpu_h
    back = one(d, signals(now + 30 * 122))  # ...and healthy from the second
    assert back.mode is Mode.HEALTHY and back.cost_gpu_h == 0.0


def test_the_usual_pace_is_learnt_while_healthy_and_frozen_while_not() -> None:
    d, now = warmed()
    usual = d.usual["train"].step
    assert usual == pytest.approx(2.0)
    for k in range(240):  # two hours slow: found all along, and never learnt as the norm
        assert one(d, signals(now + 30 * k, step=2.6)).mode is Mode.INPUT_STALL
    assert d.usual["train"].step == usual
    # a pace within the margin moves the usual one slowly (time constant an hour)
    d, now = warmed()
    one(d, signals(now, step=2.1))
    assert 2.0 < d.usual["train"].step < 2.01


def test_a_finding_is_json_safe_before_anything_is_known() -> None:
    import json

    [f] = Diagnoser().tick(signals(1.0e9))
    assert json.loads(json.dumps(f.to_json(), allow_nan=False))["since"] is None


def test_an_unwell_dependency_before_its_impact_is_a_risk_and_its_lead_time_is_kept() -> None:
    d, now = warmed()
    hot = unwell(facilities=("cdu/cdu0",))
    [f] = d.tick(signals(now, unwell=hot))  # the CDU warms; the job's pace is not hurt yet
    assert (f.mode, f.risk, f.risk_since) == (Mode.HEALTHY, ("cdu/cdu0",), now)
    assert "not slowing it yet" in f.mitigation and any("pace not hurt yet" in e for e in f.evidence)
    start = now
    for _ in range(20):  # ten minutes of warning
        now += 30.0
        [f] = d.tick(signals(now, unwell=hot))
        assert f.risk_since == start  # the window's start stays where it began
    now += 30.0
    f = one(d, signals(now, step=2.5, unwell=hot, throttled=(tuple(GPUS[:8]),)))
    assert f.mode is Mode.THERMAL_POWER and f.risk == ()
    assert f.lead_time_s == pytest.approx(now + 30.0 - start)  # named on the second tick
    assert f.to_json()["lead_time_s"] == pytest.approx(now + 30.0 - start)
    # a fault with no warning has no lead time, and a risk that cleared is forgotten
    d, now = warmed()
    d.tick(signals(now, unwell=hot))
    d.tick(signals(now + 30.0))
    f = one(d, signals(now + 60.0, step=2.5, unwell=hot, throttled=(tuple(GPUS[:8]),)))
    assert f.mode is Mode.THERMAL_POWER and np.isnan(f.lead_time_s)
    assert f.to_json()["lead_time_s"] is None


def test_a_healthy_job_with_nothing_unwell_is_at_no_risk() -> None:
    d, now = warmed()
    [f] = d.tick(signals(now))
    assert f.risk == () and np.isnan(f.risk_since) and f.mitigation == ""
