"""What the daemon's world is made of, and when it changes: the inventory file, the jobs file and
the placements the scheduler sources report (``PlacementSource``).

Each tick the daemon asks ``LiveWorld.update`` for the world the files and sources describe now.
Files are re-read when their size or modification time changed and then held still for one tick
(a file caught half-written, as an editor or ``cat >`` leaves it for a moment, must not drop the
nodes it has not written yet and their quarantines), or at once on request (SIGHUP); a file
that cannot be read or is invalid keeps the current world, with a notice naming the file and the
problem for as long as it stays bad. A job placed on nodes the inventory lacks runs on the nodes
it has, and the rest are named in a notice; a job with none is left out.

The answer is a new topology and the ``WorldChange`` from the current one, or nothing when the
world is the same. A change of jobs only keeps every other entity's index (``model.world.with_jobs``);
a change of the inventory rebuilds the topology (rare: nodes join or leave by hand).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from seamguard.errors import InputError
from seamguard.model.inventory import Inventory, JobRecord, read_inventory, read_jobs
from seamguard.model.serving import serving_path_for
from seamguard.model.topology import Topology, build_topology
from seamguard.model.world import WorldChange, with_jobs, world_change
from seamguard.telemetry.sources.base import SourceNotice

SOURCE = "world"  # the source name on the notices the world's files and placements give
SHOWN = 5  # a notice names this many, then counts the rest


@dataclass(frozen=True)
class FileStamp:
    """What says a file may have changed: its size and modification time (ns)."""

    size: int
    mtime_ns: int


def stamp(path: Path) -> FileStamp | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return FileStamp(st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class WorldUpdate:
    change: WorldChange | None  # None: the world is as it was
    placement: dict[str, tuple[str, ...]] | None  # the scheduler's placement now (None: none reported)
    notices: tuple[SourceNotice, ...]  # problems now (bad files, unknown nodes): given every tick they last


class LiveWorld:
    """The inventory and jobs files the daemon was started with, watched; and the job table
    the placement sources report, combined with the file's."""

    def __init__(self, inventory_path: Path | None, jobs_path: Path | None, inventory: Inventory,
                 file_jobs: Sequence[JobRecord] = (), scheduled: Sequence[JobRecord] = ()) -> None:  # fmt: skip
        """``scheduled``: the jobs the scheduler ran at start (kept until a placement source reports)."""
        self.inventory_path = inventory_path
        self.jobs_path = jobs_path
        self.inventory = inventory
        self.file_jobs = tuple(file_jobs)
        # the serving file beside the inventory (``model.serving``) is read with it, so watched with it
        self._serving = serving_path_for(inventory_path) if inventory_path is not None else None
        self._stamps = {p: stamp(p) for p in (inventory_path, self._serving, jobs_path) if p is not None}
        self._moving: dict[Path, FileStamp | None] = {}  # a new stamp seen once, not yet held still
        self._bad: dict[Path, str] = {}  # file -> why it was not taken (until it reads well)
        self._reload = False
        self._pending: Inventory | None = None
        self._scheduled = {j.job: j for j in scheduled}
        self._by_source: dict[str, tuple[JobRecord, ...]] = {}  # each source's last placements
        self._known: tuple[Inventory, frozenset[str]] | None = None  # the inventory's node names
        # What a new inventory must pass before it is taken (raises InputError), beyond being read:
        # the daemon's config names nodes (budget partitions) that must still exist.
        self.check_inventory: Callable[[Inventory], None] | None = None

    def request_reload(self) -> None:
        """Re-read both files at the next tick whatever their stamps say (SIGHUP). Only sets a
        flag: safe from a signal handler, and never applied mid-tick."""
        self._reload = True

    def update(
        self, current: Topology, placements: Mapping[str, tuple[JobRecord, ...] | None]
    ) -> WorldUpdate:
        """The world the files and ``placements`` (per placement source: its last poll's jobs,
        None when it could not say) describe, as a change from ``current``. A source that cannot
        say keeps the jobs it last reported: a failed squeue ends no job."""
        inventory_changed = self._read_files()
        notices = [
            SourceNotice(SOURCE, str(p), f"kept the current world: {why}") for p, why in self._bad.items()
        ]
        known = self._known_nodes()
        self._by_source.update({name: recs for name, recs in placements.items() if recs is not None})
        placed = _combine(list(self._by_source.values())) if self._by_source else None
        scheduled = placed if placed is not None else self._scheduled
        jobs, unplaced = _on_known_nodes({**{j.job: j for j in self.file_jobs}, **scheduled}, known)
        if unplaced:
            shown = ", ".join(
                f"{job} ({', '.join(nodes[:3])})" for job, nodes in sorted(unplaced.items())[:SHOWN]
            )
            more = f" and {len(unplaced) - SHOWN} more" if len(unplaced) > SHOWN else ""
            notices.append(
                SourceNotice(SOURCE, "jobs", f"job(s) on nodes not in the inventory: {shown}{more}")
            )
        ordered = _stable_order(current.jobs, jobs)
        placement = None if placed is None else {j.job: j.nodes for j in ordered if j.job in placed}
        change: WorldChange | None = None
        if inventory_changed:
            new = build_topology(self.inventory, ordered)
            change = world_change(current, new)
        elif ordered != current.jobs:
            got = with_jobs(current, ordered)
            change = (
                got[1] if got is not None else world_change(current, build_topology(self.inventory, ordered))
            )
        return WorldUpdate(change, placement, tuple(notices))

    def _known_nodes(self) -> frozenset[str]:
        """The inventory's node names, built again only when the inventory changed (not every tick)."""
        if self._known is None or self._known[0] is not self.inventory:
            self._known = (self.inventory, frozenset(r.node for r in self.inventory.nodes))
        return self._known[1]

    def _read_files(self) -> bool:
        """Re-read what changed (or everything, on request); True when a new inventory was taken."""
        forced, self._reload = self._reload, False
        now = {p: stamp(p) for p in self._stamps}
        due = [p for p in self._stamps if forced or (now[p] != self._stamps[p] and self._settled(p, now[p]))]
        if not due:
            return False
        for p in due:
            self._stamps[p] = now[p]
            self._moving.pop(p, None)
        inventory = self._pending or self.inventory  # one read well while the jobs file was bad
        if self.inventory_path is not None and (self.inventory_path in due or self._serving in due):
            try:
                inventory = read_inventory(self.inventory_path)
                if self.check_inventory is not None:
                    self.check_inventory(inventory)
            except (InputError, OSError, ValueError) as exc:
                self._bad[self.inventory_path] = _why(exc)
                return False
            self._bad.pop(self.inventory_path, None)
        if self.jobs_path is not None and (self.jobs_path in due or inventory is not self.inventory):
            try:
                jobs = read_jobs(self.jobs_path, inventory)
            except (InputError, OSError, ValueError) as exc:
                self._bad[self.jobs_path] = _why(exc)
                self._pending = inventory
                return False  # neither file taken: a new inventory the jobs file contradicts waits
            self._bad.pop(self.jobs_path, None)
            self.file_jobs = jobs
        changed = inventory != self.inventory
        self.inventory, self._pending = inventory, None
        return changed

    def _settled(self, path: Path, now: FileStamp | None) -> bool:
        """A changed file is taken once its stamp is the same at two checks a tick apart: a writer
        that is still writing moves it, and the file waits."""
        if path in self._moving and self._moving[path] == now:
            return True
        self._moving[path] = now
        return False


