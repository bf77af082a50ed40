"""A job that starts after the daemon, on a real Slurm cluster on loopback (tests/slurm_cluster.py):
tracked from the next poll, dropped once it ends, with no restart."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from seamguard.daemon import Daemon
from seamguard.model.inventory import Inventory, NodeRecord
from seamguard.model.topology import build_topology
from seamguard.site_config import daemon_config_from_mapping
from seamguard.telemetry.sources.slurm import SlurmSource
from seamguard.telemetry.sources.slurm_commands import SlurmConfig
from tests.slurm_cluster import SlurmCluster, slurm_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as c:
        yield c


def test_a_job_slurm_starts_after_the_daemon_is_tracked_the_next_poll(cluster: SlurmCluster) -> None:
    config = SlurmConfig(scontrol=cluster.bins["scontrol"], squeue=cluster.bins["squeue"],
                         sinfo=cluster.bins["sinfo"], slurm_conf=str(cluster.conf))  # fmt: skip
    inventory = Inventory(tuple(NodeRecord(n, "r0", "c0", "l0", 8) for n in cluster.nodes))
    topo = build_topology(inventory)
    daemon = Daemon(daemon_config_from_mapping({"sources": {"push": {}}}), topo, [SlurmSource(topo, config)])
    daemon.step(1.0e9)
    assert daemon.topology.jobs == ()
    job = cluster.submit(2, "sg-late")
    try:
        cluster.wait_for(f"job {job} to run", lambda: cluster.job_state(job) == "RUNNING")
        daemon.step(1.0e9 + 1)  # the poll that sees it
        (record,) = daemon.topology.jobs
        nodes = cluster.run("squeue", "-h", "-j", job, "-o", "%N").stdout.strip()
        expanded = cluster.run("scontrol", "show", "hostnames", nodes).stdout.split()
        assert record.job == job and list(record.nodes) == expanded
        assert daemon.status().jobs == 1
    finally:
        cluster.run("scancel", job)
    cluster.wait_for(f"job {job} to end", lambda: cluster.job_state(job) == "")
    daemon.step(1.0e9 + 2)
    assert daemon.topology.jobs == ()
