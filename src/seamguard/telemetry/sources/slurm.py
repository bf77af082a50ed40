"""Slurm as a source: node states (base state plus flags, the drain reason and who set it),
reservations and job placements, read with Slurm's own clients.

Why the text interfaces: ``scontrol show node --oneliner`` is stable across releases, while
``scontrol --json`` does not exist in 22.05 (Debian 12/13) and the ``--json`` schemas of
``squeue``/``sinfo`` change with every OpenAPI version. ``squeue`` is read with an explicit
``--format`` whose free-text field (the job name) comes last, so a ``|`` in a name cannot shift
the columns. Every command runs with a timeout; a failing one becomes a ``SourceNotice`` naming
the command and its stderr, never an exception out of ``collect``.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import hostlist  # type: ignore[import-untyped]
import numpy as np
from pydantic import Field

from seamguard.model.catalog import SignalCatalog, signal_catalog
from seamguard.model.inventory import JobRecord
from seamguard.model.states import JobClass
from seamguard.model.topology import Topology
from seamguard.strict_model import StrictModel
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.base import Collected, SourceNotice

SOURCE = "slurm"
REASON_PREFIX = "seamguard:"  # every reason seamguard sets starts with this; only those it may undo


class SlurmConfig(StrictModel):
    """Where Slurm's clients are and how seamguard talks to them (source and actuator share it)."""

    scontrol: str = "scontrol"  # path or name on PATH
    squeue: str = "squeue"
    slurm_conf: str | None = None  # SLURM_CONF for the clients; None inherits the environment's
    timeout_s: float = Field(default=10.0, gt=0)
    # slurmdbd stores a node event's reason as TINYTEXT (255 bytes); longer reasons are cut there
    # and are unreadable in sinfo anyway. Reasons are cut to this many UTF-8 bytes, ending in "...".
    reason_max_bytes: int = Field(default=250, ge=40, le=1024)
    feature_prefix: str = Field(default="sg_", min_length=1)  # the node features seamguard owns
    default_job_class: JobClass = JobClass.SYNC_TRAINING
    partition_classes: dict[str, JobClass] = Field(default_factory=dict)  # partition -> job class


# ---------------------------------------------------------------- commands


@dataclass(frozen=True)
class CommandResult:
    where: str  # the command line, for notices and action details
    ok: bool
    stdout: str
    stderr: str  # the command's stderr, or why it could not run (timeout, missing binary)
    returncode: int | None

    @property
    def problem(self) -> str:
        if self.returncode is None:
            return self.stderr
        # scontrol prints some errors ("Node x not found") on stdout.
        said = self.stderr.strip() or self.stdout.strip()[:500] or "(no output)"
        return f"exited {self.returncode}: {said}"


def run_command(config: SlurmConfig, argv: list[str]) -> CommandResult:
    """Run one Slurm client with the configured SLURM_CONF and timeout; never raises."""
    where = " ".join(argv)
    env = dict(os.environ)
    if config.slurm_conf is not None:
        env["SLURM_CONF"] = config.slurm_conf
    try:
        proc = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=config.timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return CommandResult(where, False, "", f"timed out after {config.timeout_s:g}s", None)
    except OSError as exc:  # missing binary, not executable
        return CommandResult(where, False, "", f"could not run: {exc}", None)
    return CommandResult(where, proc.returncode == 0, proc.stdout, proc.stderr.strip(), proc.returncode)


# ---------------------------------------------------------------- node states

BASE_STATES = frozenset({"ALLOCATED", "DOWN", "ERROR", "FUTURE", "IDLE", "MIXED", "UNKNOWN"})
# sinfo's long and short spellings of a state that is really a base plus a flag.
_ALIASES: dict[str, tuple[str, tuple[str, ...]]] = {
    "ALLOC": ("ALLOCATED", ()),
    "MIX": ("MIXED", ()),
    "UNK": ("UNKNOWN", ()),
    "DRAINED": ("IDLE", ("DRAIN",)),
    "DRAIN": ("IDLE", ("DRAIN",)),
    "DRAINING": ("ALLOCATED", ("DRAIN",)),
    "DRNG": ("ALLOCATED", ("DRAIN",)),
    "MAINT": ("IDLE", ("MAINTENANCE",)),
    "RESERVED": ("IDLE", ("RESERVED",)),
    "RESV": ("IDLE", ("RESERVED",)),
    "COMPLETING": ("ALLOCATED", ("COMPLETING",)),
    "COMP": ("ALLOCATED", ("COMPLETING",)),
    "FAIL": ("ALLOCATED", ("FAIL",)),
    "FAILING": ("ALLOCATED", ("FAIL",)),
}
# One-character suffixes Slurm appends to a base state (scontrol and sinfo; see sinfo(1) "NODE STATE CODES").
_MARKERS = {
    "*": "NOT_RESPONDING",
    "~": "POWERED_DOWN",
    "#": "POWERING_UP",
    "%": "POWERING_DOWN",
    "!": "POWER_DOWN",
    "$": "MAINTENANCE",
    "@": "REBOOT_REQUESTED",
    "^": "REBOOT_ISSUED",
    "-": "PLANNED",
}


