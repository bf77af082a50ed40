"""Slurm's JSON forms: ``scontrol show node|reservation --json`` (23.02+), ``sinfo --json``'s node
list (21.08-22.05) and ``squeue --json`` (21.08+), read into the same records as the text forms.

The schema follows the plugin that wrote it, named in ``meta``:

- openapi v0.0.37 (21.08) and v0.0.38 (22.05): ``state`` is the base in lower case plus a
  ``state_flags`` list; times are integers (0: unset); features are a comma-separated string;
  a job's ``time_limit`` is null when unlimited, ``job_state`` one word.
- data_parser v0.0.39 (23.02): ``state`` is one list (base, then flags); integers for times,
  ``{"set", "infinite", "number"}`` for ``*_NO_VAL`` numbers (time limit, node count, array ids).
- data_parser v0.0.40+ (23.11 to 26.05): times too are ``{"set", "infinite", "number"}``, and
  ``job_state`` a list (base, then flags such as COMPLETING); features may be a list.

Each value is read by what it is, not by the version, so one reader covers them all, and a
record that mixes them (as hand-edited test data does) is read field by field. A document that
is not JSON or lacks its list is ``JsonFormError``: the caller falls back to the text form.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from seamguard.telemetry.sources.base import read_json
from seamguard.telemetry.sources.slurm_records import (
    SlurmJob,
    SlurmNode,
    SlurmReservation,
    expand_hostlist,
)
from seamguard.telemetry.sources.slurm_states import parse_state_words
from seamguard.telemetry.sources.slurm_text import node_count_problem, state_problem


class JsonFormError(ValueError):
    """The output is not the JSON document the command should print."""


# A record with a value of an unexpected shape is reported and skipped, the others are kept.
# OverflowError: int() of an infinite float, float() of an integer past 1.8e308.
_BAD_VALUE = (ValueError, TypeError, KeyError, AttributeError, OverflowError)


@dataclass(frozen=True)
class JsonDocument:
    items: list[dict[str, Any]]
    schema: str  # "openapi/v0.0.38", "data_parser/v0.0.44", or "" when meta does not say
    release: str  # "22.05.8", or ""
    notes: tuple[str, ...]  # Slurm's own errors and warnings in the document


def _messages(doc: dict[str, Any], key: str) -> list[str]:
    out: list[str] = []
    entries = doc.get(key) or []
    for entry in entries if isinstance(entries, list) else [entries]:  # a list, or one odd value
        if isinstance(entry, dict):
            words = [str(entry.get(k)) for k in ("description", "error", "source") if entry.get(k)]
            out.append(f"Slurm {key[:-1]}: " + "; ".join(dict.fromkeys(words)))
        else:
            out.append(f"Slurm {key[:-1]}: {entry}")
    return out


def _shown(value: Any, i: int) -> str:
    """A record's name or id for a problem: cut short (a 400-digit id is possible), or its index."""
    return f"#{i}" if value is None else str(value)[:40]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def load_document(text: str, key: str) -> JsonDocument:
    """The ``key`` list of a Slurm JSON document, with its schema and messages."""
    try:
        doc = read_json(text)
    except ValueError as exc:
        raise JsonFormError(str(exc)) from None
    if not isinstance(doc, dict):
        raise JsonFormError(f"not a JSON object: {text[:120]!r}")
    items = doc.get(key)
    if not isinstance(items, list):
        raise JsonFormError(f"no {key!r} list in the JSON (keys: {', '.join(sorted(doc)[:8])})")
    meta = _dict(doc.get("meta"))
    plugin = _dict(meta.get("plugin") or meta.get("plugins"))  # "plugins" in 23.02
    schema = str(plugin.get("data_parser") or plugin.get("type") or "")
    release = str(_dict(meta.get("slurm") or meta.get("Slurm")).get("release", ""))
    records = [i for i in items if isinstance(i, dict)]
    notes = _messages(doc, "errors") + _messages(doc, "warnings")
    if len(records) != len(items):
        notes.append(f"{len(items) - len(records)} {key} entries are not JSON objects")
    return JsonDocument(records, schema, release, tuple(notes))


