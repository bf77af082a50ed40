"""The daemon's own Prometheus metrics, served at ``GET /metrics`` (every metric: docs/metrics.md).

Each daemon owns its registry (tests run many daemons in one process; the global default registry
would mix them). Counters (transitions, actions, ticks) are incremented by ``Daemon.step``;
every gauge is read at scrape time from ``MetricsView``, a frozen snapshot the daemon replaces at
the end of each step, so a scrape never touches the engine, the safety layer or the dispatcher
while a step changes them. Series are per entity kind and state, per source, per actuator: a
fleet of 100,000 GPUs has as many series as one of eight.
"""

from __future__ import annotations

import math
from collections import Counter as TallyCounter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from seamguard.control.safety import SafetyLayer
from seamguard.ha.view import LeaderView
from seamguard.journal.records import ActionResultRecord, TransitionRecord
from seamguard.model.states import State
from seamguard.model.topology import KINDS, Topology
from seamguard.telemetry.sources.push import PushSource

BREAKER_STATES = ("closed", "open", "half_open")
BUDGETS = ("fleet", "hour", "domain")
# Ticks take milliseconds on a small fleet and seconds at 100,000 GPUs; a tick is 10 s by default.
TICK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class SourceHealth:
    name: str
    up: bool  # the last collect returned (did not raise)
    notices: int  # its notices active now


OPERATOR_CONTROLS = ("pause", "pin", "maintenance")


@dataclass(frozen=True)
class MetricsView:
    """Everything a scrape reports as a gauge, as of the last step."""

    now: float  # the last tick's time (-inf before the first)
    states: Mapping[tuple[str, str], int]  # (kind, state) -> n; each kind present, every state
    sources: tuple[SourceHealth, ...]
    storm_reason: str  # "" when the brake is off
    budget_used: Mapping[str, int]  # fleet / hour / domain (the fullest domain)
    budget_limit: Mapping[str, int]
    budget_domain: str  # the fullest domain's label ("" when no domain is watched)
    quarantined: int
    queued: int
    breakers: Mapping[str, str]  # enforcing actuator -> closed | open | half_open
    acting: bool = False  # some actuator enforces or waits for approval (else advise only)
    controls: Mapping[str, int] = field(default_factory=dict)  # pause / pin / maintenance -> in force
    awaiting: int = 0  # actions waiting for an operator's approval
    # job -> (failure mode, GPU-h/h lost, healthy GPU-s/s its suspect parts hold back (NaN: none), at risk)
    modes: Mapping[str, tuple[str, float, float, bool]] = field(default_factory=dict)