@dataclass(frozen=True)
class NodeState:
    base: str  # IDLE, MIXED, ALLOCATED, DOWN, ...
    flags: frozenset[str]  # DRAIN, NOT_RESPONDING, MAINTENANCE, RESERVED, ...


def parse_node_state(text: str) -> NodeState:
    """``MIXED+DRAIN+MAINTENANCE+RESERVED``, ``DOWN*+NOT_RESPONDING``, ``drained``, ``idle~`` -> base + flags."""
    parts = [p.strip().upper() for p in text.strip().split("+") if p.strip()]
    if not parts:
        return NodeState("UNKNOWN", frozenset())
    flags: set[str] = set()
    head = parts[0]
    while head and head[-1] in _MARKERS:
        flags.add(_MARKERS[head[-1]])
        head = head[:-1]
    base, extra = _ALIASES.get(head, (head or "UNKNOWN", ()))
    flags.update(extra)
    for part in parts[1:]:
        word = part.rstrip("".join(_MARKERS))
        flags.update(_MARKERS[c] for c in part[len(word) :])
        if word:
            flags.add(word)
    return NodeState(base, frozenset(flags))


# ---------------------------------------------------------------- key=value text

_KEY = re.compile(r"(?:^|(?<=\s))([A-Za-z][A-Za-z0-9_/:.-]*)=")
_REASON = re.compile(r"(?:^|(?<=\s))Reason=")
# " [user@2026-11-24T10:06:19]" closing a reason; anything after it must be another Key=.
_REASON_STAMP = re.compile(r"\s\[([^\s\[\]@]+)@(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\]")
_NEXT_KEY = re.compile(r"\s+[A-Za-z][A-Za-z0-9_/:.-]*=")


def _split_kv(text: str) -> dict[str, str]:
    keys = list(_KEY.finditer(text))
    out: dict[str, str] = {}
    for i, m in enumerate(keys):
        end = keys[i + 1].start() if i + 1 < len(keys) else len(text)
        out[m.group(1)] = text[m.end() : end].strip()
    return out


@dataclass(frozen=True)
class Reason:
    text: str
    user: str = ""
    time: float | None = None  # unix seconds (Slurm prints local time)


def parse_kv_line(line: str) -> tuple[dict[str, str], Reason | None]:
    """One ``--oneliner`` record. ``Reason=`` is free text (spaces, ``=``), closed by ``[user@time]``."""
    m = _REASON.search(line)
    if m is None:
        return _split_kv(line), None
    head, rest = line[: m.start()], line[m.end() :]
    stamp = None
    for s in _REASON_STAMP.finditer(rest):
        after = rest[s.end() :]
        if not after.strip() or _NEXT_KEY.match(after):
            stamp = s
    if stamp is None:
        return _split_kv(head), Reason(rest.strip())
    fields = _split_kv(head + " " + rest[stamp.end() :])
    return fields, Reason(rest[: stamp.start()].strip(), stamp.group(1), parse_slurm_time(stamp.group(2)))


def parse_slurm_time(text: str) -> float | None:
    """Slurm's ``2026-11-24T10:06:19`` (local time) -> unix seconds; None for Unknown/N/A/NONE."""
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        return None


def _features(text: str) -> tuple[str, ...]:
    if text in ("", "(null)"):
        return ()
    return tuple(f for f in text.split(",") if f)


