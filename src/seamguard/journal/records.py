"""What the journal keeps: transitions, decisions and score observations, with their evidence.

Plain frozen records so that the controller, the journal backends and ``explain`` share one
vocabulary; states are stored by their labels (``healthy``, ``degraded``...) so a journal
stays readable with nothing but sqlite3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class EvidenceItem:
    detector: str  # level, trend, peer, counter, flag, throttle, xid, heartbeat, hard, economics
    signal: str
    evidence: float  # [0, 1]
    text: str  # the sentence an operator reads


@dataclass(frozen=True)
class TransitionRecord:
    ts: float
    entity: str
    from_state: str
    to_state: str
    gfs: float
    prs: float
    fae: float
    reason: str
    evidence: tuple[EvidenceItem, ...] = ()
    epoch: int = 0


@dataclass(frozen=True)
class DecisionRecord:
    ts: float
    entity: str  # the target of the action (a node to drain, a job to checkpoint...)
    action: str
    mode: str  # advise | act
    reason: str
    state: str  # the state whose entry caused the decision
    evidence: tuple[EvidenceItem, ...] = ()
    epoch: int = 0
    cause: str = ""  # the entity whose state change led to it (a drained node's GPU, a job's CDU)
    predicted_cost_gpu_h: float = math.nan  # what taking it costs (NaN: not valued)
    predicted_benefit_gpu_h: float = math.nan  # the loss it is expected to remove over the horizon
    # kind-specific, passed on to the action (("weight", "64") for set_weight); not a journal column:
    # the reason says it in words
    params: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class OutcomeRecord:
    """What a valued decision turned out to cost and buy, journaled once it is known."""

    ts: float
    entity: str
    action: str
    decided_at: float  # the decision's ts
    realised_cost_gpu_h: float  # NaN: not observable from telemetry
    realised_benefit_gpu_h: float
    note: str


@dataclass(frozen=True)
class ObservationRecord:
    """A periodic score snapshot of a non-healthy entity: ``explain`` answers from it between transitions."""

    ts: float
    entity: str
    state: str
    gfs: float
    prs: float
    fae: float
    evidence: tuple[EvidenceItem, ...] = ()


@dataclass(frozen=True)
class ActionResultRecord:
    """One outcome of one action: carried out, already so, refused (by the cluster or a safety
    budget), failed (with its attempt), given up, advised, held for recovery or cancelled.

    ``actuator`` is the backend that answered, or ``safety`` when the safety layer itself decided
    (a budget refusal, a storm brake, a recovery hold, a cancelled queued action)."""

    ts: float
    kind: str  # the action kind: drain_node, resume_node, restore_admission...
    target: str
    actuator: str
    status: str  # an ActionStatus value
    detail: str
    epoch: int = 0
    decided_at: float = math.nan
    attempt: int = 0  # 1 for the first call to the actuator; 0 when none was made


@dataclass(frozen=True)
class NoticeRecord:
    """Something an operator must know that is not an action: a storm brake set or released."""

    ts: float
    source: str  # safety, guard, dispatch...
    level: str  # info | warning | error
    message: str


@dataclass(frozen=True)
class AuditRecord:
    """Requests to the HTTP API in one tick that changed state or were refused, counted per key.

    ``principal`` is the token's name, or ``anonymous`` for a refused request without a valid
    token (then ``client`` is its address); ``(overflow)`` counts requests past the tally's cap."""

    ts: float
    principal: str
    client: str  # address of a refused anonymous caller; "" for an authenticated one
    method: str
    path: str
    status: int
    count: int


@dataclass(frozen=True)
class OperatorRecord:
    """One operator control, as given through the API, the CLI or the console (``ops``).

    ``verb`` is what was asked (pause, resume, pin, unpin, maintenance, end_maintenance, approve,
    reject); ``target`` the scope (``fleet``, an entity id such as ``rack/r03``, or an action key
    for approve and reject); ``until`` when it lapses by itself (NaN: when lifted, or never for
    approve/reject); ``detail`` what it carries (a pinned state) or what came of it."""

    ts: float
    principal: str
    verb: str
    target: str
    reason: str
    until: float
    detail: str


MAX_FINDING_JSON = 16 * 1024  # bytes of a finding's JSON past which it is refused: one record stays small
MAX_FINDING_NAME = 1024  # its job's name and its mode


@dataclass(frozen=True)
class FindingRecord:
    """A running job's diagnosis (``diagnose.modes.Finding``) as journaled, so that its failure
    mode can be asked for later (``seamguard diagnose``). ``mode`` is kept as a column to query;
    ``finding`` is the finding whole (``Finding.to_json()`` as JSON text), so that fields a finding
    gains later are journaled without a new column. Bounded (``MAX_FINDING_JSON`` bytes of
    JSON, ``MAX_FINDING_NAME`` of job and mode): a larger one is refused, naming the job."""

    ts: float
    job: str
    mode: str  # a ``diagnose.modes.Mode`` value: healthy, hang, straggler...
    finding: str

    def __post_init__(self) -> None:
        if max(len(self.job), len(self.mode)) > MAX_FINDING_NAME:
            raise ValueError(
                f"finding of job {self.job[:200]!r}: a job name or mode longer than the {MAX_FINDING_NAME:,} "
                "characters one journal record may hold"
            )
        size = len(self.finding.encode("utf-8", "surrogatepass"))
        if size > MAX_FINDING_JSON:
            raise ValueError(
                f"finding of job {self.job[:200]!r}: {size:,} bytes of JSON, more than "
                f"the {MAX_FINDING_JSON:,} one journal record may hold"
            )


@dataclass(frozen=True)
class GatewaySpendRecord:
    """Tokens the admission gateway (``seamguard gateway``) settled for one key in one budget
    period since its previous write: the ledger that makes spent tokens survive a restart. Rows
    are increments, summed per (key, period) when the gateway starts; ``ts`` is when they were
    written, so the newest row of a key is also when it last spent (zombie-key detection).
    ``period`` is the unix start of the budget's period (0 for a fixed allowance)."""

    ts: float
    key: str  # the key's name, never the key
    tenant: str
    period: float
    tokens: int