class _ViewCollector(Collector):
    def __init__(self, view: Callable[[], MetricsView], push: PushSource | None,
                 leadership: Callable[[], LeaderView] | None) -> None:  # fmt: skip
        self._view = view
        self._push = push
        self._leadership = leadership

    def collect(self) -> Iterable[Metric]:
        v = self._view()
        states = GaugeMetricFamily(
            "seamguard_entities", "Entities per kind and state", labels=["kind", "state"]
        )
        for (kind, state), n in sorted(v.states.items()):
            states.add_metric([kind, state], n)
        yield states
        yield GaugeMetricFamily(
            "seamguard_last_tick_timestamp_seconds",
            "Unix time of the last tick (0 before the first)",
            value=v.now if math.isfinite(v.now) else 0.0,
        )
        up = GaugeMetricFamily(
            "seamguard_source_up", "1 if the source's last collect returned", labels=["source"]
        )
        active = GaugeMetricFamily(
            "seamguard_source_notices_active", "Source problems active now", labels=["source"]
        )
        for s in v.sources:
            up.add_metric([s.name], 1.0 if s.up else 0.0)
            active.add_metric([s.name], s.notices)
        yield up
        yield active
        if self._push is not None:  # read now, not as of the last step: pushes land between ticks
            yield GaugeMetricFamily(
                "seamguard_push_queue_rows", "Pushed rows waiting for the next tick",
                value=self._push.queued_rows,
            )  # fmt: skip
            yield GaugeMetricFamily(
                "seamguard_push_queue_capacity_rows", "Rows the push queue holds",
                value=self._push.capacity_rows,
            )  # fmt: skip
        yield GaugeMetricFamily(
            "seamguard_storm_brake_engaged", "1 while the storm brake holds every action to advice",
            value=1.0 if v.storm_reason else 0.0,
        )  # fmt: skip
        info = InfoMetricFamily("seamguard_storm_brake", "Why the storm brake is on (empty when off)")
        info.add_metric([], {"reason": v.storm_reason})
        yield info
        used = GaugeMetricFamily(
            "seamguard_budget_used_nodes", "Nodes counted against each budget", labels=["budget"]
        )
        limit = GaugeMetricFamily("seamguard_budget_limit_nodes", "Each budget's bound", labels=["budget"])
        for b in BUDGETS:
            used.add_metric([b], v.budget_used.get(b, 0))
            limit.add_metric([b], v.budget_limit.get(b, 0))
        yield used
        yield limit
        domain = InfoMetricFamily("seamguard_budget_fullest_domain", "The domain nearest its budget")
        domain.add_metric([], {"domain": v.budget_domain})
        yield domain
        yield GaugeMetricFamily(
            "seamguard_quarantined_nodes", "Nodes seamguard holds out of service", value=v.quarantined
        )
        yield GaugeMetricFamily(
            "seamguard_queued_actions", "Quarantines a budget refused, waiting", value=v.queued
        )
        breakers = GaugeMetricFamily(
            "seamguard_actuator_breaker", "1 for each enforcing actuator's breaker state",
            labels=["actuator", "state"],
        )  # fmt: skip
        for name, state in sorted(v.breakers.items()):
            for b in BREAKER_STATES:
                breakers.add_metric([name, b], 1.0 if b == state else 0.0)
        yield breakers
        yield GaugeMetricFamily("seamguard_acting", "1 when some actuator carries actions out, 0 in advise mode",
                                value=1.0 if v.acting else 0.0)  # fmt: skip
        controls = GaugeMetricFamily(
            "seamguard_operator_controls",
            "Operator controls in force (docs/operating.md)",
            labels=["control"],
        )
        for control in OPERATOR_CONTROLS:
            controls.add_metric([control], v.controls.get(control, 0))
        yield controls
        yield GaugeMetricFamily(
            "seamguard_awaiting_approval",
            "Actions an approve-mode actuator holds for a person",
            value=v.awaiting,
        )
        yield from _diagnosis_metrics(v.modes)
        if self._leadership is not None:  # read now: leadership changes between ticks
            yield from _leadership_metrics(self._leadership())


def _diagnosis_metrics(modes: Mapping[str, tuple[str, float, float, bool]]) -> Iterable[Metric]:
    """Each running job's failure mode now and what it costs (docs/diagnosis.md)."""
    mode = GaugeMetricFamily("seamguard_job_failure_mode", "1 for the failure mode each running job is in now",
                             labels=["job", "mode"])  # fmt: skip
    loss = GaugeMetricFamily("seamguard_job_loss_gpu_hours_per_hour", "GPU-hours per hour its failure mode costs",
                             labels=["job"])  # fmt: skip
    held = GaugeMetricFamily("seamguard_job_held_back_gpu_seconds_per_second",
                             "Healthy GPU-seconds per second the parts its failure mode points at hold back",
                             labels=["job"])  # fmt: skip
    risk = GaugeMetricFamily("seamguard_job_at_risk",
                             "1 while a part the job depends on is unwell but its pace is not hurt yet",
                             labels=["job"])  # fmt: skip
    for job, (m, rate, held_back, at_risk) in sorted(modes.items()):
        mode.add_metric([job, m], 1.0)
        loss.add_metric([job], rate)
        held.add_metric([job], 0.0 if math.isnan(held_back) else held_back)
        risk.add_metric([job], float(at_risk))
    yield from (mode, loss, held, risk)


def _leadership_metrics(lead: LeaderView) -> Iterable[Metric]:
    """This replica's view of the leadership as gauges (docs/ha.md)."""
    yield GaugeMetricFamily(
        "seamguard_ha_leading", "1 while this replica leads and may act", value=float(lead.leading)
    )
    yield GaugeMetricFamily(
        "seamguard_ha_epoch", "The leadership's epoch (this replica's when leading; 0: none known)",
        value=float(lead.epoch),
    )  # fmt: skip
    yield GaugeMetricFamily(
        "seamguard_ha_acting_left_seconds", "How long the leader may still act without a renewal (0: not leading)",
        value=lead.acting_left_s,
    )  # fmt: skip
    lag = GaugeMetricFamily(
        "seamguard_ha_replica_lag_seconds", "Each live replica's engine behind the newest tick announced",
        labels=["replica"],
    )  # fmt: skip
    for name, seconds in sorted(lead.lag_s().items()):
        lag.add_metric([name], seconds)
    yield lag
    info = InfoMetricFamily("seamguard_ha", "This replica and the leader it sees")
    info.add_metric([], {"me": lead.me, "leader": lead.leader})
    yield info


