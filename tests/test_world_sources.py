"""Sources that resolve names to entity indices follow a world change (``WorldFollower.follow``):
after it, their samples carry the new world's indices, the joined entities' included."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np

from seamguard.daemon import Daemon
from seamguard.live_world import LiveWorld
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import Inventory
from seamguard.model.topology import Topology, build_topology
from seamguard.model.world import inventory_of, world_change
from seamguard.site_config import daemon_config_from_mapping
from seamguard.telemetry.sources.base import WorldFollower
from seamguard.telemetry.sources.dcgm_config import DcgmSourceConfig
from seamguard.telemetry.sources.kubernetes import KubernetesSource
from seamguard.telemetry.sources.kubernetes_config import KubernetesSourceConfig
from seamguard.telemetry.sources.modbus import ModbusSource
from seamguard.telemetry.sources.push import PushSource
from seamguard.telemetry.sources.scrape import DcgmScrapeSource
from seamguard.twin.exporter import DcgmRenderer, start_exporter
from seamguard.twin.modbus_server import TwinModbusServer, retarget, twin_register_map
from seamguard.twin.scenario import scenario_from_mapping
from seamguard.twin.world import build_world
from tests.conftest import small_inventory
from tests.kube_api import KubeState, kube_api, write_kubeconfig
from tests.test_source_kubernetes import NOW, pages
from tests.test_source_modbus import HOST, SCENARIO, values_of
from tests.test_twin_exporter import latest, rendered_signals, twin_batches
from tests.test_world_daemon import write_inventory


def test_the_dcgm_source_reads_a_node_that_joined_in_the_new_indices() -> None:
    topo, batches = twin_batches()
    inv = inventory_of(topo)
    old = build_topology(Inventory(inv.nodes[1:]))  # the first node joins later: every index moves
    renderer = DcgmRenderer(topo)
    servers = [
        start_exporter(renderer.render(batches[-1], nodes=[n])) for n in range(topo.count(EntityKind.NODE))
    ]
    try:
        source = DcgmScrapeSource(DcgmSourceConfig(endpoints=tuple(s.url for s in servers)), old)
        assert isinstance(source, WorldFollower)
        before = source.collect(now=5000.0)
        assert before.unknown or before.notices  # node 0's exporter names a node the old world lacks
        source.follow(world_change(old, topo))
        got = source.collect(now=5030.0)
        sigs = rendered_signals()
        assert latest(got.batch, sigs) == latest(batches[-1], sigs)
    finally:
        for s in servers:
            s.stop()


def test_rows_pushed_before_a_change_reach_the_engine_in_the_new_indices() -> None:
    old = build_topology(small_inventory())
    new = build_topology(Inventory(small_inventory().nodes[2:]))  # n00 and n01 leave
    push = PushSource(old, clock=lambda: 2.0)
    body = {"entity": ["gpu/n00/0", "gpu/n05/1"], "signal": ["gpu.temp_c"] * 2, "timestamp": [1.0, 1.0],
            "value": [50.0, 60.0]}  # fmt: skip
    assert push.ingest(httpx.Request("POST", "/", json=body).read()).accepted == 2
    push.follow(world_change(old, new))
    got = push.collect(2.0).batch
    assert [new.ids[e] for e in got.entity.tolist()] == ["gpu/n05/1"] and got.value.tolist() == [60.0]
    body["entity"] = ["gpu/n07/3", "gpu/n00/0"]
    push.ingest(httpx.Request("POST", "/", json=body).read())
    got = push.collect(3.0)
    assert [new.ids[e] for e in got.batch.entity.tolist()] == ["gpu/n07/3"] and got.unknown == {
        "gpu/n00/0": 1
    }
    assert np.all(got.batch.value == 50.0)


def test_the_modbus_source_reads_its_points_in_the_new_indices() -> None:
    """A rack and a CDU before the fleet's in the old world: every CDU and rack index moves."""
    topo: Topology = build_world(scenario_from_mapping(SCENARIO), 0).topology
    inv = inventory_of(topo)
    extra = replace(inv.nodes[0], node="x0", rack="rx", cdu="cx")
    old = build_topology(Inventory((extra, *inv.nodes)))
    served = twin_register_map(topo)
    with (
        TwinModbusServer(served, HOST, 0) as server,
        ModbusSource(retarget(served, HOST, server.port), old) as src,
    ):
        server.set_values({("cdu/cdu0", "cdu.flow_lpm"): 420.0})
        assert values_of(src.collect(1.0), old)[("cdu/cdu0", "cdu.flow_lpm")] == 420.0
        src.follow(world_change(old, topo))
        assert values_of(src.collect(2.0), topo)[("cdu/cdu0", "cdu.flow_lpm")] == 420.0


def test_kubernetes_placements_drive_the_daemon_and_a_joined_node_counts(tmp_path: Path) -> None:
    """The daemon treats the Kubernetes source as it treats Slurm; once the node a pod runs on
    joins the inventory, that pod's job is placed there too."""
    inv_path = write_inventory(tmp_path / "inventory.csv", small_inventory().nodes)
    topo = build_topology(small_inventory(), ())
    with kube_api(KubeState(pages())) as url:
        cfg = KubernetesSourceConfig(kubeconfig=str(write_kubeconfig(tmp_path / "kubeconfig", url)))
        k8s = KubernetesSource(topo, cfg)
        world = LiveWorld(inv_path, None, small_inventory())
        daemon = Daemon(daemon_config_from_mapping({"sources": {"push": {}}}), topo, [k8s], world=world)
        daemon.step(NOW)
        placed = {j.job: j.nodes for j in daemon.topology.jobs}
        assert placed["llm.llama-pretrain"] == ("n02", "n03") and len(placed) == 3
        assert "gpu-node-x9" not in {n for nodes in placed.values() for n in nodes}
        joined = replace(small_inventory().nodes[0], node="gpu-node-x9")
        write_inventory(inv_path, (*small_inventory().nodes, joined))
        daemon.step(NOW + 1)  # seen moving: a changed file is taken once it held still a tick
        daemon.step(NOW + 2)  # the node joins; the source follows and lists again
        daemon.step(NOW + 3)  # the pod on it is placed
        assert "gpu-node-x9" in {n for j in daemon.topology.jobs for n in j.nodes}
