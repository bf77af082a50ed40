"""The containment stage: each quarantine that would take capacity out is valued before it is proposed.

The planner turns a gray quarantine into ``island_domain`` (a rack, CDU, row, PDU),
``drain_node`` (a node, or a GPU's or uplink's node) or ``disable_link`` (an uplink: it takes
its node out like a drain), and a gray leaf switch, from ``degraded`` on, into ``isolate_switch``,
by policy. This stage values each of them
against what it costs now (``economics.containment``: the spare nodes the scheduler really has,
the restarts forced, the capacity held idle, the fault's expected duration, against the slowdown
and failure risk of tolerating it) and replaces it with the cheapest option's actions:

* island: the decision stands, its reason extended with the valuation;
* move the critical job(s): ``drain_node`` on those jobs' nodes in the domain (their ranks move
  to spares; the safety layer budgets and releases them under the domain's cause), and
  ``restrict_admission`` on the cause;
* checkpoint now: ``checkpoint_now`` on every job under the domain, and ``restrict_admission``;
* tolerate: ``restrict_admission`` on the cause only.

A tolerated quarantine is valued again every ``economics.revalue_s`` while it lasts (``revalue``):
spares come back when a domain cools, a job ends or the safety layer releases a node it held
(``EngineView.held_nodes``: held nodes are no spares).

The failure-amplification firewall: a gray leaf under synchronous jobs holds back every rank of
them, most of them healthy, for as long as it lasts. Its valuation reads what it costs each job
from the job's own step (``control.fabric_pace``: no rank's step shows a slow collective), and
its options are the same: move the critical job(s)' ranks under the leaf to spares on other
leaves (a synchronization island: the job restarts once, then runs at full pace), checkpoint
now, or tolerate; the whole leaf's isolation only where that is cheapest. A degraded leaf is
valued again every ``revalue_s`` too: a ramping congestion costs more as it grows.

A node's quarantine under a domain that is itself gray (a rack, CDU, PDU, row or leaf at
``degraded`` or worse) is the domain's condition showing on one of its nodes: a CDU whose water
warms makes every GPU on it hotter than its job's peers. Draining those nodes one by one would
restart the job once per node and buy little while the rest of the domain holds it back, so the
node is tolerated (``restrict_admission``) and the domain's own quarantine, valued as a whole,
decides. (Per-GPU scores cannot tell a part worse than its domain from one its domain drags
along: each node's hottest GPU crosses the threshold in turn, well above the domain's median.)

A ``failed`` entity is never valued: its node is drained, whatever it costs; nor is one that hard
evidence holds at quarantine (an XID whose catalog entry asks for a reset). A domain that runs
no work is not islanded: its quarantine state already keeps new work out while the fault lasts,
and an island would only hold its free nodes past it (``restrict_admission`` instead). An idle
node's drain stands: it forces nothing, and the safety layer's hold on a bad part is the point.

A domain whose jobs do not all report their pace (``gpu.step_time_s``) this tick is not valued:
blind to the slowdown, the valuation would always tolerate, so the policy's drain or island
stands, and says why. That includes a job that is down (crashed, restarting): how hot its ranks
would run when it comes back is what the island guards against, and it cannot be read now.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace

import numpy as np
import numpy.typing as npt

from seamguard.control.containment_view import (
    EngineView as EngineView,  # re-exported: the controller and revalue build it from here
)
from seamguard.control.containment_view import (
    duration_s,
    gpu_trip_in,
    job_figures,
    paced,
    part_excess,
    slowdown_now,
)
from seamguard.control.spares import spares_by_class
from seamguard.control.thermal_trip import domain_heats, due_to_act, trip_note
from seamguard.economics.containment import Domains, Jobs, Option, Valuation, value_containment
from seamguard.journal.records import DecisionRecord
from seamguard.model.action_kinds import ActionKind
from seamguard.model.entities import EntityKind
from seamguard.model.states import State
from seamguard.model.topology import Topology

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
# Actions that take running work's capacity out: a gray uplink's disable takes its node out like a drain.
CONTAINING = frozenset(
    {ActionKind.ISLAND_DOMAIN.value, ActionKind.ISOLATE_SWITCH.value, ActionKind.DRAIN_NODE.value,
     ActionKind.DISABLE_LINK.value}
)  # fmt: skip
WHOLE_DOMAIN = frozenset({ActionKind.ISLAND_DOMAIN.value, ActionKind.ISOLATE_SWITCH.value})
_QUARANTINE = State.QUARANTINE.label
GRAY_DOMAIN = (State.DEGRADED, State.RECOVERY_UNSAFE, State.QUARANTINE, State.HARMFUL)
# A leaf is valued from its first gray state on: it slows its synchronous jobs from then.
_GRAY_LEAF = frozenset(s.label for s in GRAY_DOMAIN)


def valued(d: DecisionRecord) -> bool:
    """A quarantine's drain, disable or island; a leaf's isolation from degraded on."""
    if d.action == ActionKind.ISOLATE_SWITCH.value:
        return d.state in _GRAY_LEAF
    return d.action in CONTAINING and d.state == _QUARANTINE


def still_weighed(topo: Topology, states: IntArray) -> BoolArray:
    """Per entity, whether a tolerance of it can still be valued again: in quarantine, or a leaf
    still gray (``Controller`` keeps its tolerated set to these)."""
    leaf = np.zeros(states.size, dtype=bool)
    leaf[topo.members[EntityKind.SWITCH]] = True
    gray = np.isin(states, [int(s) for s in GRAY_DOMAIN])
    out: BoolArray = (states == int(State.QUARANTINE)) | (leaf & gray)
    return out


def tolerated_by(
    topo: Topology, before: Sequence[DecisionRecord], after: Sequence[DecisionRecord]
) -> IntArray:
    """The entities (global indices) whose quarantine this stage kept in service: every
    ``restrict_admission`` it wrote in place of a drain, an island or a disable. Their admission
    follows ``degraded`` (new work avoids them, a job restarting may still use them) until they
    leave quarantine: denying them outright would hold idle the capacity the valuation chose not
    to take out."""
    had = {(d.entity, d.action) for d in before}
    restrict = ActionKind.RESTRICT_ADMISSION.value
    kept = {topo.lookup(d.entity) for d in after if d.action == restrict and (d.entity, restrict) not in had}
    return np.array(sorted(g for g in kept if g is not None), dtype=np.int64)


def _forced(topo: Topology, forced: BoolArray | None, d: DecisionRecord) -> bool:
    """Hard evidence (an XID that asks for a reset) holds the cause out: acted on, not valued."""
    cause = topo.lookup(d.cause or d.entity)
    return forced is not None and cause is not None and bool(forced[cause])


def contain(
    decisions: Sequence[DecisionRecord], view: EngineView, *, value_blind: bool = True
) -> list[DecisionRecord]:
    """The decisions with every gray quarantine replaced by its cheapest containment.
    ``value_blind``: a domain whose jobs report no pace is valued as if they stalled, or keeps the
    policy's action when the view has no step times at all (False: it is dropped, as a
    re-valuation does: what was tolerated stays so until it can be read)."""
    topo = view.topology
    weighed = [valued(d) and not _forced(topo, view.forced, d) for d in decisions]
    decisions, weighed = _defer_to_gray_domains(decisions, weighed, view)
    picked = [i for i, w in enumerate(weighed) if w]
    if not picked:
        return list(decisions)
    keys: dict[tuple[int, int], int] = {}  # (cause, domain) -> row
    for i in picked:
        d = decisions[i]
        domain = topo.lookup(d.entity)
        if domain is None:
            raise ValueError(
                f"containment: decision {d.action} names {d.entity!r}, which is not in the topology"
            )
        cause = topo.lookup(d.cause) if d.cause else domain
        keys.setdefault((domain if cause is None else cause, domain), len(keys))
    rows = list(keys)
    jobs, domains, nodes, columns = _situation(view, rows)
    # Where pace is reported, a job that reports none (down, restarting, hung) is valued as if the
    # fault stalled it: the worst it could cost. Containment still wins wherever spares take its
    # work; where there are none, taking the domain out would stop the job outright, which no
    # slowdown costs more. Where no pace is reported at all, the policy's action stands.
    unpaced = (domains.in_nodes > 0) & ~paced(view)[columns][None, :]
    blind = [", ".join(f"job/{topo.jobs[j].job}" for j in columns[row].tolist()) for row in unpaced]
    domains = replace(domains, slowdown=np.where(unpaced, 1.0, domains.slowdown))
    val = value_sharing_spares(jobs, domains)
    existing = {(d.entity, d.action, d.cause) for d, w in zip(decisions, weighed, strict=True) if not w}
    out: list[DecisionRecord] = []
    for d, w in zip(decisions, weighed, strict=True):
        if not w:
            out.append(d)
            continue
        domain = topo.lookup(d.entity)
        assert domain is not None
        cause = topo.lookup(d.cause) if d.cause else domain
        k = keys[(domain if cause is None else cause, domain)]
        if not domains.in_nodes[k].any() and d.action not in WHOLE_DOMAIN:
            out.append(d)  # an idle node's drain forces nothing: it stands (a bad part is held)
            continue
        if not domains.in_nodes[k].any():
            # No work on it: nothing to move. Its state already denies new work while the fault
            # lasts; islanding would only hold its free nodes past it, for the recovery delay.
            choice, text = (
                Option.TOLERATE,
                "no work on it: its state keeps new work out, islanding would hold its free nodes past the fault",
            )
        elif blind[k] and (view.step_time is None or not value_blind):
            if value_blind:  # no pace reported anywhere: blind, a valuation would always tolerate
                out.append(replace(d, reason=f"{d.reason}; not valued: no step time is reported"))
            continue
        else:
            choice, text = Option(int(val.choice[k])), describe(topo.ids[domain], val, domains, k)
            text += trip_note(view.config, topo, gpu_trip_in(view), nodes[k])
            if blind[k]:
                text = f"{text} ({blind[k]} report no step time: valued as stalled)"
        for new in _rewrite(d, choice, text, view, nodes[k], columns, val.moved[k]):
            key = (new.entity, new.action, new.cause)
            if key not in existing:
                existing.add(key)
                out.append(new)
    return out


def gray_domain_of(view: EngineView, node: int) -> int | None:
    """The first domain above ``node`` (rack, CDU, PDU, row, leaf) that is gray now, or None."""
    topo = view.topology
    rack = int(topo.node_rack[node])
    above = (
        (EntityKind.RACK, rack),
        (EntityKind.CDU, int(topo.rack_cdu[rack])),
        (EntityKind.PDU, int(topo.node_pdu[node])),
        (EntityKind.ROW, int(topo.rack_row[rack])),
        (EntityKind.SWITCH, int(topo.node_leaf[node])),
    )
    gray = {int(s) for s in GRAY_DOMAIN}
    for kind, local in above:
        if local < 0 or local >= topo.members[kind].size:
            continue
        gidx = int(topo.members[kind][local])
        if int(view.states[gidx]) in gray:
            return gidx
    return None


def _defer_to_gray_domains(
    decisions: Sequence[DecisionRecord], weighed: list[bool], view: EngineView
) -> tuple[list[DecisionRecord], list[bool]]:
    """A weighed node drain, or a gray uplink's disable, under a gray domain becomes
    ``restrict_admission`` on its cause: a congested leaf slows every link under it, and taking
    those links down one by one takes their nodes out for the leaf's condition."""
    topo = view.topology
    out: list[DecisionRecord] = []
    keep: list[bool] = []
    seen: set[tuple[str, str, str | None]] = set()
    for d, w in zip(decisions, weighed, strict=True):
        gidx = topo.lookup(d.entity) if w else None
        kind = topo.kind_of(gidx) if gidx is not None else None
        domain = (
            gray_domain_of(view, int(topo.local[gidx]))  # a node's uplink shares its index
            if gidx is not None and kind in (EntityKind.NODE, EntityKind.LINK)
            else None
        )
        if domain is None:
            out.append(d)
            keep.append(w)
            continue
        cause = d.cause or d.entity
        why = (
            f"{d.reason}; {topo.ids[domain]} is {State(int(view.states[domain])).label}: the "
            f"{'link' if kind is EntityKind.LINK else 'node'} shows its domain's condition, which the "
            "domain's own quarantine weighs: tolerate"
        )
        restrict = replace(d, entity=cause, action=ActionKind.RESTRICT_ADMISSION.value, reason=why)
        key = (restrict.entity, restrict.action, restrict.cause)
        if key not in seen:
            seen.add(key)
            out.append(restrict)
            keep.append(False)
    return out, keep


