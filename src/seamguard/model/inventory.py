"""Reading the inventory (INV.csv) and the job table (JOBS.csv) of the telemetry contract."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from seamguard.errors import InputError
from seamguard.model.serving import ServingSpec, read_serving, serving_path_for
from seamguard.model.states import JobClass

INVENTORY_REQUIRED = ("node", "rack", "cdu", "leaf", "gpus")
INVENTORY_OPTIONAL = ("row", "pdu", "storage", "model")  # model: GPU model, a peer cohort
MIG_COLUMN = "mig"  # optional: the node's MIG GPU instances (``parse_mig_layout``)
MAX_MIG_INSTANCE = 64  # GPU instance ids are small (A100/H100: up to 14); larger is a typo
JOBS_REQUIRED = ("job", "job_class", "nodes", "start", "end")


@dataclass(frozen=True)
class NodeRecord:
    node: str
    rack: str
    cdu: str
    leaf: str
    gpus: int
    row: str = ""
    pdu: str = ""
    storage: str = ""
    model: str = ""  # GPU model of the node, e.g. H100-SXM5-80GB
    mig: tuple[tuple[int, ...], ...] = ()  # per GPU index: its MIG GPU instance ids (empty: no MIG)


@dataclass(frozen=True)
class Inventory:
    nodes: tuple[NodeRecord, ...]
    serving: ServingSpec | None = None  # pools, replicas and paths (the optional serving file)


@dataclass(frozen=True)
class JobRecord:
    job: str
    job_class: JobClass
    nodes: tuple[str, ...]
    start: float
    end: float
    storage: str = ""


def _check_header(path: Path, header: list[str] | None, required: tuple[str, ...]) -> list[str]:
    if not header:
        raise InputError(str(path), f"empty file; expected a header with {','.join(required)}")
    cols = [h.strip() for h in header]
    missing = [c for c in required if c not in cols]
    if missing:
        raise InputError(
            f"{path}:1", f"header lacks column(s) {', '.join(missing)}; expected {','.join(required)}"
        )
    return cols


def _name(path: Path, line: int, col: str, raw: str) -> str:
    value = raw.strip()
    if not value or "/" in value or any(ch.isspace() for ch in value):
        raise InputError(
            f"{path}:{line}", f"column {col!r} must be a non-empty name without '/' or spaces, got {raw!r}"
        )
    return value


def _id_list(text: str, what: str, limit: int) -> list[int]:
    """``1;2;7-13`` -> [1, 2, 7, ..., 13]; ValueError naming the bad part."""
    out: list[int] = []
    for part in text.split(";"):
        lo, dash, hi = part.partition("-")
        if not (lo.isascii() and lo.isdecimal()) or (dash and not (hi.isascii() and hi.isdecimal())):
            raise ValueError(f"{what} {part!r} is not a number or a range a-b")
        first, last = int(lo), int(hi) if dash else int(lo)
        if first > last or last > limit:
            raise ValueError(f"{what} {part!r} must be an ascending range within 0..{limit}")
        out.extend(range(first, last + 1))
    return out


def parse_mig_layout(text: str, gpus: int) -> tuple[tuple[int, ...], ...]:
    """The ``mig`` column: which MIG GPU instances (``GPU_I_ID`` in dcgm-exporter) each GPU has.

    ``7-13`` gives every GPU of the node instances 7..13 (the usual uniform layout, one
    mig-manager config per node); ``0-3:1;2|4-7:7-13`` sets GPUs 0..3 and 4..7 apart. GPUs not
    named have no MIG instances. Raises ValueError saying what is wrong."""
    if gpus <= 0:
        raise ValueError("the node has no GPUs to hold MIG instances")
    layout: list[tuple[int, ...]] = [() for _ in range(gpus)]
    for group in text.split("|"):
        which, colon, ids = group.rpartition(":")
        targets = _id_list(which, "GPU index", max(gpus - 1, 0)) if colon else list(range(gpus))
        instances = tuple(sorted(set(_id_list(ids, "instance id", MAX_MIG_INSTANCE))))
        for g in targets:
            if layout[g]:
                raise ValueError(f"GPU {g} is given MIG instances twice")
            layout[g] = instances
    return tuple(layout)


def read_inventory(path: Path) -> Inventory:
    records: list[NodeRecord] = []
    seen: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        cols = _check_header(path, next(reader, None), INVENTORY_REQUIRED)
        for line, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(cols):
                raise InputError(f"{path}:{line}", f"expected {len(cols)} fields, got {len(row)}")
            rec = dict(zip(cols, row, strict=True))
            node = _name(path, line, "node", rec["node"])
            if node in seen:
                raise InputError(f"{path}:{line}", f"node {node!r} already listed on line {seen[node]}")
            seen[node] = line
            try:
                gpus = int(rec["gpus"])
            except ValueError:
                raise InputError(
                    f"{path}:{line}", f"column 'gpus' must be an integer, got {rec['gpus']!r}"
                ) from None
            if not 0 <= gpus <= 64:
                raise InputError(f"{path}:{line}", f"column 'gpus' must be between 0 and 64, got {gpus}")
            optional = {c: _name(path, line, c, rec[c]) for c in INVENTORY_OPTIONAL if rec.get(c, "").strip()}
            mig: tuple[tuple[int, ...], ...] = ()
            if rec.get(MIG_COLUMN, "").strip():
                try:
                    mig = parse_mig_layout(rec[MIG_COLUMN].strip(), gpus)
                except ValueError as exc:
                    raise InputError(f"{path}:{line}", f"column 'mig': {exc}") from None
            records.append(
                NodeRecord(
                    node=node,
                    rack=_name(path, line, "rack", rec["rack"]),
                    cdu=_name(path, line, "cdu", rec["cdu"]),
                    leaf=_name(path, line, "leaf", rec["leaf"]),
                    gpus=gpus,
                    mig=mig,
                    **optional,
                )
            )
    if not records:
        raise InputError(str(path), "no nodes listed")
    serving = serving_path_for(path)
    spec = read_serving(serving, frozenset(seen)) if serving.exists() else None
    return Inventory(tuple(records), spec)


def read_jobs(path: Path, inventory: Inventory) -> tuple[JobRecord, ...]:
    known = {n.node for n in inventory.nodes}
    jobs: list[JobRecord] = []
    seen: set[str] = set()
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        cols = _check_header(path, next(reader, None), JOBS_REQUIRED)
        for line, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(cols):
                raise InputError(f"{path}:{line}", f"expected {len(cols)} fields, got {len(row)}")
            rec = dict(zip(cols, row, strict=True))
            where = f"{path}:{line}"
            job = _name(path, line, "job", rec["job"])
            if job in seen:
                raise InputError(where, f"job {job!r} listed twice")
            seen.add(job)
            try:
                job_class = JobClass.parse(rec["job_class"])
            except ValueError as exc:
                raise InputError(where, str(exc)) from None
            nodes = tuple(n.strip() for n in rec["nodes"].split(";") if n.strip())
            if not nodes:
                raise InputError(where, "column 'nodes' is empty; expected node names separated by ';'")
            unknown = [n for n in nodes if n not in known]
            if unknown:
                raise InputError(where, f"node(s) not in the inventory: {', '.join(unknown[:5])}")
            try:
                start, end = float(rec["start"]), float(rec["end"])
            except ValueError:
                raise InputError(where, "columns 'start' and 'end' must be unix seconds") from None
            if not end > start:
                raise InputError(where, f"end ({end}) must be after start ({start})")
            storage = rec.get("storage", "").strip()
            jobs.append(JobRecord(job, job_class, nodes, start, end, storage))
    return tuple(jobs)