@dataclass(frozen=True)
class SlurmNode:
    name: str
    base: str
    flags: frozenset[str]
    reason: str = ""
    reason_user: str = ""
    reason_time: float | None = None
    features: tuple[str, ...] = ()  # AvailableFeatures
    active_features: tuple[str, ...] = ()
    partitions: tuple[str, ...] = ()
    raw_state: str = ""

    @property
    def drained(self) -> bool:
        """Drained or draining: no new work is placed on it."""
        return "DRAIN" in self.flags

    @property
    def down(self) -> bool:
        return self.base == "DOWN"

    @property
    def not_responding(self) -> bool:
        return "NOT_RESPONDING" in self.flags

    @property
    def reserved(self) -> bool:
        """In a maintenance window or a reservation: seamguard leaves it alone."""
        return bool(self.flags & {"MAINTENANCE", "RESERVED"})

    @property
    def drained_by_seamguard(self) -> bool:
        return self.drained and self.reason.startswith(REASON_PREFIX)


def parse_node_line(line: str) -> SlurmNode | None:
    fields, reason = parse_kv_line(line.strip())
    name = fields.get("NodeName", "")
    if not name or "State" not in fields:
        return None
    state = parse_node_state(fields["State"])
    partitions = tuple(p for p in fields.get("Partitions", "").split(",") if p)
    return SlurmNode(
        name=name,
        base=state.base,
        flags=state.flags,
        reason=reason.text if reason else "",
        reason_user=reason.user if reason else "",
        reason_time=reason.time if reason else None,
        features=_features(fields.get("AvailableFeatures", "")),
        active_features=_features(fields.get("ActiveFeatures", "")),
        partitions=partitions,
        raw_state=fields["State"],
    )


def parse_nodes(text: str) -> tuple[tuple[SlurmNode, ...], tuple[str, ...]]:
    """``scontrol show node --oneliner`` output -> nodes, and the lines that were not node records."""
    nodes: list[SlurmNode] = []
    bad: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        node = parse_node_line(line)
        if node is None:
            bad.append(line.strip()[:120])
        else:
            nodes.append(node)
    return tuple(nodes), tuple(bad)


# ---------------------------------------------------------------- reservations


@dataclass(frozen=True)
class SlurmReservation:
    name: str
    nodes: tuple[str, ...]
    flags: frozenset[str]
    state: str  # ACTIVE or INACTIVE
    start: float | None
    end: float | None

    @property
    def maintenance(self) -> bool:
        return "MAINT" in self.flags

    @property
    def active(self) -> bool:
        return self.state == "ACTIVE"


def expand_hostlist(text: str) -> list[str]:
    """``n[001-003,007]`` -> names. Uses python-hostlist (Slurm's own syntax) rather than one
    ``scontrol show hostnames`` process per job list; raises ValueError on a malformed list."""
    if text in ("", "(null)", "None"):
        return []
    try:
        return [str(h) for h in hostlist.expand_hostlist(text)]
    except hostlist.BadHostlist as exc:
        raise ValueError(f"bad hostlist {text!r}: {exc}") from None


def parse_reservations(
    text: str, expand: Callable[[str], list[str]] = expand_hostlist
) -> tuple[tuple[SlurmReservation, ...], tuple[str, ...]]:
    out: list[SlurmReservation] = []
    bad: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("No reservations"):
            continue
        fields, _ = parse_kv_line(line)
        name = fields.get("ReservationName", "")
        if not name:
            bad.append(line[:120])
            continue
        try:
            nodes = tuple(expand(fields.get("Nodes", "")))
        except ValueError as exc:
            bad.append(f"reservation {name}: {exc}")
            continue
        out.append(
            SlurmReservation(
                name=name,
                nodes=nodes,
                flags=frozenset(f for f in fields.get("Flags", "").upper().split(",") if f),
                state=fields.get("State", "").upper(),
                start=parse_slurm_time(fields.get("StartTime", "")),
                end=parse_slurm_time(fields.get("EndTime", "")),
            )
        )
    return tuple(out), tuple(bad)


# ---------------------------------------------------------------- jobs

# Job id, state, partition, user, node count, start, end, node list, then the name (free text, last).
SQUEUE_FORMAT = "%i|%T|%P|%u|%D|%S|%e|%N|%j"
_SQUEUE_FIELDS = SQUEUE_FORMAT.count("|") + 1
_JOB_ID = re.compile(r"\d+(?:_\d+|_\[[\d,%-]+\]|\+\d+)?")  # 17, array 17_3 or 17_[1-9%2], het 17+1
_JOB_STATE = re.compile(r"[A-Z_]+")


@dataclass(frozen=True)
class SlurmJob:
    job_id: str
    name: str
    state: str  # RUNNING, PENDING, COMPLETING, ...
    partition: str
    user: str
    nodes: tuple[str, ...]  # expanded
    start: float | None
    end: float | None  # None: no end time (unlimited)


