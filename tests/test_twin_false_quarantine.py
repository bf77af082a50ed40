"""The twin's false-quarantine test (``Twin.affected``) around a facility fault's end: a drain
decided on the tick of telemetry in which the fault was still on is not false; one a tick later is."""

from __future__ import annotations

from pathlib import Path

import yaml

from seamguard.model.entities import EntityKind
from seamguard.twin.scenario import load_scenario
from seamguard.twin.sim import Twin
from seamguard.twin.world import build_world

SCENARIO = {
    "name": "cdu-flow-judged",
    "description": "a CDU loses its flow for 24 minutes; the other CDU is fine",
    "duration_h": 3,
    "cluster": {"cdus": 2, "racks_per_cdu": 1, "nodes_per_rack": 4, "gpus_per_node": 8, "storage": ["ckpt0"]},
    "jobs": [{"name": "train", "class": "sync_training", "nodes": 8, "checkpoint_gb": 400}],
    "faults": [{"kind": "cdu_flow_loss", "target": "cdu/cdu0", "onset_h": 1.0, "ramp_h": 0.1, "severity": 0.5,
                "duration_h": 0.4}],
}  # fmt: skip


def test_a_facility_fault_counts_until_one_tick_after_it_ends(tmp_path: Path) -> None:
    path = tmp_path / "cdu.yaml"
    path.write_text(yaml.safe_dump(SCENARIO), encoding="utf-8")
    twin = Twin(build_world(load_scenario(str(path)), 0), "binary")
    (fault,) = twin.faults
    tick = twin.world.tick_s
    names = list(twin.topology.names[EntityKind.NODE])
    under = [n for n in range(len(names)) if int(twin.topology.rack_cdu[twin.topology.node_rack[n]]) == 0]
    other = [n for n in range(len(names)) if n not in under]
    assert under and other
    for n in under:
        assert not twin.affected(n, fault.onset - 1.0)
        assert twin.affected(n, fault.onset + 60.0)
        assert twin.affected(n, fault.end + 0.5 * tick)  # the decision read the tick the fault was on in
        assert not twin.affected(n, fault.end + tick + 1.0)
    for n in other:
        assert not twin.affected(n, fault.onset + 60.0)
        assert not twin.affected(n, fault.end + 0.5 * tick)
