"""The journal's appends and queries, once for both SQL journals: each gives its placeholder, how
it runs a statement (``_rows``) and how it writes a batch in one transaction (``_insert``). A base
class rather than functions because the interface (``journal.base.Journal``) is a set of methods
every caller (the controller, ``explain``, the safety layer's restore, the HTTP API) already uses
on either journal."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from seamguard.journal import rows
from seamguard.journal.records import (
    ActionResultRecord,
    AuditRecord,
    DecisionRecord,
    FindingRecord,
    GatewaySpendRecord,
    NoticeRecord,
    ObservationRecord,
    OperatorRecord,
    OutcomeRecord,
    TransitionRecord,
)


class SqlJournal:
    MARK = "?"

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        raise NotImplementedError

    def _insert(self, batches: Mapping[str, Sequence[Any]]) -> None:
        """Each table's records (``rows.TABLES``) in one transaction: all of them or none."""
        raise NotImplementedError

    def append(
        self,
        transitions: Sequence[TransitionRecord],
        decisions: Sequence[DecisionRecord],
        observations: Sequence[ObservationRecord] = (),
        outcomes: Sequence[OutcomeRecord] = (),
    ) -> None:
        """One tick's engine output, atomically."""
        self._insert({"transitions": transitions, "decisions": decisions, "outcomes": outcomes,
                      "observations": observations})  # fmt: skip

    def append_actions(
        self,
        results: Sequence[ActionResultRecord],
        notices: Sequence[NoticeRecord] = (),
        audit: Sequence[AuditRecord] = (),
    ) -> None:
        """Action outcomes, notices and the HTTP API's audit tally, atomically."""
        self._insert({"action_results": results, "notices": notices, "audit": audit})

    def _select(self, table: str, where: tuple[str, list[Any]]) -> list[Any]:
        clause, args = where
        return [rows.RECORD_OF[table](r) for r in self._rows(rows.select_sql(table, clause), args)]

    def transitions(
        self, entity: str | None = None, until: float | None = None, since: float | None = None
    ) -> list[TransitionRecord]:
        return self._select("transitions", rows.where(self.MARK, entity, until, since))

    def decisions(
        self, entity: str | None = None, until: float | None = None, since: float | None = None
    ) -> list[DecisionRecord]:
        """Decisions on ``entity`` or caused by it (a GPU's state change drains its node)."""
        return self._select("decisions", rows.where(self.MARK, entity, until, since, ("entity", "cause")))

    def outcomes(self, entity: str | None = None, until: float | None = None) -> list[OutcomeRecord]:
        return self._select("outcomes", rows.where(self.MARK, entity, until, None))

    def action_results(
        self,
        target: str | None = None,
        until: float | None = None,
        since: float | None = None,
        status: str | None = None,
    ) -> list[ActionResultRecord]:
        """Action outcomes on ``target`` (all targets when None), oldest first."""
        return self._select(
            "action_results", rows.where(self.MARK, target, until, since, ("target",), status)
        )

    def notices(self, until: float | None = None, since: float | None = None) -> list[NoticeRecord]:
        return self._select("notices", rows.where(self.MARK, None, until, since))

    def audit(self, until: float | None = None, since: float | None = None) -> list[AuditRecord]:
        """The HTTP API's audit rows (``service.audit``), oldest first."""
        return self._select("audit", rows.where(self.MARK, None, until, since))

    def operator_actions(
        self, until: float | None = None, since: float | None = None
    ) -> list[OperatorRecord]:
        """Operator controls (pause, pin, maintenance, approvals), oldest first: who, what, why."""
        return self._select("operator", rows.where(self.MARK, None, until, since))

    def append_operator(self, records: Sequence[OperatorRecord]) -> None:
        """Operator controls, atomically (written as they are given, not with a tick's output)."""
        self._insert({"operator": records})

    def append_findings(self, records: Sequence[FindingRecord]) -> None:
        """Jobs' diagnosis findings, atomically (``diagnose.findings_log`` says which and when)."""
        self._insert({"finding": records})

    def findings(
        self, job: str | None = None, until: float | None = None, since: float | None = None
    ) -> list[FindingRecord]:
        """A job's findings (every job's when None), oldest first."""
        return self._select("finding", rows.where(self.MARK, job, until, since, ("job",)))

    def finding_jobs(self) -> list[str]:
        """The jobs that have a finding in the journal, by name."""
        return [str(r[0]) for r in self._rows(rows.FINDING_JOBS)]

    def append_gateway_spend(self, records: Sequence[GatewaySpendRecord]) -> None:
        """The admission gateway's settled tokens since its previous write, atomically."""
        self._insert({"gateway_spend": records})

    def gateway_spend(self) -> list[GatewaySpendRecord]:
        """Tokens settled per (key, tenant, period), summed; ``ts`` is the newest write's."""
        return [
            GatewaySpendRecord(float(ts), str(key), str(tenant), float(period), int(tokens))
            for key, tenant, period, tokens, ts in self._rows(rows.GATEWAY_SPEND_TOTALS)
        ]

    def observations(
        self, entity: str | None = None, until: float | None = None, limit: int | None = None
    ) -> list[ObservationRecord]:
        found: list[ObservationRecord] = self._select(
            "observations", rows.where(self.MARK, entity, until, None)
        )
        return found[-limit:] if limit is not None else found

    def last_observation(self, entity: str, at: float) -> ObservationRecord | None:
        found = self._rows(rows.LAST_OBSERVATION.format(m=self.MARK), (entity, at))
        return rows.observation_of(found[0]) if found else None

    def entities(self) -> list[str]:
        return [str(r[0]) for r in self._rows(rows.ENTITIES)]

    def time_range(self) -> tuple[float, float] | None:
        found = self._rows(rows.TIME_RANGE)
        if not found or found[0][0] is None:
            return None
        return float(found[0][0]), float(found[0][1])
