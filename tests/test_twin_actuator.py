"""The twin as the daemon's actuator: each kind answers as a cluster would, and what is done becomes
the twin's verb; behind it, the safety layer's ledger decides what the twin's scheduler admits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seamguard.journal.records import DecisionRecord
from seamguard.model.actions import Action, ActionStatus
from seamguard.model.entities import EntityKind
from seamguard.model.states import JobClass
from seamguard.twin.actions import Verb
from seamguard.twin.actuator import TwinActuator
from seamguard.twin.policies.base import IntArray
from seamguard.twin.policies.seamguard import SeamguardPolicy
from seamguard.twin.scenario import load_scenario
from seamguard.twin.sim import Twin
from seamguard.twin.world import World, build_world
from tests.test_twin import small


class View:
    """A scheduler whose node 0 runs job 0 (or nothing), with ``spare`` nodes free to swap in."""

    def __init__(self, running: bool, spare: int, placement: dict[str, list[str]] | None = None) -> None:
        self.running, self.spare = running, spare
        self._placement = placement or {}

    def job_of(self, node: int) -> int:
        return 0 if self.running else -1

    def is_training(self, job: int) -> bool:
        return True

    def is_running(self, job: int) -> bool:
        return self.running

    def can_replace(self, job: int, count: int, admission: IntArray) -> bool:
        return count <= self.spare

    def placement(self) -> dict[str, list[str]]:
        return self._placement

    def placement_version(self) -> int:
        return 0

    def durable_age(self, job: int) -> float:
        return 0.0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(load_scenario(str(small(tmp_path_factory.mktemp("sc")))), 0)


def actuator(world: World, view: View) -> TwinActuator:
    jobs = [(j.name, j.job_class) for j in world.scenario.jobs]
    n = world.topology.count(EntityKind.NODE)
    return TwinActuator(world.topology, view, jobs, lambda _: np.zeros(n, dtype=np.int64))


def act(kind: str, target: str) -> Action:
    return Action(kind, target, "why", "quarantine", 0.0)


def test_a_drain_the_job_cannot_staff_is_refused_and_nothing_moves(world: World) -> None:
    """A drain does not stop a running job (Slurm's drain lets it run; it leaves at its next
    restart): with no spare the job keeps the node. Escalation drains a slow part on the worth of
    a restart, which assumes a spare."""
    a = actuator(world, View(running=True, spare=0))
    for kind in ("drain_node", "replace_rank"):
        result = a.apply(act(kind, "gpu/n0000/1"), 1.0)
        assert result.status is ActionStatus.REFUSED and "no admissible spare" in result.detail
    assert a.take() == []


@pytest.mark.parametrize(
    ("running", "spare", "kind", "verb"),
    [
        (True, 1, "drain_node", Verb.EVICT),  # the job restarts with a spare
        (False, 0, "drain_node", Verb.DRAIN),  # nothing runs there: no new work
        (True, 1, "replace_rank", Verb.SWAP),
        (True, 0, "cordon_node", Verb.DRAIN),
        (True, 1, "disable_link", Verb.EVICT),
    ],
)
def test_what_is_done_becomes_the_twin_s_verb_on_the_node(
    world: World, running: bool, spare: int, kind: str, verb: Verb
) -> None:
    a = actuator(world, View(running=running, spare=spare))
    assert a.apply(act(kind, "gpu/n0000/1"), 1.0).status is ActionStatus.DONE
    [done] = a.take()
    assert (done.verb, done.target) == (verb, "node/n0000")


def test_a_second_pull_from_one_job_needs_a_second_spare(world: World) -> None:
    a = actuator(world, View(running=True, spare=1))
    assert a.apply(act("drain_node", "node/n0000"), 1.0).status is ActionStatus.DONE
    assert a.apply(act("drain_node", "node/n0001"), 1.0).status is ActionStatus.REFUSED
    assert len(a.take()) == 1
    assert a.apply(act("drain_node", "node/n0001"), 2.0).status is ActionStatus.DONE  # a new tick


def test_an_island_with_nowhere_to_move_the_job_stops_it_and_says_so(world: World) -> None:
    """The containment stage valued the stop against tolerating: the twin carries it out (the
    job saves and waits for room) and names the job that waits."""
    inside = {"train": ["n0000", "n0001", "n0004"]}
    short = actuator(world, View(running=True, spare=2, placement=inside))
    result = short.apply(act("island_domain", "cdu/cdu0"), 1.0)
    assert result.status is ActionStatus.DONE and result.detail.endswith("train save and wait for room")
    assert [(v.verb, v.target) for v in short.take()] == [(Verb.ISLAND_STOP, "cdu/cdu0")]
    done = actuator(world, View(running=True, spare=3, placement=inside))
    result = done.apply(act("island_domain", "cdu/cdu0"), 1.0)
    assert (result.status, result.detail) == (ActionStatus.DONE, "island: its jobs move out")
    assert [(v.verb, v.target) for v in done.take()] == [(Verb.ISLAND_STOP, "cdu/cdu0")]


def test_a_leaf_isolated_with_nowhere_to_move_the_job_stops_it_as_an_island_does(world: World) -> None:
    """A leaf's isolation is valued like an island (the firewall, ``control.containment``): the
    stop it chose is carried out, and the job that waits for room is named."""
    inside = {"train": ["n0000", "n0001", "n0004"]}
    short = actuator(world, View(running=True, spare=2, placement=inside))
    result = short.apply(act("isolate_switch", "switch/leaf00"), 1.0)
    assert result.status is ActionStatus.DONE and result.detail.endswith("train save and wait for room")
    assert [(v.verb, v.target) for v in short.take()] == [(Verb.ISLAND_STOP, "switch/leaf00")]


@pytest.mark.parametrize(
    ("kind", "target", "status"),
    [
        ("restrict_admission", "gpu/n0000/1", ActionStatus.DONE),  # the scheduler reads the engine's states
        ("checkpoint_plan", "job/train", ActionStatus.DONE),
        ("replace_rank", "gpu/n0000/1", ActionStatus.SKIPPED),  # no job to swap it out of
        ("reset_gpu", "node/n0000", ActionStatus.SKIPPED),
        ("reroute", "switch/leaf00", ActionStatus.SKIPPED),  # the twin reroutes node uplinks only
        ("island_domain", "node/n0000", ActionStatus.SKIPPED),
    ],
)
def test_kinds_with_no_verb_answer_without_acting(
    world: World, kind: str, target: str, status: ActionStatus
) -> None:
    a = actuator(world, View(running=False, spare=0))
    assert a.apply(act(kind, target), 1.0).status is status
    assert a.take() == []


def test_a_kind_outside_the_vocabulary_is_a_programming_error(world: World) -> None:
    with pytest.raises(ValueError, match="quarantine_node"):
        actuator(world, View(running=False, spare=0)).apply(act("quarantine_node", "node/n0000"), 1.0)


def test_the_scheduler_admits_nothing_on_a_node_the_safety_layer_holds(tmp_path: Path) -> None:
    """A drained Slurm node stays drained until resumed: the twin's repair crew does not return it
    to work while seamguard's ledger holds it, and a refused drain holds nothing."""
    twin = Twin(build_world(load_scenario(str(small(tmp_path))), 0), "seamguard")
    policy = twin.policy
    assert isinstance(policy, SeamguardPolicy)
    now = twin.world.start + 60.0
    free = DecisionRecord(now, "node/n0015", "drain_node", "act", "hot", "quarantine", cause="gpu/n0015/0")
    busy = DecisionRecord(now, "node/n0000", "drain_node", "act", "hot", "quarantine", cause="gpu/n0000/0")
    verbs = policy._actuate(now, [free], [], View(running=False, spare=0))
    assert [(v.verb, v.target) for v in verbs] == [(Verb.DRAIN, "node/n0015")]
    assert policy.safety.held_nodes().tolist() == [15]
    assert policy.admission(JobClass.ASYNC_BATCH_INFERENCE)[15] == 2
    stuck = View(running=True, spare=0, placement={"train": ["n0000", "n0001"]})  # nowhere to go
    refused = policy._actuate(now + 30, [busy], [], stuck)
    assert refused == [] and policy.safety.held_nodes().tolist() == [15]
    assert policy.outcomes["drain_node refused"] == 1 and policy.outcomes["drain_node done"] == 1
