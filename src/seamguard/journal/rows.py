"""Records to rows and back, and the queries every SQL journal runs: one copy for SQLite and
PostgreSQL, which differ only in their placeholder (``?``, ``%s``) and their connection."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from seamguard.journal.records import (
    ActionResultRecord,
    AuditRecord,
    DecisionRecord,
    EvidenceItem,
    FindingRecord,
    GatewaySpendRecord,
    NoticeRecord,
    ObservationRecord,
    OperatorRecord,
    OutcomeRecord,
    TransitionRecord,
)

COLUMNS: dict[str, tuple[str, ...]] = {
    "transitions": ("ts", "entity", "from_state", "to_state", "gfs", "prs", "fae", "reason", "evidence", "epoch"),
    "decisions": ("ts", "entity", "action", "mode", "reason", "state", "evidence", "epoch", "cause",
                  "predicted_cost", "predicted_benefit"),
    "outcomes": ("ts", "entity", "action", "decided_at", "realised_cost", "realised_benefit", "note"),
    "observations": ("ts", "entity", "state", "gfs", "prs", "fae", "evidence"),
    "action_results": ("ts", "kind", "target", "actuator", "status", "detail", "epoch", "decided_at", "attempt"),
    "notices": ("ts", "source", "level", "message"),
    "audit": ("ts", "principal", "client", "method", "path", "status", "count"),
    "operator": ("ts", "principal", "verb", "target", "reason", "until", "detail"),
    "finding": ("ts", "job", "mode", "finding"),
    "gateway_spend": ("ts", "key", "tenant", "period", "tokens"),
}  # fmt: skip
TABLES = tuple(COLUMNS)


def dump_evidence(items: Sequence[EvidenceItem]) -> str:
    return json.dumps([[i.detector, i.signal, i.evidence, i.text] for i in items], separators=(",", ":"))


def load_evidence(raw: str) -> tuple[EvidenceItem, ...]:
    return tuple(EvidenceItem(str(d), str(s), float(e), str(t)) for d, s, e, t in json.loads(raw))


def real(value: float) -> float | None:
    """NaN is stored as NULL (SQLite has no NaN; PostgreSQL's would not compare equal)."""
    return None if math.isnan(value) else value


def nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


# ---- records to rows -------------------------------------------------------------------------
def transition_row(t: TransitionRecord) -> tuple[Any, ...]:
    return (t.ts, t.entity, t.from_state, t.to_state, t.gfs, t.prs, t.fae, t.reason, dump_evidence(t.evidence),
            t.epoch)  # fmt: skip


def decision_row(d: DecisionRecord) -> tuple[Any, ...]:
    return (d.ts, d.entity, d.action, d.mode, d.reason, d.state, dump_evidence(d.evidence), d.epoch, d.cause,
            real(d.predicted_cost_gpu_h), real(d.predicted_benefit_gpu_h))  # fmt: skip


def outcome_row(o: OutcomeRecord) -> tuple[Any, ...]:
    return (o.ts, o.entity, o.action, o.decided_at, real(o.realised_cost_gpu_h), real(o.realised_benefit_gpu_h),
            o.note)  # fmt: skip


def observation_row(o: ObservationRecord) -> tuple[Any, ...]:
    return (o.ts, o.entity, o.state, o.gfs, o.prs, o.fae, dump_evidence(o.evidence))


def action_result_row(r: ActionResultRecord) -> tuple[Any, ...]:
    return (r.ts, r.kind, r.target, r.actuator, r.status, r.detail, r.epoch, real(r.decided_at), r.attempt)


def notice_row(n: NoticeRecord) -> tuple[Any, ...]:
    return (n.ts, n.source, n.level, n.message)


def audit_row(a: AuditRecord) -> tuple[Any, ...]:
    return (a.ts, a.principal, a.client, a.method, a.path, a.status, a.count)


def operator_row(o: OperatorRecord) -> tuple[Any, ...]:
    return (o.ts, o.principal, o.verb, o.target, o.reason, real(o.until), o.detail)


def finding_row(f: FindingRecord) -> tuple[Any, ...]:
    return (f.ts, f.job, f.mode, f.finding)


# ---- rows to records -------------------------------------------------------------------------
def transition_of(row: Sequence[Any]) -> TransitionRecord:
    ts, ent, fs, to, gfs, prs, fae, reason, ev, epoch = row
    return TransitionRecord(ts, ent, fs, to, gfs, prs, fae, reason, load_evidence(ev), epoch)


def decision_of(row: Sequence[Any]) -> DecisionRecord:
    ts, ent, action, mode, reason, state, ev, epoch, cause, pc, pb = row
    return DecisionRecord(
        ts, ent, action, mode, reason, state, load_evidence(ev), epoch, cause, nan(pc), nan(pb)
    )


def outcome_of(row: Sequence[Any]) -> OutcomeRecord:
    ts, ent, act, at, c, b, note = row
    return OutcomeRecord(ts, ent, act, at, nan(c), nan(b), note)


def observation_of(row: Sequence[Any]) -> ObservationRecord:
    ts, ent, st, g, p, f, ev = row
    return ObservationRecord(ts, ent, st, g, p, f, load_evidence(ev))


def action_result_of(row: Sequence[Any]) -> ActionResultRecord:
    ts, kind, tgt, act, st, det, ep, dec, att = row
    return ActionResultRecord(ts, kind, tgt, act, st, det, ep, nan(dec), att)


def notice_of(row: Sequence[Any]) -> NoticeRecord:
    return NoticeRecord(*row)


def audit_of(row: Sequence[Any]) -> AuditRecord:
    return AuditRecord(*row)


def operator_of(row: Sequence[Any]) -> OperatorRecord:
    ts, who, verb, target, reason, until, detail = row
    return OperatorRecord(ts, who, verb, target, reason, nan(until), detail)


def gateway_spend_row(g: GatewaySpendRecord) -> tuple[Any, ...]:
    return (g.ts, g.key, g.tenant, g.period, g.tokens)


def finding_of(row: Sequence[Any]) -> FindingRecord:
    ts, job, mode, finding = row
    return FindingRecord(float(ts), str(job), str(mode), str(finding))


def gateway_spend_of(row: Sequence[Any]) -> GatewaySpendRecord:
    ts, key, tenant, period, tokens = row
    return GatewaySpendRecord(float(ts), str(key), str(tenant), float(period), int(tokens))


ROW_OF: dict[str, Callable[[Any], tuple[Any, ...]]] = {
    "transitions": transition_row, "decisions": decision_row, "outcomes": outcome_row,
    "observations": observation_row, "action_results": action_result_row, "notices": notice_row,
    "audit": audit_row, "operator": operator_row, "finding": finding_row, "gateway_spend": gateway_spend_row,
}  # fmt: skip
RECORD_OF: dict[str, Callable[[Sequence[Any]], Any]] = {
    "transitions": transition_of, "decisions": decision_of, "outcomes": outcome_of,
    "observations": observation_of, "action_results": action_result_of, "notices": notice_of,
    "audit": audit_of, "operator": operator_of, "finding": finding_of, "gateway_spend": gateway_spend_of,
}  # fmt: skip


# ---- queries ---------------------------------------------------------------------------------
def insert_sql(table: str, mark: str) -> str:
    cols = COLUMNS[table]
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join([mark] * len(cols))})"


