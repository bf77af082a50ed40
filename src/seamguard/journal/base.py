"""The journal interface the controller writes to and ``explain`` reads from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

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


class JournalUnavailableError(RuntimeError):
    """The journal's store could not be reached (a database restarting): nothing of the write
    that raised it was recorded, and the caller may write the same records again."""


class Journal(Protocol):
    def append(
        self,
        transitions: Sequence[TransitionRecord],
        decisions: Sequence[DecisionRecord],
        observations: Sequence[ObservationRecord] = (),
        outcomes: Sequence[OutcomeRecord] = (),
    ) -> None:
        """Record one tick's output atomically: all of it or none of it."""
        ...

    def append_actions(
        self,
        results: Sequence[ActionResultRecord],
        notices: Sequence[NoticeRecord] = (),
        audit: Sequence[AuditRecord] = (),
    ) -> None:
        """Record what the actuators did (the safety layer's notices, the API's audit) atomically."""
        ...

    def append_operator(self, records: Sequence[OperatorRecord]) -> None:
        """Operator controls (``ops``), atomically, as they are given."""
        ...

    def operator_actions(
        self, until: float | None = None, since: float | None = None
    ) -> list[OperatorRecord]: ...

    def append_findings(self, records: Sequence[FindingRecord]) -> None:
        """Jobs' diagnosis findings (``diagnose.findings_log``), atomically."""
        ...

    def findings(
        self, job: str | None = None, until: float | None = None, since: float | None = None
    ) -> list[FindingRecord]: ...

    def finding_jobs(self) -> list[str]: ...

    def append_gateway_spend(self, records: Sequence[GatewaySpendRecord]) -> None:
        """The admission gateway's settled tokens (``gateway.store``), atomically."""
        ...

    def gateway_spend(self) -> list[GatewaySpendRecord]: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def ready(self) -> bool:
        """Can a write go through now? Asked before acting: a replica whose journal is away acts on
        nothing, so that nothing reaches the cluster that the journal could not record."""
        ...

    def get_meta(self, key: str) -> str | None: ...

    def close(self) -> None: ...

    def action_results(
        self,
        target: str | None = None,
        until: float | None = None,
        since: float | None = None,
        status: str | None = None,
    ) -> list[ActionResultRecord]: ...

    def notices(self, until: float | None = None, since: float | None = None) -> list[NoticeRecord]: ...

    def outcomes(self, entity: str | None = None, until: float | None = None) -> list[OutcomeRecord]: ...

    def transitions(
        self, entity: str | None = None, until: float | None = None, since: float | None = None
    ) -> list[TransitionRecord]: ...

    def decisions(
        self, entity: str | None = None, until: float | None = None, since: float | None = None
    ) -> list[DecisionRecord]:
        """Decisions on ``entity`` or caused by it (a GPU's state change drains its node)."""
        ...

    def last_observation(self, entity: str, at: float) -> ObservationRecord | None: ...

    def entities(self) -> list[str]: ...

    def time_range(self) -> tuple[float, float] | None: ...
