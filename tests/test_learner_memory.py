"""The fleet's learned failure rate across a restart: written to the journal's meta table by the
leader, read back by a daemon that starts cold, decayed over the time it was down, and refused,
with a notice naming why, when what the journal holds is not what was written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from seamguard.config import load_config
from seamguard.control.learner_memory import META_KEY, SAVE_EVERY_S, LearnerMemory
from seamguard.economics.hazard_learning import HazardLearner, learner_for
from seamguard.journal.sqlite import SqliteJournal

CFG = load_config()
T0 = 1.0e9


def learned(observed: float, expected: float, at: float = T0) -> HazardLearner:
    learner = learner_for(CFG.hazard)
    learner.observed, learner.expected, learner.last = observed, expected, at
    return learner


def test_a_cold_learner_takes_over_the_saved_sums_decayed_over_the_time_down(tmp_path: Path) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        before = learned(4.0, 0.5)
        LearnerMemory().save(journal, before, T0)
        cold = learner_for(CFG.hazard)
        half = CFG.hazard.learn_halflife_s
        memory = LearnerMemory()
        [notice] = memory.restore(journal, cold, T0 + half)
        assert cold.observed == pytest.approx(2.0) and cold.expected == pytest.approx(0.25)
        assert cold.last == T0 + half  # the time down is not watched: nothing expected for it
        assert cold.scale() > 1.5 and notice.level == "info" and f"x{cold.scale():.2f}" in notice.message
        assert memory.restore(journal, cold, T0 + half) == [] and cold.observed == pytest.approx(2.0)  # once
        assert (
            LearnerMemory().restore(SqliteJournal(tmp_path / "other.sqlite"), learner_for(CFG.hazard), T0)
            == []
        )


def test_what_a_restarted_daemon_counted_before_reading_the_journal_is_kept(tmp_path: Path) -> None:
    """A journal out of reach at the first ticks delays the read; what the learner counted
    meanwhile is added to, not replaced."""
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        LearnerMemory().save(journal, learned(2.0, 1.0), T0)
        memory, learner = LearnerMemory(), learned(1.0, 0.0, T0 + 60)
        memory.save(None, learner, T0 + 60)  # a first tick, the journal not read yet
        memory.restore(journal, learner, T0 + 120)
        assert learner.observed == pytest.approx(3.0, rel=1e-3) and learner.last == T0 + 60


def test_a_follower_taking_the_leadership_keeps_its_own_sums(tmp_path: Path) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        LearnerMemory().save(journal, learned(4.0, 0.5), T0)
        memory, follower = LearnerMemory(), learned(4.0, 0.5, T0)
        memory.save(None, follower, T0 - 3600)  # ticking for an hour, as a follower
        assert memory.restore(journal, follower, T0 + 30) == [] and follower.observed == 4.0


def test_a_journal_that_does_not_answer_the_read_costs_a_notice(tmp_path: Path) -> None:
    class Away:
        def get_meta(self, key: str) -> str | None:
            raise OSError("connection refused")

    learner = learner_for(CFG.hazard)
    [notice] = LearnerMemory().restore(Away(), learner, T0)  # type: ignore[arg-type]
    assert notice.level == "warning" and "did not answer: OSError" in notice.message
    assert math.isnan(learner.last)


def test_the_leader_writes_every_few_minutes_and_at_once_after_a_failure(tmp_path: Path) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        memory, learner = LearnerMemory(), learned(1.0, 2.0)
        memory.save(None, learner, T0)  # a follower: nothing
        memory.save(journal, learner_for(CFG.hazard), T0)  # never ticked: nothing to keep
        assert journal.get_meta(META_KEY) is None
        memory.save(journal, learner, T0)
        assert json.loads(journal.get_meta(META_KEY) or "")["observed"] == 1.0
        learner.expected = 3.0
        memory.save(journal, learner, T0 + SAVE_EVERY_S - 1)  # not due, nothing counted
        assert json.loads(journal.get_meta(META_KEY) or "")["expected"] == 2.0
        learner.observed = 2.0
        memory.save(journal, learner, T0 + 60)  # a failure counted: at once
        assert json.loads(journal.get_meta(META_KEY) or "")["observed"] == 2.0
        learner.expected = 4.0
        memory.save(journal, learner, T0 + 60 + SAVE_EVERY_S)
        assert json.loads(journal.get_meta(META_KEY) or "")["expected"] == 4.0


@pytest.mark.parametrize(
    ("stored", "why"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"observed": 1, "expected": 1}', "at is None"),
        ('{"observed": NaN, "expected": 1, "at": 1}', "observed is nan"),
        ('{"observed": true, "expected": 1, "at": 1}', "observed is True"),
        ('{"observed": -1, "expected": 1, "at": 1}', "negative sums"),
        (json.dumps({"observed": 1, "expected": 1, "at": T0 + 3600}), "ahead of the clock"),
        ('{"observed": 1, "expected": 1, "at": 1, "pad": "' + "x" * 2000 + '"}', "at most 1024"),
    ],
)
def test_what_the_journal_holds_is_checked_and_a_bad_value_is_named(
    tmp_path: Path, stored: str, why: str
) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        journal.set_meta(META_KEY, stored)
        cold = learner_for(CFG.hazard)
        [notice] = LearnerMemory().restore(journal, cold, T0)
        assert notice.level == "warning" and why in notice.message and META_KEY in notice.message
        assert math.isnan(cold.last) and cold.observed == 0.0  # learned afresh


def test_a_journal_that_refuses_the_write_costs_a_log_line_not_the_tick(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Refusing:
        def set_meta(self, key: str, value: str) -> None:
            raise OSError("disk full")

    memory = LearnerMemory()
    memory.save(Refusing(), learned(1.0, 1.0), T0)  # type: ignore[arg-type]
    memory.save(Refusing(), learned(1.0, 1.0), T0 + 30)  # type: ignore[arg-type]
    assert caplog.text.count("learned failure rate not written") == 1  # once, not every tick
    assert memory.saved_at == -math.inf  # tried again at the next tick