def select_sql(table: str, where: str) -> str:
    return f"SELECT {', '.join(COLUMNS[table])} FROM {table}{where} ORDER BY ts, id"


def where(
    mark: str,
    entity: str | None,
    until: float | None,
    since: float | None,
    entity_columns: tuple[str, ...] = ("entity",),
    status: str | None = None,
) -> tuple[str, list[Any]]:
    """``entity`` matches any of ``entity_columns`` (decisions: the target or the cause)."""
    clauses: list[str] = []
    args: list[Any] = []
    if entity is not None:
        clauses.append("(" + " OR ".join(f"{c} = {mark}" for c in entity_columns) + ")")
        args += [entity] * len(entity_columns)
    if until is not None:
        clauses.append(f"ts <= {mark}")
        args.append(until)
    if since is not None:
        clauses.append(f"ts >= {mark}")
        args.append(since)
    if status is not None:
        clauses.append(f"status = {mark}")
        args.append(status)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


LAST_OBSERVATION = (
    "SELECT ts, entity, state, gfs, prs, fae, evidence FROM observations"
    " WHERE entity = {m} AND ts <= {m} ORDER BY ts DESC, id DESC LIMIT 1"
)
ENTITIES = (
    "SELECT entity FROM transitions UNION SELECT entity FROM observations UNION SELECT entity FROM decisions"
    " ORDER BY 1"
)
FINDING_JOBS = "SELECT DISTINCT job FROM finding ORDER BY 1"
GATEWAY_SPEND_TOTALS = (
    "SELECT key, tenant, period, sum(tokens), max(ts) FROM gateway_spend"
    " GROUP BY key, tenant, period ORDER BY 1, 3"
)
TIME_RANGE = (
    "SELECT min(lo), max(hi) FROM (SELECT min(ts) lo, max(ts) hi FROM transitions"
    " UNION ALL SELECT min(ts), max(ts) FROM observations UNION ALL SELECT min(ts), max(ts) FROM decisions) AS r"
)