def number(value: Any) -> tuple[float | None, bool]:
    """An int, a float, null, ``"Infinity"``, or ``{"set", "infinite", "number"}`` -> (the number,
    or None when unset; infinite). A float infinity (JSON ``Infinity`` or ``1e999``, which Python's
    json reads) is infinite too; a NaN or a negative infinity is no number."""
    if value is None:
        return None, False
    if isinstance(value, bool):
        raise ValueError(f"a number, not {value!r}")
    if isinstance(value, int | float):
        n = float(value)  # an int past 1.8e308 raises OverflowError, one of _BAD_VALUE
        if n == math.inf:
            return None, True
        if not math.isfinite(n):
            raise ValueError(f"a number, not {value!r}")
        return n, False
    if isinstance(value, str) and value.lower() in ("infinity", "infinite", "unlimited"):
        return None, True
    if isinstance(value, dict):
        if value.get("infinite"):
            return None, True
        if value.get("set") is False:
            return None, False
        return number(value.get("number"))
    raise ValueError(f"a number, not {value!r}")


def _time(value: Any) -> float | None:
    """Unix seconds; 0, unset and infinite are no time (as the text forms print them)."""
    t, _ = number(value)
    return t if t else None


def _names(value: Any) -> tuple[str, ...]:
    """A comma-separated string or a list of names."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v for v in value.split(",") if v and v != "(null)")
    if isinstance(value, list):
        return tuple(str(v) for v in value if v)
    raise ValueError(f"a name list, not {value!r}")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    raise ValueError(f"a string, not {value!r}")


def _node(item: dict[str, Any]) -> tuple[SlurmNode, str]:
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("no name")
    state = item.get("state")
    if isinstance(state, str):  # openapi v0.0.37/38: the base, then state_flags
        flags = item.get("state_flags") or []
        words = [state, *(flags if isinstance(flags, list) else [flags])]
    elif isinstance(state, list):
        words = state
    else:
        raise ValueError(f"state {state!r} is not a word or a list")
    words = [str(w) for w in words]
    parsed = parse_state_words(words)
    raw = "+".join(w.upper() for w in words if w) or parsed.base  # the complete form: IDLE+DRAIN
    reason = _text(item.get("reason")).strip()
    when = _time(item.get("reason_changed_at")) if reason else None
    node = SlurmNode(
        name=name,
        base=parsed.base,
        flags=parsed.flags,
        reason=reason,
        reason_user=_text(item.get("reason_set_by_user")) if when is not None else "",
        reason_time=when,
        features=_names(item.get("features")),
        active_features=_names(item.get("active_features")),
        partitions=_names(item.get("partitions")),
        raw_state=raw,
    )
    return node, state_problem(node, parsed.unknown) if parsed.unknown else ""


def parse_nodes_json(text: str) -> tuple[tuple[SlurmNode, ...], tuple[str, ...], JsonDocument]:
    """``scontrol show node --json`` / ``sinfo --json`` (21.08-22.05) -> nodes, what was wrong."""
    doc = load_document(text, "nodes")
    nodes: list[SlurmNode] = []
    problems = list(doc.notes)
    for i, item in enumerate(doc.items):
        try:
            node, problem = _node(item)
        except _BAD_VALUE as exc:
            problems.append(f"node {_shown(item.get('name'), i)}: {exc}")
            continue
        nodes.append(node)
        if problem:
            problems.append(problem)
    return tuple(nodes), tuple(problems), doc


# job_state_string(): a flag names the state before the base does (squeue's %T prints the same).
_JOB_FLAG_ORDER = (
    "COMPLETING", "STAGE_OUT", "CONFIGURING", "EXPEDITING", "RESIZING", "REQUEUED", "REQUEUE_FED",
    "REQUEUE_HOLD", "SPECIAL_EXIT", "STOPPED", "REVOKED", "RESV_DEL_HOLD", "SIGNALING",
)  # fmt: skip


def _job_state(value: Any) -> str:
    if isinstance(value, str):
        return value.upper()
    if isinstance(value, list) and value:
        words = [str(w).upper() for w in value]
        return next((f for f in _JOB_FLAG_ORDER if f in words), words[0])
    raise ValueError(f"job_state {value!r} is not a word or a list")


def _job_id(item: dict[str, Any]) -> str:
    """As squeue's %i prints it: 17_[1-9%2] for a pending array, 17_3 a task, 17+1 het."""
    job_id, _ = number(item.get("job_id"))
    if job_id is None:
        raise ValueError("no job_id")
    array_id, _ = number(item.get("array_job_id"))
    task_id, _ = number(item.get("array_task_id"))
    tasks = _text(item.get("array_task_string"))
    het_id, _ = number(item.get("het_job_id"))
    het_offset, _ = number(item.get("het_job_offset"))
    if tasks:
        return f"{int(array_id or job_id)}_[{tasks}]"
    if task_id is not None and array_id:
        return f"{int(array_id)}_{int(task_id)}"
    if het_id:
        return f"{int(het_id)}+{int(het_offset or 0)}"
    return str(int(job_id))


