"""The twin's false-quarantine test (``Twin.affected``) around a facility fault's end: a drain
decided while the fault's condition lasted (a rack's power until the fault ends, a CDU's warm water
until three rack time constants after) or on the tick of telemetry that showed it is not false; one
a tick after that is."""

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
                "duration_h": 0.4},
               {"kind": "psu_loss", "target": "rack/r001", "onset_h": 1.0, "ramp_h": 0.1, "severity": 0.5,
                "duration_h": 0.4}],
}  # fmt: skip


def test_a_facility_fault_counts_while_its_condition_lasts_and_one_tick_after(tmp_path: Path) -> None:
    path = tmp_path / "cdu.yaml"
    path.write_text(yaml.safe_dump(SCENARIO), encoding="utf-8")
    twin = Twin(build_world(load_scenario(str(path)), 0), "binary")
    flow, psu = sorted(twin.faults, key=lambda f: f.spec.target is EntityKind.RACK)
    tick = twin.world.tick_s
    tau = twin.plant.physics.cooling.rack_time_constant_s
    topo = twin.topology
    names = list(topo.names[EntityKind.NODE])
    under = [n for n in range(len(names)) if int(topo.rack_cdu[topo.node_rack[n]]) == 0]
    other = [n for n in range(len(names)) if n not in under]
    assert under and other and all(int(topo.node_rack[n]) == 1 for n in other)
    for n in under:
        assert not twin.affected(n, flow.onset - 1.0)
        assert twin.affected(n, flow.onset + 60.0)
        assert twin.affected(n, flow.end + tick + 2.0 * tau)  # the rack's water is still warm
        assert not twin.affected(n, flow.end + tick + 3.0 * tau + 1.0)
    for n in other:  # rack r001's power comes back at its fault's end
        assert twin.affected(n, psu.onset + 60.0)
        assert twin.affected(n, psu.end + 0.5 * tick)  # the decision read the tick the fault was on in
        assert not twin.affected(n, psu.end + tick + 1.0)