def value_sharing_spares(jobs: Jobs, domains: Domains) -> Valuation:
    """``value_containment``, domain by domain when several are valued at once: a spare node the
    first one's moves take is no spare for the next (the scheduler has not placed them yet)."""
    if domains.duration_h.size <= 1:
        return value_containment(jobs, domains)
    rows: list[Valuation] = []
    taken = 0
    for k in range(domains.duration_h.size):
        one = Domains(**{f.name: getattr(domains, f.name)[k : k + 1] for f in fields(domains)})
        one = replace(one, spare_nodes=np.maximum(one.spare_nodes - taken, 0))
        val = value_containment(jobs, one)
        taken += int(one.in_nodes[val.moved].sum())
        rows.append(val)
    return Valuation(
        **{f.name: np.concatenate([getattr(v, f.name) for v in rows]) for f in fields(Valuation)}
    )


def _rewrite(d: DecisionRecord, choice: Option, text: str, view: EngineView, nodes: IntArray,
             columns: IntArray, moved: BoolArray) -> list[DecisionRecord]:  # fmt: skip
    topo, workload = view.topology, view.workload
    if choice is Option.ISLAND:
        return [replace(d, reason=f"{d.reason}; {text}")]
    cause = d.cause or d.entity
    why = f"{d.reason}; {text}"
    restrict = replace(d, entity=cause, action=ActionKind.RESTRICT_ADMISSION.value, reason=why)
    if choice is Option.TOLERATE:
        return [restrict]
    if choice is Option.CHECKPOINT:
        on = np.unique(workload.node_job[nodes])
        names = [f"job/{topo.jobs[j].job}" for j in on[on >= 0].tolist()]
        return [replace(d, entity=n, action=ActionKind.CHECKPOINT_NOW.value, reason=why) for n in names] + [
            restrict
        ]
    move_jobs = columns[moved]
    drained = nodes[np.isin(workload.node_job[nodes], move_jobs)]
    node_names = topo.names[EntityKind.NODE]
    return [
        replace(d, entity=f"node/{node_names[n]}", action=ActionKind.DRAIN_NODE.value, reason=why)
        for n in drained.tolist()
    ] + [restrict]