def _job(item: dict[str, Any], expand: Callable[[str], list[str]]) -> tuple[SlurmJob, str]:
    job_id = _job_id(item)
    nodelist = _text(item.get("nodes"))
    nodes = tuple(expand(nodelist))
    count, _ = number(item.get("node_count"))
    limit, unlimited = number(item.get("time_limit"))
    # squeue prints NONE for the end of a job without a time limit (openapi v0.0.37/38: null).
    no_limit = unlimited or (limit is None and "time_limit" in item)
    job = SlurmJob(
        job_id=job_id,
        name=_text(item.get("name")),
        state=_job_state(item.get("job_state")),
        partition=_text(item.get("partition")),
        user=_text(item.get("user_name")),
        nodes=nodes,
        start=_time(item.get("start_time")),
        end=None if no_limit else _time(item.get("end_time")),
    )
    return job, node_count_problem(job_id, nodelist, nodes, None if count is None else int(count))


def parse_jobs_json(
    text: str, expand: Callable[[str], list[str]] = expand_hostlist
) -> tuple[tuple[SlurmJob, ...], tuple[str, ...], JsonDocument]:
    """``squeue --json`` -> jobs, and what could not be read."""
    doc = load_document(text, "jobs")
    jobs: list[SlurmJob] = []
    problems = list(doc.notes)
    for i, item in enumerate(doc.items):
        try:
            job, problem = _job(item, expand)
        except _BAD_VALUE as exc:
            problems.append(f"job {_shown(item.get('job_id'), i)}: {exc}")
            continue
        if problem:
            problems.append(problem)
        else:
            jobs.append(job)
    return tuple(jobs), tuple(problems), doc


def parse_reservations_json(
    text: str, now: float, expand: Callable[[str], list[str]] = expand_hostlist
) -> tuple[tuple[SlurmReservation, ...], tuple[str, ...], JsonDocument]:
    """``scontrol show reservation --json`` -> reservations. The JSON has no state: ACTIVE when
    ``now`` lies within [start, end], as scontrol's text form decides it."""
    doc = load_document(text, "reservations")
    out: list[SlurmReservation] = []
    problems = list(doc.notes)
    for i, item in enumerate(doc.items):
        name = item.get("name")
        try:
            if not isinstance(name, str) or not name:
                raise ValueError("no name")
            start = _time(item.get("start_time"))
            end_at, endless = number(item.get("end_time"))
            # An infinite end never comes: such a reservation (a MAINT one above all) is active
            # once started. 0 or unset is no end time, as for _time.
            end = math.inf if endless else (end_at or None)
            flags = item.get("flags") or []
            if not isinstance(flags, list | str):
                raise ValueError(f"flags {flags!r} are not a list")
            active = start is not None and end is not None and start <= now <= end
            out.append(
                SlurmReservation(
                    name=name,
                    nodes=tuple(expand(_text(item.get("node_list")))),
                    flags=frozenset(
                        _names(flags) if isinstance(flags, str) else (str(f).upper() for f in flags)
                    ),
                    state="ACTIVE" if active else "INACTIVE",
                    start=start,
                    end=end,
                )
            )
        except _BAD_VALUE as exc:
            problems.append(f"reservation {name if isinstance(name, str) else f'#{i}'}: {exc}")
    return tuple(out), tuple(problems), doc
