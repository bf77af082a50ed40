"""Slurm as a source: node states (base state plus flags, the drain reason and who set it),
reservations and job placements, read with Slurm's own clients.

Each part is read in the first form the installed Slurm has, JSON first (made for programs,
with a schema named in its output), text as the fallback:

| part | JSON | text |
| --- | --- | --- |
| nodes | ``scontrol show node --json`` (23.02+), else ``sinfo --json`` (21.08, 22.05) | ``scontrol show node --oneliner`` |
| jobs | ``squeue --json --all`` (21.08+) | ``squeue --all --format`` (``slurm_text.SQUEUE_FORMAT``) |
| reservations | ``scontrol show reservation --json`` (23.02+) | ``scontrol show reservation --oneliner`` |

``SlurmReader`` settles each part's form at its first read and remembers it. When a JSON form
fails and the next form works in the same poll, the next form is used from then on and the JSON
form is tried again after ``json_retry_s``. A client that does not know ``--json`` (getopt's
``unrecognized option '--json'``: scontrol before 23.02, sinfo/squeue before 21.08) is an old
release, and falls back without a word; any other JSON failure with a working fallback (a
missing serializer plugin, output that is not the expected JSON, more than
``max_output_bytes``) is one notice naming the command, when it happens. A timeout is no reason
to fall back: the controller is slow, not the form. Every failure is a ``SourceNotice`` naming
the command and what went wrong, never an exception out of ``collect``. Parsing lives in
``slurm_states`` (the state table), ``slurm_text`` and ``slurm_json``, the records in
``slurm_records``, the bounded command in ``slurm_commands``; this module reads and turns the
records into signals.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from seamguard.model.catalog import SignalCatalog, signal_catalog
from seamguard.model.inventory import JobRecord
from seamguard.model.topology import Topology
from seamguard.model.world import WorldChange
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.base import Collected, SourceNotice, bug_text
from seamguard.telemetry.sources.slurm_commands import SlurmConfig, run_command
from seamguard.telemetry.sources.slurm_json import (
    JsonDocument,
    JsonFormError,
    parse_jobs_json,
    parse_nodes_json,
    parse_reservations_json,
)
from seamguard.telemetry.sources.slurm_records import (
    SlurmJob,
    SlurmNode,
    SlurmReservation,
    expand_hostlist,
)
from seamguard.telemetry.sources.slurm_states import (
    is_down,
)
from seamguard.telemetry.sources.slurm_text import (
    SQUEUE_FORMAT,
    parse_jobs,
    parse_nodes,
    parse_reservations,
)

SOURCE = "slurm"
MAX_PROBLEMS = 5  # per command and poll; the rest are counted
# How a client without --json refuses it (getopt): a release older than the form, which is
# expected and needs no notice. Any other failure of a JSON form that has a working fallback is
# noticed once.
_NO_JSON_OPTION = re.compile(r"(?:unrecognized|invalid|unknown) option\W+(?:--)?json", re.IGNORECASE)


# ---------------------------------------------------------------- forms and the reader

T = TypeVar("T")


@dataclass(frozen=True)
class _Form(Generic[T]):
    label: str  # "scontrol --json", "sinfo --json", "squeue --json", "text"
    argv: list[str]
    parse: Callable[[str], tuple[tuple[T, ...], tuple[str, ...], str]]  # records, problems, schema

    @property
    def json(self) -> bool:
        return self.label != "text"


@dataclass(frozen=True)
class _Settled:
    label: str  # the form in use
    since: float  # clock() when it was chosen
    failed: str  # why the preferred form was given up ("" when this is the preferred form)


@dataclass(frozen=True)
class Read(Generic[T]):
    records: tuple[T, ...] | None  # None: no form could be read
    notices: tuple[SourceNotice, ...]
    form: str = ""  # "sinfo --json (openapi/v0.0.38, Slurm 22.05.8)", "text"; "" when unread
    where: str = ""  # the command line that was read


def _schema(doc: JsonDocument) -> str:
    said = ", ".join(x for x in (doc.schema, f"Slurm {doc.release}" if doc.release else "") if x)
    return f" ({said})" if said else ""


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


def _problem_notices(where: str, problems: tuple[str, ...]) -> list[SourceNotice]:
    out = [SourceNotice(SOURCE, where, p) for p in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        out.append(SourceNotice(SOURCE, where, f"{len(problems) - MAX_PROBLEMS} more problems"))
    return out


@dataclass
class SlurmReader:
    """Reads nodes, jobs and reservations, each in the first form that works (see the module
    doc), remembering per part which one that is: one per source or actuator (two threads
    sharing one at worst both try a form)."""

    config: SlurmConfig = field(default_factory=SlurmConfig)
    clock: Callable[[], float] = time.monotonic
    settled: dict[str, _Settled] = field(default_factory=dict)

    # ------------------------------------------------------------ forms per part

    def _allowed(self, forms: list[_Form[T]]) -> list[_Form[T]]:
        if self.config.read_format == "json":
            return [f for f in forms if f.json]
        if self.config.read_format == "text":
            return [f for f in forms if not f.json]
        return forms

    def node_forms(self, names: tuple[str, ...] = ()) -> list[_Form[SlurmNode]]:
        c = self.config
        listed = [",".join(names)] if names else []

        def from_json(text: str) -> tuple[tuple[SlurmNode, ...], tuple[str, ...], str]:
            nodes, problems, doc = parse_nodes_json(text)
            if names:  # sinfo --json ignores filters; scontrol --json names them already
                nodes = tuple(n for n in nodes if n.name in names)
            return nodes, problems, _schema(doc)

        def from_text(text: str) -> tuple[tuple[SlurmNode, ...], tuple[str, ...], str]:
            nodes, problems = parse_nodes(text)
            return nodes, problems, ""

        forms: list[_Form[SlurmNode]] = [
            _Form("scontrol --json", [c.scontrol, "show", "node", *listed, "--json"], from_json)
        ]
        if not names:  # it prints every node, a waste for the actuator's one
            forms.append(_Form("sinfo --json", [c.sinfo, "--json"], from_json))
        forms.append(_Form("text", [c.scontrol, "show", "node", *listed, "--oneliner"], from_text))
        return self._allowed(forms)

    def job_forms(self) -> list[_Form[SlurmJob]]:
        c = self.config
        expand = _scontrol_expand(c)

        def from_json(text: str) -> tuple[tuple[SlurmJob, ...], tuple[str, ...], str]:
            jobs, problems, doc = parse_jobs_json(text, expand)
            return jobs, problems, _schema(doc)

        def from_text(text: str) -> tuple[tuple[SlurmJob, ...], tuple[str, ...], str]:
            jobs, problems = parse_jobs(text, expand)
            return jobs, problems, ""

        return self._allowed([
            _Form("squeue --json", [c.squeue, "--json", "--all"], from_json),
            _Form("text", [c.squeue, "--noheader", "--all", "--format", SQUEUE_FORMAT], from_text),
        ])  # fmt: skip

    def reservation_forms(self) -> list[_Form[SlurmReservation]]:
        c = self.config
        expand = _scontrol_expand(c)

        def from_json(text: str) -> tuple[tuple[SlurmReservation, ...], tuple[str, ...], str]:
            resv, problems, doc = parse_reservations_json(text, time.time(), expand)
            return resv, problems, _schema(doc)

        def from_text(text: str) -> tuple[tuple[SlurmReservation, ...], tuple[str, ...], str]:
            resv, problems = parse_reservations(text, expand)
            return resv, problems, ""

        return self._allowed([
            _Form("scontrol --json", [c.scontrol, "show", "reservation", "--json"], from_json),
            _Form("text", [c.scontrol, "show", "reservation", "--oneliner"], from_text),
        ])  # fmt: skip

    # ------------------------------------------------------------ reading

    def read(self, part: str, forms: list[_Form[T]]) -> Read[T]:
        """Try the part's forms from the settled one (or the preferred one, when it is time to
        try it again); the first that runs and parses is used and remembered."""
        labels = [f.label for f in forms]
        settled = self.settled.get(part)
        start = 0
        if settled is not None and settled.label in labels:
            at = labels.index(settled.label)
            if at == 0 or self.clock() - settled.since < self.config.json_retry_s:
                start = at
        failures: list[tuple[str, str]] = []  # (command, problem) of forms that failed this time
        for form in forms[start:]:
            res = run_command(self.config, form.argv)
            if res.ok:
                try:
                    records, problems, schema = form.parse(res.stdout)
                except JsonFormError as exc:
                    failures.append((res.where, str(exc)))
                    continue
                except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
                    failures.append((res.where, f"could not read the output: {exc!r}"))
                    continue
                except Exception as exc:
                    # The last line of defence, at the source boundary (base.py: a source never
                    # raises for its input): output no parser check foresaw is a bug to report,
                    # but it costs only this form, and the next form is tried as for any failure.
                    failures.append((res.where, bug_text("reading the output", exc)))
                    continue
                notices = self._settle(part, form, forms[0], res.where, failures)
                notices += _problem_notices(res.where, problems)
                return Read(records, tuple(notices), form.label + schema, res.where)
            failures.append((res.where, res.problem))
            if res.timed_out:  # the controller is slow; another form would wait as long
                break
        return Read(None, tuple(SourceNotice(SOURCE, w, p) for w, p in failures))

    def _settle(
        self, part: str, form: _Form[T], preferred: _Form[T], where: str, failures: list[tuple[str, str]]
    ) -> list[SourceNotice]:
        before = self.settled.get(part)
        if form is preferred or not failures:
            if before is None or before.label != form.label:
                self.settled[part] = _Settled(form.label, self.clock(), "")
            return []
        why = "; ".join(p for _, p in failures)
        self.settled[part] = _Settled(form.label, self.clock(), why)
        if before is not None and before.label == form.label and before.failed == why:
            return []  # the periodic retry failed as before: nothing new to say
        failures = [(w, p) for w, p in failures if not _NO_JSON_OPTION.search(p)]
        again = f"{self.config.json_retry_s:g}s"
        return [
            SourceNotice(SOURCE, w, f"{p}; read with `{where}` instead (tried again after {again})")
            for w, p in failures
        ]

    def nodes(self, names: tuple[str, ...] = ()) -> Read[SlurmNode]:
        return self.read("nodes/named" if names else "nodes", self.node_forms(names))

    def jobs(self) -> Read[SlurmJob]:
        return self.read("jobs", self.job_forms())

    def reservations(self) -> Read[SlurmReservation]:
        return self.read("reservations", self.reservation_forms())


# ---------------------------------------------------------------- reads (one reader each, or shared)


def read_nodes(
    config: SlurmConfig, names: tuple[str, ...] = (), reader: SlurmReader | None = None
) -> tuple[tuple[SlurmNode, ...], list[SourceNotice]]:
    """All nodes (or the named ones)."""
    got = (reader or SlurmReader(config)).nodes(names)
    notices = list(got.notices)
    if got.records is not None and not got.records and not names:
        notices.append(SourceNotice(SOURCE, got.where, "no node records in the output"))
    if got.records is not None and names:  # scontrol --json lists no record for an unknown name
        seen = {n.name for n in got.records}
        notices += [SourceNotice(SOURCE, got.where, f"Node {n} not found") for n in names if n not in seen]
    return got.records or (), notices


def read_reservations(
    config: SlurmConfig, reader: SlurmReader | None = None
) -> tuple[tuple[SlurmReservation, ...] | None, list[SourceNotice]]:
    got = (reader or SlurmReader(config)).reservations()
    return got.records, list(got.notices)


def read_jobs(
    config: SlurmConfig, reader: SlurmReader | None = None
) -> tuple[tuple[SlurmJob, ...] | None, list[SourceNotice]]:
    got = (reader or SlurmReader(config)).jobs()
    return got.records, list(got.notices)


# ---------------------------------------------------------------- snapshot


@dataclass(frozen=True)
class SlurmSnapshot:
    taken_at: float
    nodes: tuple[SlurmNode, ...] = ()
    jobs: tuple[SlurmJob, ...] = ()
    reservations: tuple[SlurmReservation, ...] = ()
    read: frozenset[str] = frozenset()  # which parts were read: nodes, jobs, reservations
    forms: tuple[tuple[str, str], ...] = ()  # (part, form it was read in), e.g. ("jobs", "text")

    def node(self, name: str) -> SlurmNode | None:
        return next((n for n in self.nodes if n.name == name), None)

    def running_jobs(self) -> tuple[SlurmJob, ...]:
        return tuple(j for j in self.jobs if j.state == "RUNNING" and j.nodes)


def read_snapshot(
    config: SlurmConfig, now: float, reader: SlurmReader | None = None
) -> tuple[SlurmSnapshot, tuple[SourceNotice, ...]]:
    """Nodes, reservations and jobs; each part that fails is missing (see ``read``) and noticed."""
    reader = reader or SlurmReader(config)
    nodes, resv, jobs = reader.nodes(), reader.reservations(), reader.jobs()
    notices = [*nodes.notices, *resv.notices, *jobs.notices]
    if nodes.records is not None and not nodes.records:
        notices.insert(len(nodes.notices), SourceNotice(SOURCE, nodes.where, "no node records in the output"))
    parts: list[tuple[str, Read[SlurmNode] | Read[SlurmReservation] | Read[SlurmJob]]] = [
        ("nodes", nodes), ("reservations", resv), ("jobs", jobs)
    ]  # fmt: skip
    # An empty node list is not a read (there is always a node); no jobs or reservations is.
    read = [(p, got.form) for p, got in parts if got.records is not None and (got.records or p != "nodes")]
    snap = SlurmSnapshot(
        now,
        nodes.records or (),
        jobs.records or (),
        resv.records or (),
        frozenset(part for part, _ in read),
        tuple(sorted(read)),
    )
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
    # base DOWN or ERROR, or flag FAIL or INVALID_REG (slurm_states.is_down)
    "node.slurm_down": lambda n: is_down(n.base, n.flags),
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
    reader: SlurmReader = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.reader = SlurmReader(self.config)

    def collect(self, now: float) -> Collected:
        snap, notices = read_snapshot(self.config, now, self.reader)
        self.last = snap
        return node_batch(snap, self.topology, self.catalog, now, notices)

    def follow(self, change: WorldChange) -> None:
        """Nodes are looked up by name each poll: the new world is all it needs."""
        self.topology = change.new

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