def parse_jobs(
    text: str, expand: Callable[[str], list[str]] = expand_hostlist
) -> tuple[tuple[SlurmJob, ...], tuple[str, ...]]:
    """``squeue -h -o SQUEUE_FORMAT`` output -> jobs, and what could not be read."""
    jobs: list[SlurmJob] = []
    bad: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cols = line.split("|", _SQUEUE_FIELDS - 1)
        if len(cols) != _SQUEUE_FIELDS or not cols[0].strip():
            bad.append(f"expected {_SQUEUE_FIELDS} '|'-separated fields: {line[:120]!r}")
            continue
        job_id, state, partition, user, count, start, end, nodelist, name = (c.strip() for c in cols)
        if not _JOB_ID.fullmatch(job_id) or not _JOB_STATE.fullmatch(state):
            bad.append(f"not a job id and state: {job_id!r} {state!r} in {line[:120]!r}")
            continue
        try:
            nodes = tuple(expand(nodelist))
        except ValueError as exc:
            bad.append(f"job {job_id}: {exc}")
            continue
        if nodes and count.isascii() and count.isdecimal() and int(count) != len(nodes):
            bad.append(f"job {job_id}: node list {nodelist!r} has {len(nodes)} nodes, squeue says {count}")
            continue
        jobs.append(
            SlurmJob(
                job_id,
                name,
                state.upper(),
                partition,
                user,
                nodes,
                parse_slurm_time(start),
                parse_slurm_time(end),
            )
        )
    return tuple(jobs), tuple(bad)


# ---------------------------------------------------------------- snapshot


@dataclass(frozen=True)
class SlurmSnapshot:
    taken_at: float
    nodes: tuple[SlurmNode, ...] = ()
    jobs: tuple[SlurmJob, ...] = ()
    reservations: tuple[SlurmReservation, ...] = ()
    read: frozenset[str] = frozenset()  # which parts were read: nodes, jobs, reservations

    def node(self, name: str) -> SlurmNode | None:
        return next((n for n in self.nodes if n.name == name), None)

    def running_jobs(self) -> tuple[SlurmJob, ...]:
        return tuple(j for j in self.jobs if j.state == "RUNNING" and j.nodes)


def _scontrol_expand(config: SlurmConfig) -> Callable[[str], list[str]]:
    """The library's expansion, falling back to ``scontrol show hostnames`` for what it rejects."""

    def expand(text: str) -> list[str]:
        try:
            return expand_hostlist(text)
        except ValueError:
            res = run_command(config, [config.scontrol, "show", "hostnames", text])
            if not res.ok:
                raise ValueError(f"bad hostlist {text!r}; {res.where} {res.problem}") from None
            return res.stdout.split()

    return expand


def read_nodes(
    config: SlurmConfig, names: tuple[str, ...] = ()
) -> tuple[tuple[SlurmNode, ...], list[SourceNotice]]:
    """All nodes (or the named ones) with ``scontrol show node --oneliner``."""
    argv = [config.scontrol, "show", "node", *([",".join(names)] if names else []), "--oneliner"]
    res = run_command(config, argv)
    if not res.ok:
        return (), [SourceNotice(SOURCE, res.where, res.problem)]
    nodes, bad = parse_nodes(res.stdout)
    notices = [SourceNotice(SOURCE, res.where, f"unreadable line: {b!r}") for b in bad[:5]]
    if not nodes:
        notices.append(
            SourceNotice(SOURCE, res.where, f"no node records in the output: {res.stdout[:200]!r}")
        )
    return nodes, notices


def read_reservations(config: SlurmConfig) -> tuple[tuple[SlurmReservation, ...] | None, list[SourceNotice]]:
    res = run_command(config, [config.scontrol, "show", "reservation", "--oneliner"])
    if not res.ok:
        return None, [SourceNotice(SOURCE, res.where, res.problem)]
    resv, bad = parse_reservations(res.stdout, _scontrol_expand(config))
    return resv, [SourceNotice(SOURCE, res.where, b) for b in bad[:5]]


