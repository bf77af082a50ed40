"""One decision path: the twin's seamguard policy and the daemon, fed the same telemetry, the same
budgets and the same answers from the cluster, carry out the same actions in the same order.

The twin is run first; every batch of telemetry it hands the engine is recorded, and so is every
answer its actuator gave. A real ``Daemon`` is then stepped over the recorded batches with an
actuator that answers what the twin's did. Both journal every result of the post-engine stage
(the safety layer's refusals, holds and cancellations included); the two lists must be equal.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

import seamguard.twin.policies.seamguard as twin_seamguard
from seamguard.actuators.dispatch import Route
from seamguard.actuators.sections import Mode
from seamguard.daemon import Daemon
from seamguard.journal.records import ActionResultRecord
from seamguard.model.actions import Action, ActionResult, ActionStatus
from seamguard.model.inventory import JobRecord
from seamguard.site_config import DaemonConfig, SiteConfig
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.base import Collected
from seamguard.twin.actuator import NAME
from seamguard.twin.policies.seamguard import SeamguardPolicy
from seamguard.twin.scenario import load_scenario
from seamguard.twin.sim import Twin
from seamguard.twin.world import build_world

# Eight nodes, one synchronous job on six (two spares): two hot GPUs on two nodes within the
# hour (the first node drained, the job moves to a spare; the second drain, valued while the job
# restarts and a spare is left, refused by the hourly budget), a CDU heating under it, two gray
# links (valued and tolerated), a slow backend. The job's move reaches the daemon as its
# scheduler would tell it (``ReplaySource.placements``). The cluster's own refusal ("no admissible
# spare") is tested on the twin's actuator (tests/test_twin_actuator.py); the replay answers
# whatever the twin's actuator answered.
SCENARIO: dict[str, Any] = {
    "name": "one-path",
    "description": "the daemon's decision path, in the twin and in the daemon",
    "duration_h": 2,
    "cluster": {"cdus": 1, "racks_per_cdu": 2, "nodes_per_rack": 4, "gpus_per_node": 4, "storage": ["ckpt0", "ckpt1"]},
    "jobs": [{"name": "train", "class": "sync_training", "nodes": 6, "checkpoint_gb": 200, "fallback_storage": "ckpt1"}],
    "faults": [
        {"kind": "supply_temp_rise", "target": "cdu/cdu0", "onset_h": 0.3, "ramp_h": 0.5, "severity": 1.0, "duration_h": 1.5},
        {"kind": "hw_thermal", "target": "gpu/n0000/1", "onset_h": 0.2, "ramp_h": 0.2, "severity": 1.0},
        {"kind": "hw_thermal", "target": "gpu/n0001/2", "onset_h": 0.25, "ramp_h": 0.2, "severity": 1.0},
        {"kind": "link_gray", "target": "link/n0005", "onset_h": 0.4, "ramp_h": 0.3, "severity": 1.0},
        {"kind": "link_gray", "target": "link/n0006", "onset_h": 0.45, "ramp_h": 0.3, "severity": 1.0},
        {"kind": "storage_tail", "target": "storage/ckpt0", "onset_h": 0.5, "ramp_h": 0.2, "severity": 1.0, "duration_h": 1.0},
    ],
    "policies": {"seamguard": {"config": {"safety": {"budgets": {"per_hour": 1}}}}},
}  # fmt: skip


@dataclass
class Recorded:
    batches: list[tuple[float, TelemetryBatch]] = field(default_factory=list)
    results: list[ActionResultRecord] = field(default_factory=list)
    placed: dict[float, tuple[JobRecord, ...]] = field(default_factory=dict)


@dataclass
class ReplaySource:
    """The twin's telemetry, tick by tick, as the daemon's one source, and where its scheduler had
    each job at that tick (what Slurm's placements would tell the daemon)."""

    ticks: dict[float, TelemetryBatch]
    placed: dict[float, tuple[JobRecord, ...]]
    name: str = "twin-replay"
    now: float = float("nan")

    def collect(self, now: float) -> Collected:
        self.now = now
        return Collected(self.ticks[now])

    def placements(self) -> tuple[JobRecord, ...] | None:
        return self.placed.get(self.now)


@dataclass
class ReplayActuator:
    """Answers each action as the twin's actuator answered it (same kind, target and decision time)."""

    answers: dict[tuple[str, str, float], tuple[str, str]]
    name: str = NAME
    kinds: frozenset[str] = frozenset({"*"})

    def apply(self, action: Action, now: float) -> ActionResult:
        status, detail = self.answers[(action.kind, action.target, action.decided_at)]
        return ActionResult(action, self.name, ActionStatus(status), detail, now)


@pytest.fixture(scope="module")
def twin_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Twin, Recorded]]:
    path: Path = tmp_path_factory.mktemp("sc") / "one-path.yaml"
    path.write_text(yaml.safe_dump(SCENARIO), encoding="utf-8")
    twin = Twin(build_world(load_scenario(str(path)), 0), "seamguard")
    policy = twin.policy
    assert isinstance(policy, SeamguardPolicy) and not policy.sharded
    rec = Recorded()
    observe, actuate = policy.observe, twin_seamguard.actuate

    def recording_observe(now: float, batches: Any, view: Any) -> Any:
        [(_, batch)] = batches  # full observation: one cell, the whole fleet
        rec.batches.append((now, batch))
        jobs = {j.job: j for j in twin.world.topology.jobs}
        rec.placed[now] = tuple(
            replace(jobs[name], nodes=tuple(nodes)) for name, nodes in view.placement().items()
        )
        return observe(now, batches, view)

    def recording_actuate(*args: Any, **kwargs: Any) -> Any:
        results, notices = actuate(*args, **kwargs)
        rec.results.extend(results)
        return results, notices

    policy.observe = recording_observe  # type: ignore[method-assign]
    twin_seamguard.actuate = recording_actuate
    try:
        twin.run()
    finally:
        twin_seamguard.actuate = actuate
    yield twin, rec