def _why(exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    return str(exc) or type(exc).__name__


def _combine(placements: Sequence[Sequence[JobRecord]]) -> dict[str, JobRecord]:
    """Every reporting source's jobs; a job two sources report runs on the nodes of both."""
    out: dict[str, JobRecord] = {}
    for records in placements:
        for r in records:
            seen = out.get(r.job)
            out[r.job] = (
                r if seen is None else replace(seen, nodes=tuple(dict.fromkeys(seen.nodes + r.nodes)))
            )
    return out


def _on_known_nodes(
    jobs: Mapping[str, JobRecord], known: frozenset[str]
) -> tuple[dict[str, JobRecord], dict[str, tuple[str, ...]]]:
    """Jobs restricted to the inventory's nodes (those left with none dropped), and per job the
    nodes it named that the inventory lacks."""
    kept: dict[str, JobRecord] = {}
    unknown: dict[str, tuple[str, ...]] = {}
    for name, r in jobs.items():
        missing = tuple(n for n in r.nodes if n not in known)
        if missing:
            unknown[name] = missing
            r = replace(r, nodes=tuple(n for n in r.nodes if n in known))
        if r.nodes:
            kept[name] = r
    return kept, unknown


def _stable_order(current: Sequence[JobRecord], jobs: Mapping[str, JobRecord]) -> tuple[JobRecord, ...]:
    """Jobs that stay first, in the order they had (their indices move the least), then new ones."""
    staying = [jobs[j.job] for j in current if j.job in jobs]
    names = {j.job for j in current}
    return tuple(staying + [r for name, r in jobs.items() if name not in names])