class DaemonMetrics:
    """One daemon's registry: its counters, and the collector reading ``view`` at scrape time."""

    def __init__(
        self,
        view: Callable[[], MetricsView],
        push: PushSource | None = None,
        leadership: Callable[[], LeaderView] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.transitions = Counter(
            "seamguard_transitions", "State transitions", ["from_state", "to_state"], registry=self.registry
        )
        self.actions = Counter(
            "seamguard_actions",
            "Action outcomes (the safety layer's own under actuator=safety)",
            ["kind", "actuator", "outcome"],
            registry=self.registry,
        )
        self.ticks = Counter("seamguard_ticks", "Ticks run", registry=self.registry)
        self.tick_seconds = Histogram(
            "seamguard_tick_duration_seconds", "Wall time of one tick", buckets=TICK_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.registry.register(_ViewCollector(view, push, leadership))

    def observe_step(
        self,
        seconds: float,
        transitions: Sequence[TransitionRecord],
        actions: Sequence[ActionResultRecord],
    ) -> None:
        self.ticks.inc()
        self.tick_seconds.observe(seconds)
        # Grouped first: a storm's thousands of transitions are a few label sets.
        for (a, b), n in TallyCounter((t.from_state, t.to_state) for t in transitions).items():
            self.transitions.labels(a, b).inc(n)
        for (kind, actuator, outcome), n in TallyCounter(
            (r.kind, r.actuator, r.status) for r in actions
        ).items():
            self.actions.labels(kind, actuator, outcome).inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def metrics_router(metrics: DaemonMetrics) -> APIRouter:
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    def scrape() -> Response:
        """Prometheus text exposition of this daemon's metrics."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router


def daemon_view(
    topology: Topology,
    state: npt.NDArray[np.int64],
    now: float,
    active: Iterable[tuple[str, str, str]],
    sources: Sequence[str],
    safety: SafetyLayer,
    breakers: Mapping[str, str],
) -> MetricsView:
    """The gauges' snapshot, taken by the daemon's own thread at the end of a step from its parts
    (``state``: each entity's, ``active``: the notices active now as (source, where, message)):
    one bincount over every entity, one sparse product for the domains."""
    n_states = len(State)
    counts = np.bincount(
        topology.kind_code.astype(np.int64) * n_states + state, minlength=len(KINDS) * n_states
    ).reshape(len(KINDS), n_states)
    states = {
        (kind.value, State(j).label): int(counts[i, j])
        for i, kind in enumerate(KINDS)
        if counts[i].any()
        for j in range(n_states)
    }
    notices = list(active)
    failing = {src for src, where, msg in notices if where == "collect" and msg.startswith("failed")}
    tally = TallyCounter(src for src, _, _ in notices)
    health = tuple(SourceHealth(name, name not in failing, tally[name]) for name in sources)
    budgets = safety.budgets
    held = int(budgets.quarantined.sum())
    used = {"fleet": held, "hour": budgets.started_last_hour(now) if math.isfinite(now) else 0}
    limit = {"fleet": budgets.fleet_bound(), "hour": budgets.hour_bound()}
    domain = ""
    if budgets.domain_allowed.size:
        in_domain = budgets.domain_counts()
        d = int(np.argmax(in_domain / np.maximum(budgets.domain_allowed, 1)))
        used["domain"], limit["domain"] = int(in_domain[d]), int(budgets.domain_allowed[d])
        domain = budgets.domain_labels[d]
    return MetricsView(
        now=now,
        states=states,
        sources=health,
        storm_reason=safety.brake.reason if safety.brake.engaged else "",
        budget_used=used,
        budget_limit=limit,
        budget_domain=domain,
        quarantined=len(safety.quarantined()),
        queued=len(safety.queued()),
        breakers=dict(breakers),
    )
