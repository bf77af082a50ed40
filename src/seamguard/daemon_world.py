"""The world ``seamguard run`` starts on: the inventory file, and the jobs of the jobs file or, with
Slurm as a source and no jobs file, those Slurm runs now. Kept apart from ``daemon.py`` (the loop)
because it runs once, before the daemon exists; the files are then watched (``live_world``)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from seamguard.errors import InputError
from seamguard.live_world import LiveWorld
from seamguard.model.inventory import JobRecord, read_inventory, read_jobs
from seamguard.model.topology import Topology, build_topology
from seamguard.site_config import DaemonConfig
from seamguard.telemetry.sources.slurm import job_placements, read_snapshot

log = logging.getLogger(__name__)


def daemon_topology(config: DaemonConfig, inventory: Path, jobs: Path | None) -> Topology:
    """The inventory, with the jobs of ``jobs`` or, when Slurm is a source and no jobs file is
    given, the jobs Slurm is running now."""
    return daemon_world(config, inventory, jobs)[0]


def daemon_world(config: DaemonConfig, inventory: Path, jobs: Path | None) -> tuple[Topology, LiveWorld]:
    """The topology to start on, and the files it came from, watched for changes (``live_world``)."""
    if not inventory.exists():
        raise InputError(str(inventory), "inventory not found")
    inv = read_inventory(inventory)
    records: tuple[JobRecord, ...] = ()
    file_jobs: tuple[JobRecord, ...] = ()
    if jobs is not None:
        if not jobs.exists():
            raise InputError(str(jobs), "jobs file not found")
        records = file_jobs = read_jobs(jobs, inv)
    elif config.site.sources.slurm is not None:
        snap, notices = read_snapshot(config.site.sources.slurm, time.time())
        for n in notices:
            log.warning("%s", n)
        nodes = {r.node for r in inv.nodes}
        records = tuple(r for r in job_placements(snap, config.site.sources.slurm) if set(r.nodes) <= nodes)
    scheduled = () if jobs is not None else records  # the scheduler's jobs until it first reports
    return build_topology(inv, records), LiveWorld(inventory, jobs, inv, file_jobs, scheduled)