def test_the_twin_exercises_the_safety_layer_and_moves_a_job(
    twin_run: tuple[Twin, Recorded],
) -> None:
    _, rec = twin_run
    seen = {(r.actuator, r.status) for r in rec.results}
    assert ("safety", "refused") in seen  # a budget said no
    assert ("drain_node", NAME, "done") in {
        (r.kind, r.actuator, r.status) for r in rec.results
    }  # a job moved
    assert len({tuple(sorted(n for j in p for n in j.nodes)) for p in rec.placed.values()}) > 1


def test_the_engine_ticks_knowing_the_nodes_the_safety_layer_holds(tmp_path: Path) -> None:
    """Containment counts no spare on a node drained and not yet released, in the twin as in the
    daemon (``Controller.held_nodes``, set before each tick). With one spare node, the first hot
    GPU's node is drained and held. (The replay above keeps the job where it is: the daemon learns
    a move from its scheduler, which a recorded batch does not carry.)"""
    path = tmp_path / "one-spare.yaml"
    path.write_text(
        yaml.safe_dump({**SCENARIO, "jobs": [{**SCENARIO["jobs"][0], "nodes": 7}]}), encoding="utf-8"
    )
    twin = Twin(build_world(load_scenario(str(path)), 0), "seamguard")
    policy = twin.policy
    assert isinstance(policy, SeamguardPolicy)
    observe, held = policy.observe, []

    def watching(now: float, batches: Any, view: Any) -> Any:
        safety = policy.safety.held_nodes().tolist()
        out = observe(now, batches, view)
        held.append((safety, policy.cells[0].controller.held_nodes.tolist()))
        return out

    policy.observe = watching  # type: ignore[method-assign]
    twin.run()
    assert any(safety for safety, _ in held), "no node was ever held: the scenario no longer drains"
    assert all(safety == engine for safety, engine in held)


def test_the_daemon_carries_out_the_same_actions_in_the_same_order(twin_run: tuple[Twin, Recorded]) -> None:
    twin, rec = twin_run
    policy = twin.policy
    assert isinstance(policy, SeamguardPolicy)
    answers: dict[tuple[str, str, float], tuple[str, str]] = {}
    for r in rec.results:  # the actuator's own answers (a guard's repeat of a handled key is attempt 0)
        if r.actuator == NAME and r.attempt > 0:
            answers.setdefault((r.kind, r.target, r.decided_at), (r.status, r.detail))
    daemon = Daemon(
        DaemonConfig(policy.config, SiteConfig(safety=policy.safety_config)),
        twin.world.topology,
        [ReplaySource(dict(rec.batches), rec.placed)],
        routes=[Route(ReplayActuator(answers), Mode.ENFORCE)],
    )
    got: list[ActionResultRecord] = []
    for now, _ in rec.batches:
        got.extend(daemon.step(now).actions)
    first = next((i for i, (a, b) in enumerate(zip(got, rec.results, strict=False)) if a != b), None)
    assert first is None, f"first difference at {first}: daemon {got[first]} twin {rec.results[first]}"
    assert got == rec.results
    assert len(got) > 20
