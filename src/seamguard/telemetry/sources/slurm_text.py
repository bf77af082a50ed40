"""Slurm's text forms: ``scontrol show node|reservation --oneliner`` and ``squeue`` with an explicit
``--format``, from 16.05 to 26.05.

A oneliner record is ``Key=value`` pairs separated by spaces, but some values are free text
(spaces, ``=``, brackets): the drain ``Reason``, then ``Comment``, ``Extra``... which
``slurm_sprint_node_table()`` (``src/api/node_info.c``) prints after it, in a fixed order that
only grew over the releases. A record is read as a head of plain ``Key=value`` pairs (the first
of a key wins, so free text later on cannot replace ``State=``), then the free-text tail:

- a Reason with a ``[user@time]`` stamp (printed whenever the reason has a time, i.e. nearly
  always) ends at the first stamp followed by the end of the record, by a ``Key=`` field, or by
  the reason's next line: a Reason of several lines has the stamp after its first line and
  the others after it, each after 8 spaces;
- a Reason without a stamp, and each tail field, ends where the next tail field begins, found
  from the right: free text may hold the name of an earlier field, or of a later one that is
  also really printed. (Only free text naming a later field that is absent cannot be told apart.)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from seamguard.telemetry.sources.slurm_records import (
    SlurmJob,
    SlurmNode,
    SlurmReservation,
    expand_hostlist,
)
from seamguard.telemetry.sources.slurm_states import parse_node_state

# What slurm_sprint_node_table() prints after Reason=, in order: 16.05-20.02 nothing (Reason is
# last); 20.11 Comment (always, "(null)" when unset); 21.08-22.05 Comment, Extra (each when set);
# 23.02 + ReservationName; 23.11-24.11 Comment, Extra, InstanceId, InstanceType,
# ReservationName; 25.05 + TLSCertTokenSet, TLSCertLastRenewal, Topology; 25.11+ + Parameters.
NODE_TAIL_KEYS = (
    "Comment", "Extra", "InstanceId", "InstanceType", "ReservationName",
    "TLSCertTokenSet", "TLSCertLastRenewal", "Topology", "Parameters",
)  # fmt: skip
# slurm_sprint_reservation_info(): Comment (23.02+) is last.
RESERVATION_TAIL_KEYS = ("Comment",)

_KEY = re.compile(r"(?:^|(?<=\s))([A-Za-z][A-Za-z0-9_/:.-]*)=")
_REASON = re.compile(r"(?:^|\s)Reason=")
# " [user@2026-11-24T10:06:19]" closing a reason's first line.
_REASON_STAMP = re.compile(r" \[([^\s\[\]@]+)@(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\]")
# A multi-line reason's next line: the oneliner separator " " and 7 spaces of indent.
_LINE_BREAK = " " * 8
# What may follow a stamp that closes the reason: the end, the reason's next line, or a field.
_CLOSING = re.compile(rf"\s*$|{_LINE_BREAK}\S| [A-Z][A-Za-z0-9_]*=")


def _split_kv(text: str) -> dict[str, str]:
    keys = list(_KEY.finditer(text))
    out: dict[str, str] = {}
    for i, m in enumerate(keys):
        end = keys[i + 1].start() if i + 1 < len(keys) else len(text)
        out.setdefault(m.group(1), text[m.end() : end].strip())
    return out


def _split_tail(text: str, keys: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """``lead K1=v1 K2=v2`` -> lead and the fields, each found from the right (see the module doc)."""
    fields: dict[str, str] = {}
    end = len(text)
    for key in reversed(keys):
        at = text.rfind(f" {key}=", 0, end)
        if at < 0 and text.startswith(f"{key}="):
            at = -1
        elif at < 0:
            continue
        fields[key] = text[at + len(key) + 2 : end].strip()
        end = max(at, 0)
    return text[:end], fields


def _tail_start(text: str, keys: tuple[str, ...]) -> int:
    """Where the first tail field (or Reason) begins, or len(text)."""
    starts = [m.start() for m in (_REASON.search(text),) if m is not None]
    starts += [m.start() for key in keys if (m := re.search(rf"(?:^|\s){key}=", text))]
    return min(starts, default=len(text))


def _join_lines(text: str) -> str:
    return "\n".join(p.strip() for p in text.split(_LINE_BREAK) if p.strip())


@dataclass(frozen=True)
class Reason:
    text: str
    user: str = ""
    time: float | None = None  # unix seconds (Slurm prints local time)


def parse_kv_line(
    line: str, tail_keys: tuple[str, ...] = NODE_TAIL_KEYS
) -> tuple[dict[str, str], Reason | None]:
    """One ``--oneliner`` record -> its fields (tail fields included) and the Reason, if any."""
    line = line.rstrip("\n")
    at = _tail_start(line, tail_keys)
    fields = _split_kv(line[:at])
    tail = line[at:]
    m = _REASON.match(tail)
    if m is None:
        _, more = _split_tail(tail, tail_keys)
        return {**fields, **{k: v for k, v in more.items() if k not in fields}}, None
    rest = tail[m.end() :]
    stamp = next((s for s in _REASON_STAMP.finditer(rest) if _CLOSING.match(rest, s.end())), None)
    if stamp is None:
        text, more = _split_tail(rest, tail_keys)
        reason = Reason(_join_lines(text))
    else:
        lead, more = _split_tail(rest[stamp.end() :], tail_keys)
        first = rest[: stamp.start()].strip()
        if lead.startswith(_LINE_BREAK):  # the reason's further lines
            text = _join_lines(lead)
            first = f"{first}\n{text}" if text else first
        else:  # fields of a release newer than this table
            more = {**_split_kv(lead), **more}
        reason = Reason(first, stamp.group(1), parse_slurm_time(stamp.group(2)))
    return {**fields, **{k: v for k, v in more.items() if k not in fields}}, reason


def parse_slurm_time(text: str) -> float | None:
    """Slurm's ``2026-11-24T10:06:19`` (local time) -> unix seconds; None for Unknown/N/A/NONE."""
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        return None


