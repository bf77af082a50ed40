"""A journal whose store may be out of reach for a while (PostgreSQL restarting, failing over):
writes that cannot go through are kept, in order, and go with the next write that can.

The daemon writes twice a tick, the engine's output and then the actuators' results. Without
this, a database gone for a few seconds either stopped the replica (the engine's write raised) or
lost the record of a drain that had reached the cluster (the results' write raised), and the
next leader, not seeing it, drained or resumed the node a second time. Kept writes still pass
the journal's epoch fence when they go: a replica that stopped leading meanwhile cannot write
them. Reads go straight through (and raise while the store is away).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence

from seamguard.journal.base import Journal, JournalUnavailableError
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

log = logging.getLogger(__name__)
MAX_KEPT_RECORDS = 1_000_000  # past this the store has been away too long: the write raises


class BufferedJournal:
    def __init__(self, inner: Journal, max_kept: int = MAX_KEPT_RECORDS) -> None:
        self.inner = inner
        self.max_kept = max_kept
        self._kept: deque[tuple[str, tuple[Sequence[object], ...]]] = deque()
        self._kept_records = 0

    @property
    def kept_records(self) -> int:
        return self._kept_records

    def append(
        self,
        transitions: Sequence[TransitionRecord],
        decisions: Sequence[DecisionRecord],
        observations: Sequence[ObservationRecord] = (),
        outcomes: Sequence[OutcomeRecord] = (),
    ) -> None:
        self._write("append", (transitions, decisions, observations, outcomes))

    def append_actions(
        self,
        results: Sequence[ActionResultRecord],
        notices: Sequence[NoticeRecord] = (),
        audit: Sequence[AuditRecord] = (),
    ) -> None:
        self._write("actions", (results, notices, audit))

    def append_operator(self, records: Sequence[OperatorRecord]) -> None:
        self._write("operator", (records,))

    def append_findings(self, records: Sequence[FindingRecord]) -> None:
        self._write("findings", (records,))

    def append_gateway_spend(self, records: Sequence[GatewaySpendRecord]) -> None:
        self._write("gateway_spend", (records,))

    def _write(self, kind: str, batch: tuple[Sequence[object], ...]) -> None:
        size = sum(len(part) for part in batch)
        if size:
            self._kept.append((kind, batch))
            self._kept_records += size
        self._flush()

    def _flush(self) -> None:
        """Everything kept, oldest first, until the store refuses; what is left stays kept."""
        try:
            while self._kept:
                head_kind, head = self._kept[0]
                if head_kind == "append":
                    self.inner.append(*head)  # type: ignore[arg-type]
                elif head_kind == "operator":
                    self.inner.append_operator(*head)  # type: ignore[arg-type]
                elif head_kind == "findings":
                    self.inner.append_findings(*head)  # type: ignore[arg-type]
                elif head_kind == "gateway_spend":
                    self.inner.append_gateway_spend(*head)  # type: ignore[arg-type]
                else:
                    self.inner.append_actions(*head)  # type: ignore[arg-type]
                self._kept.popleft()
                self._kept_records -= sum(len(part) for part in head)
        except JournalUnavailableError as exc:
            if self._kept_records > self.max_kept:
                raise
            log.error(
                "journal out of reach, %d record(s) kept for the next write: %s", self._kept_records, exc
            )

    def ready(self) -> bool:
        """The store answers and nothing kept is left unwritten (kept writes go first)."""
        if not self.inner.ready():
            return False
        self._flush()
        return not self._kept

    # ---- straight through ----------------------------------------------------------------
    def action_results(
        self,
        target: str | None = None,
        until: float | None = None,
        since: float | None = None,
        status: str | None = None,
    ) -> list[ActionResultRecord]:
        return self.inner.action_results(target, until, since, status)

    def notices(self, until: float | None = None, since: float | None = None) -> list[NoticeRecord]:
        return self.inner.notices(until, since)

    def operator_actions(
        self, until: float | None = None, since: float | None = None
    ) -> list[OperatorRecord]:
        return self.inner.operator_actions(until, since)

    def outcomes(self, entity: str | None = None, until: float | None = None) -> list[OutcomeRecord]:
        return self.inner.outcomes(entity, until)

    def findings(
        self, job: str | None = None, until: float | None = None, since: float | None = None
    ) -> list[FindingRecord]:
        return self.inner.findings(job, until, since)

    def finding_jobs(self) -> list[str]:
        return self.inner.finding_jobs()

    def gateway_spend(self) -> list[GatewaySpendRecord]:
        return self.inner.gateway_spend()

    def transitions(
        self, entity: str | None = None, until: float | None = None, since: float | None = None
    ) -> list[TransitionRecord]:
        return self.inner.transitions(entity, until, since)

    def decisions(
        self, entity: str | None = None, until: float | None = None, since: float | None = None
    ) -> list[DecisionRecord]:
        return self.inner.decisions(entity, until, since)

    def last_observation(self, entity: str, at: float) -> ObservationRecord | None:
        return self.inner.last_observation(entity, at)

    def entities(self) -> list[str]:
        return self.inner.entities()

    def time_range(self) -> tuple[float, float] | None:
        return self.inner.time_range()

    def set_meta(self, key: str, value: str) -> None:
        self.inner.set_meta(key, value)

    def get_meta(self, key: str) -> str | None:
        return self.inner.get_meta(key)

    def close(self) -> None:
        self.inner.close()