def read_jobs(config: SlurmConfig) -> tuple[tuple[SlurmJob, ...] | None, list[SourceNotice]]:
    res = run_command(config, [config.squeue, "--noheader", "--all", "--format", SQUEUE_FORMAT])
    if not res.ok:
        return None, [SourceNotice(SOURCE, res.where, res.problem)]
    jobs, bad = parse_jobs(res.stdout, _scontrol_expand(config))
    notices = [SourceNotice(SOURCE, res.where, b) for b in bad[:5]]
    if len(bad) > 5:
        notices.append(SourceNotice(SOURCE, res.where, f"{len(bad) - 5} more unreadable job lines"))
    return jobs, notices


def read_snapshot(config: SlurmConfig, now: float) -> tuple[SlurmSnapshot, tuple[SourceNotice, ...]]:
    """Nodes, reservations and jobs; each part that fails is missing (see ``read``) and noticed."""
    read: set[str] = set()
    nodes, notices = read_nodes(config)
    if nodes:
        read.add("nodes")
    resv, more = read_reservations(config)
    notices.extend(more)
    if resv is not None:
        read.add("reservations")
    jobs, more = read_jobs(config)
    notices.extend(more)
    if jobs is not None:
        read.add("jobs")
    snap = SlurmSnapshot(now, nodes, jobs or (), resv or (), frozenset(read))
    return snap, tuple(notices)


def job_placements(snapshot: SlurmSnapshot, config: SlurmConfig) -> tuple[JobRecord, ...]:
    """Running jobs as the engine's job records (which nodes share a job). A job without an end
    time (no time limit) ends at +inf; its class comes from its partition, else the default."""
    out: list[JobRecord] = []
    for job in snapshot.running_jobs():
        start = job.start if job.start is not None else snapshot.taken_at
        end = job.end if job.end is not None and job.end > start else math.inf
        job_class = config.partition_classes.get(job.partition, config.default_job_class)
        out.append(JobRecord(job.job_id, job_class, job.nodes, start, end))
    return tuple(out)


# ---------------------------------------------------------------- signals

# Node-level flags derived from Slurm. Names absent from the catalog are counted in
# ``Collected.unknown`` (so they start flowing once signals.yaml lists them).
SLURM_SIGNALS: dict[str, Callable[[SlurmNode], bool]] = {
    "node.slurm_down": lambda n: n.down or "FAIL" in n.flags,
    "node.slurm_not_responding": lambda n: n.not_responding,
}


@dataclass
class SlurmSource:
    """Polls Slurm; emits the node flags in ``SLURM_SIGNALS`` and keeps the last snapshot."""

    topology: Topology
    config: SlurmConfig = field(default_factory=SlurmConfig)
    catalog: SignalCatalog = field(default_factory=signal_catalog)
    name: str = SOURCE
    last: SlurmSnapshot | None = None

    def collect(self, now: float) -> Collected:
        snap, notices = read_snapshot(self.config, now)
        self.last = snap
        return node_batch(snap, self.topology, self.catalog, now, notices)

    def placements(self) -> tuple[JobRecord, ...] | None:
        """The last poll's running jobs as job records; None before a poll or if squeue failed."""
        if self.last is None or "jobs" not in self.last.read:
            return None
        return job_placements(self.last, self.config)


def node_batch(
    snap: SlurmSnapshot,
    topology: Topology,
    catalog: SignalCatalog,
    now: float,
    notices: tuple[SourceNotice, ...] = (),
) -> Collected:
    """One sample per (node in the topology, Slurm signal in the catalog), stamped ``now``."""
    idx = [topology.lookup(f"node/{n.name}") for n in snap.nodes]
    known = [i for i, g in enumerate(idx) if g is not None]
    missing = [snap.nodes[i].name for i, g in enumerate(idx) if g is None]
    out_notices = list(notices)
    if missing:
        out_notices.append(
            SourceNotice(SOURCE, "scontrol show node", f"{len(missing)} Slurm node(s) not in the inventory: "
                         + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
        )  # fmt: skip
    entity = np.array([idx[i] for i in known], dtype=np.int64)
    batches: list[TelemetryBatch] = []
    unknown: dict[str, int] = {}
    for name, test in SLURM_SIGNALS.items():
        sig = catalog.get(name)
        if sig is None:
            if known:
                unknown[name] = len(known)
            continue
        value = np.array([1.0 if test(snap.nodes[i]) else 0.0 for i in known], dtype=np.float64)
        batches.append(
            TelemetryBatch(
                entity, np.full(entity.size, sig.index, np.int64), np.full(entity.size, now), value
            )
        )
    return Collected(TelemetryBatch.concat(batches), tuple(out_notices), unknown)