def describe(domain: str, val: Valuation, domains: Domains, k: int) -> str:
    """The valuation in numbers, for the decision's reason."""
    cost = val.cost[k]
    move = f"{cost[Option.MOVE]:.1f}" if np.isfinite(cost[Option.MOVE]) else "n/a"
    jobs = int((domains.in_nodes[k] > 0).sum())
    return (
        f"islanding {domain} restarts {jobs} job(s) and holds {val.idle_gpus[k]:.0f} GPUs idle "
        f"~{domains.duration_h[k]:.1f} h for want of spares ({cost[Option.ISLAND]:.1f} GPU-h: restarts "
        f"{val.island_restart_gpu_h[k]:.1f}, idle {val.island_idle_gpu_h[k]:.1f}) vs tolerating "
        f"{cost[Option.TOLERATE]:.1f} GPU-h (slowdown {val.tolerate_slowdown_gpu_h[k]:.1f}, failure risk "
        f"{val.tolerate_risk_gpu_h[k]:.1f}), checkpoint now {cost[Option.CHECKPOINT]:.1f}, moving the "
        f"critical job(s) {move}: {Option(int(val.choice[k])).label}"
    )


def _situation(
    view: EngineView, rows: list[tuple[int, int]]
) -> tuple[Jobs, Domains, list[IntArray], IntArray]:
    """The valuation's inputs for each (cause, domain): per domain its nodes, per job its figures."""
    cfg, topo, workload = view.config, view.topology, view.workload
    n_jobs = len(topo.jobs)
    n_dom = len(rows)
    excess = part_excess(view)
    pace = slowdown_now(view)
    gpu_global, node_global = topo.members[EntityKind.GPU], topo.members[EntityKind.NODE]
    links = topo.members[EntityKind.LINK]
    # Spares (``control.spares``): a node the class should only avoid is none, or the domain's
    # own containment a tick later would take the spare the valuation counted on.
    admit = spares_by_class(cfg, topo, workload, view.states, view.lemons, view.held_nodes, view.now)
    job_class = [topo.jobs[j].job_class for j in range(n_jobs)]

    in_nodes = np.zeros((n_dom, n_jobs), dtype=np.int64)
    in_gpus = np.zeros((n_dom, n_jobs))
    slowdown = np.zeros((n_dom, n_jobs))
    excess_h = np.zeros((n_dom, n_jobs))
    no_trip = np.zeros((n_dom, n_jobs))  # log P(none of the job's GPUs in the domain trips within T)
    trip_in = gpu_trip_in(view)
    spare = np.zeros((n_dom, n_jobs), dtype=np.int64)
    duration = np.zeros(n_dom)
    domain_nodes: list[IntArray] = []
    for k, (cause, domain) in enumerate(rows):  # a handful of domains per tick; each row vectorised
        gpus = topo.below[domain].indices.astype(np.int64)
        nodes = np.unique(topo.gpu_node[gpus])
        domain_nodes.append(nodes)
        duration[k] = duration_s(cfg, topo, cause, domain) / 3600.0
        node_job = workload.node_job[nodes]
        on = node_job >= 0
        in_nodes[k] = np.bincount(node_job[on], minlength=n_jobs)
        gpu_job = workload.gpu_job[gpus]
        busy = gpu_job >= 0
        jobs_of = gpu_job[busy]
        in_gpus[k] = np.bincount(jobs_of, minlength=n_jobs)
        slow = pace[gpus[busy]]
        worst = np.zeros(n_jobs)
        np.maximum.at(worst, jobs_of, slow)
        # A synchronous job runs at its slowest rank: taking the domain out speeds it up only to
        # the slowest rank left outside it (a large job's slowest healthy rank is already above
        # its median, and a second slow part elsewhere keeps the job slow).
        rest = np.ones(workload.gpu_job.size, dtype=bool)
        rest[gpus] = False
        rest &= workload.gpu_job >= 0
        rest_worst = np.zeros(n_jobs)
        np.maximum.at(rest_worst, workload.gpu_job[rest], pace[rest])
        worst = np.maximum((1.0 + worst) / (1.0 + rest_worst) - 1.0, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(
                in_gpus[k] > 0, np.bincount(jobs_of, weights=slow, minlength=n_jobs) / in_gpus[k], 0.0
            )
        slowdown[k] = np.where(workload.job_sync[:n_jobs], worst, mean)
        if view.fabric_slowdown is not None and topo.kind_of(domain) is EntityKind.SWITCH:
            # A gray leaf slows its jobs' collectives, which no rank's own step shows: the job's
            # step over its slowest rank's, against its usual (``control.fabric_pace``).
            fabric = np.where(in_nodes[k] > 0, view.fabric_slowdown[:n_jobs], 0.0)
            slowdown[k] = np.where(workload.job_sync[:n_jobs], np.maximum(slowdown[k], fabric), slowdown[k])
        per_job = np.bincount(jobs_of, weights=excess[gpu_global[gpus[busy]]], minlength=n_jobs).astype(
            np.float64
        )
        per_job += np.bincount(node_job[on], weights=excess[node_global[nodes[on]]], minlength=n_jobs)
        if links.size:
            per_job += np.bincount(node_job[on], weights=excess[links[nodes[on]]], minlength=n_jobs)
        if topo.kind_of(domain) not in (EntityKind.GPU, EntityKind.NODE, EntityKind.LINK):
            per_job += np.where(
                in_nodes[k] > 0, excess[domain], 0.0
            )  # a CDU's own failures reach every job on it
        excess_h[k] = per_job * 3600.0
        heats = domain_heats(cfg, topo, trip_in, gpus, nodes)  # the domain's heat, not one GPU's
        tau = due_to_act(cfg, trip_in[gpus[busy]]) if heats else np.full(int(busy.sum()), np.inf)
        p_trip = np.where(np.isfinite(tau), -np.expm1(-duration[k] * 3600.0 / np.maximum(tau, 1.0)), 0.0)
        no_trip[k] = np.bincount(
            jobs_of, weights=np.log1p(-np.minimum(p_trip, 1.0 - 1e-12)), minlength=n_jobs
        )
        inside = np.zeros(topo.count(EntityKind.NODE), dtype=bool)
        inside[nodes] = True
        outside = {c: int((m & ~inside).sum()) for c, m in admit.items()}
        spare[k] = [outside[c] for c in job_class]
    columns = np.flatnonzero((in_nodes > 0).any(axis=0) & (workload.job_gpus[:n_jobs] > 0))
    jobs = job_figures(view, columns)
    domains = Domains(
        duration_h=duration,
        in_nodes=in_nodes[:, columns],
        in_gpus=in_gpus[:, columns],
        slowdown=slowdown[:, columns],
        excess_per_h=excess_h[:, columns],
        spare_nodes=spare[:, columns],
        trip_p=-np.expm1(no_trip[:, columns]),
        repair_h=np.full(n_dom, cfg.economics.repair_s / 3600.0),
    )
    return jobs, domains, domain_nodes, columns