def csv_names(text: str) -> tuple[str, ...]:
    """``gpu,h100`` -> names; ``(null)`` and empty -> none."""
    if text in ("", "(null)"):
        return ()
    return tuple(f for f in text.split(",") if f)


def state_problem(node: SlurmNode, unknown: tuple[str, ...]) -> str:
    return (
        f"node {node.name}: state {node.raw_state!r} has words no Slurm release prints "
        f"({', '.join(unknown)}): kept as flags, base read as {node.base}"
    )


def parse_node_line(line: str) -> SlurmNode | None:
    node, _ = _node_and_problem(line)
    return node


def _node_and_problem(line: str) -> tuple[SlurmNode | None, str]:
    fields, reason = parse_kv_line(line.strip())
    name = fields.get("NodeName", "")
    if not name or "State" not in fields:
        return None, f"not a node record: {line.strip()[:120]!r}"
    state = parse_node_state(fields["State"])
    node = SlurmNode(
        name=name,
        base=state.base,
        flags=state.flags,
        reason=reason.text if reason else "",
        reason_user=reason.user if reason else "",
        reason_time=reason.time if reason else None,
        features=csv_names(fields.get("AvailableFeatures", "")),
        active_features=csv_names(fields.get("ActiveFeatures", "")),
        partitions=csv_names(fields.get("Partitions", "")),
        raw_state=fields["State"],
    )
    return node, state_problem(node, state.unknown) if state.unknown else ""


def parse_nodes(text: str) -> tuple[tuple[SlurmNode, ...], tuple[str, ...]]:
    """``scontrol show node --oneliner`` output -> nodes, and what was wrong (unreadable lines,
    state words no release prints)."""
    nodes: list[SlurmNode] = []
    problems: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        node, problem = _node_and_problem(line)
        if node is not None:
            nodes.append(node)
        if problem:
            problems.append(problem)
    return tuple(nodes), tuple(problems)


def parse_reservations(
    text: str, expand: Callable[[str], list[str]] = expand_hostlist
) -> tuple[tuple[SlurmReservation, ...], tuple[str, ...]]:
    """``scontrol show reservation --oneliner`` output -> reservations, and what was wrong."""
    out: list[SlurmReservation] = []
    bad: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("No reservations"):
            continue
        fields, _ = parse_kv_line(line, RESERVATION_TAIL_KEYS)
        name = fields.get("ReservationName", "")
        if not name:
            bad.append(f"not a reservation record: {line[:120]!r}")
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


# Job id, state, partition, user, node count, start, end, node list, then the name (free text, last).
SQUEUE_FORMAT = "%i|%T|%P|%u|%D|%S|%e|%N|%j"
_SQUEUE_FIELDS = SQUEUE_FORMAT.count("|") + 1
_JOB_ID = re.compile(r"\d+(?:_\d+|_\[[\d,%:-]+\]|\+\d+)?")  # 17, array 17_3 or 17_[1-9%2], het 17+1
_JOB_STATE = re.compile(r"[A-Z_]+")


def node_count_problem(job_id: str, nodelist: str, nodes: tuple[str, ...], count: int | None) -> str:
    if nodes and count is not None and count != len(nodes):
        return f"job {job_id}: node list {nodelist!r} has {len(nodes)} nodes, squeue says {count}"
    return ""


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
        # A node count is a uint32 in Slurm: more digits are no count (and past 4,300, int() raises)
        readable = count.isascii() and count.isdecimal() and len(count) <= 10
        problem = node_count_problem(job_id, nodelist, nodes, int(count) if readable else None)
        if problem:
            bad.append(problem)
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
