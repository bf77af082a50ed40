"""What the routing controller sees, from the engine's states and current signals.

One ``ServingView`` per decode pool: its replicas, the replicas of the prefill pools that feed it,
and per (prefill, decode) pair the path a request's KV cache takes (``model.serving``: the pair's
own path where one is declared, else the pool path into the decode replica, else the pool-to-pool
path). What each part admits:

- a **replica** serves unless it, a node it runs on or a GPU of those nodes is quarantined or
  failed (its own state comes from its TTFT and inter-token latency);
- a **path** admits serving while its own state (from its KV-transfer latency, jitter and
  failures) and the fabric under both ends (each end's node uplinks and leaf switches) are healthy
  or unknown (a path that moved nothing has no data: unknown, and may carry traffic). So a path is
  degraded by its own signals while both ends are healthy, and by a degraded leaf under either end.

``routing_json`` gives the controller's plan (``serving.routing``) as the hint ``GET /v1/routing``
serves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seamguard.control.classifier import SEVERITY
from seamguard.model.entities import EntityKind
from seamguard.model.serving import Role
from seamguard.model.states import State
from seamguard.model.topology import Topology
from seamguard.serving.routing import RoutingObjective, ServingView, haproxy_weights, pair_hints, plan_routing
from seamguard.telemetry.store import TelemetryStore

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
MAX_PAIRS_SHOWN = 8  # per prefill replica in the hint: the endpoint picker needs the best few
OUT = int(SEVERITY[int(State.QUARANTINE)])  # a part at or past quarantine serves nothing
LABELS = {int(s): s.label for s in State}


@dataclass(frozen=True)
class PoolView:
    """One decode pool's view, with the path (global index) each pair goes over."""

    pool: str
    view: ServingView
    pair_path: IntArray  # (P, D) global index of the path entity, -1: none declared
    pair_state: IntArray  # (P, D) the path's effective state code


def _worst(states: IntArray, parts: IntArray) -> int:
    """The most severe state among ``parts`` (global indices), by ``SEVERITY``; unknown when none."""
    if parts.size == 0:
        return int(State.UNKNOWN)
    codes = states[parts]
    return int(codes[np.argmax(SEVERITY[codes])])


def _severity_per_node(topology: Topology, states: IntArray) -> tuple[IntArray, IntArray]:
    """Per node: the worst severity of the node and its GPUs (compute), and of its uplink and leaf (fabric)."""
    m = topology.members
    n = topology.count(EntityKind.NODE)
    compute = SEVERITY[states[m[EntityKind.NODE]]].copy() if n else np.zeros(0, dtype=np.int64)
    if m[EntityKind.GPU].size:
        np.maximum.at(compute, topology.gpu_node, SEVERITY[states[m[EntityKind.GPU]]])
    fabric = np.full(n, -1, dtype=np.int64)
    if m[EntityKind.LINK].size:
        fabric = np.maximum(fabric, SEVERITY[states[m[EntityKind.LINK]]])
    if m[EntityKind.SWITCH].size and n:
        fabric = np.maximum(fabric, SEVERITY[states[m[EntityKind.SWITCH][topology.node_leaf]]])
    return compute, fabric


def pool_views(topology: Topology, states: IntArray, store: TelemetryStore) -> list[PoolView]:
    """One view per decode pool that has replicas and prefill replicas feeding it."""
    sv = topology.serving
    if not sv.paths:
        return []
    m = topology.members
    rep_g, path_g = m[EntityKind.REPLICA], m[EntityKind.PATH]
    compute, fabric = _severity_per_node(topology, states)
    own_rep = SEVERITY[states[rep_g]]
    rep, node = sv.replica_node_rows[:, 0], sv.replica_node_rows[:, 1]
    rep_compute = own_rep.astype(np.int64)  # a replica's own state, or its nodes' worse one
    np.maximum.at(rep_compute, rep, compute[node])
    rep_fabric = np.full(len(sv.replicas), -1, dtype=np.int64)
    np.maximum.at(rep_fabric, rep, fabric[node])
    lat, jit = store.current("path.kv_transfer_ms"), store.current("path.kv_transfer_jitter_ms")
    fails, done = store.rate("path.kv_failures_total"), store.rate("path.kv_transfers_total")
    with np.errstate(invalid="ignore", divide="ignore"):
        share = fails / (fails + done)
    share = np.where(np.isfinite(fails) & (fails == 0), 0.0, share)
    queue, itl = store.current("replica.queue_depth"), store.current("replica.itl_ms")
    src_rep, src_pool = sv.path_src_replica, sv.path_src_pool
    dst_rep, dst_pool = sv.path_dst_replica, sv.path_dst_pool
    out: list[PoolView] = []
    for dp, role in enumerate(sv.pool_role):
        if role is not Role.DECODE:
            continue
        dec = np.flatnonzero(sv.replica_pool == dp)
        into = np.flatnonzero(dst_pool == dp)  # the paths into this pool
        pre = np.flatnonzero(np.isin(sv.replica_pool, np.unique(src_pool[into])))
        if dec.size == 0 or pre.size == 0:
            continue
        paths = _pair_paths(sv.replica_pool, pre, dec, into, src_rep, src_pool, dst_rep)
        has = paths >= 0
        safe = np.maximum(paths, 0)
        own = np.where(has, SEVERITY[states[path_g[safe]]], -1) if path_g.size else np.full(paths.shape, -1)
        ends = np.maximum(rep_fabric[pre][:, None], rep_fabric[dec][None, :])
        sev = np.maximum(own, ends)
        state = np.where(has, states[path_g[safe]] if path_g.size else int(State.UNKNOWN), int(State.UNKNOWN))
        worse = ends > np.where(
            has, SEVERITY[state], -1
        )  # the fabric under an end is worse than the path itself
        state = np.where(worse, _state_of_severity(ends), state)
        pick = np.where(has, safe, 0)
        view = ServingView(
            prefill=tuple(f"replica/{sv.replicas[p]}" for p in pre.tolist()),
            decode=tuple(f"replica/{sv.replicas[d]}" for d in dec.tolist()),
            prefill_ok=rep_compute[pre] < OUT,
            decode_ok=rep_compute[dec] < OUT,
            prefill_load=np.nan_to_num(queue[pre]),
            decode_load=np.nan_to_num(queue[dec]),
            path_latency_ms=np.where(has, lat[pick], np.nan),
            path_jitter_ms=np.where(has, jit[pick], np.nan),
            path_failure_rate=np.where(has, share[pick], np.nan),
            path_ok=sev <= int(SEVERITY[int(State.HEALTHY)]),
            decode_itl_ms=itl[dec],
        )
        out.append(PoolView(sv.pools[dp], view, np.where(has, path_g[pick], -1), state.astype(np.int64)))
    return out


def _pair_paths(
    replica_pool: IntArray, pre: IntArray, dec: IntArray, into: IntArray,
    src_rep: IntArray, src_pool: IntArray, dst_rep: IntArray,
) -> IntArray:  # fmt: skip
    """(P, D) the path (local index) each pair's KV cache takes, -1 for none: the pair's own declared
    path, else the prefill pool's path into the decode replica, else the pool-to-pool path. Filled
    from the widest to the narrowest, each overwriting the last, one array operation per path kind
    (no Python loop over the P x D pairs: a serving fleet has thousands of replicas)."""
    n = replica_pool.size
    row, col = np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64)
    row[pre], col[dec] = np.arange(pre.size), np.arange(dec.size)
    pre_pool = replica_pool[pre]
    out = np.full((pre.size, dec.size), -1, dtype=np.int64)
    wide = into[(src_rep[into] < 0) & (dst_rep[into] < 0)]  # pool -> pool
    for i in wide.tolist():  # one per feeding pool
        out[pre_pool == src_pool[i], :] = i
    mid = into[(src_rep[into] < 0) & (dst_rep[into] >= 0)]  # pool -> decode replica
    for sp in np.unique(src_pool[mid]).tolist():  # per feeding pool: its rows, each path's column
        these = mid[src_pool[mid] == sp]
        c = col[dst_rep[these]]
        out[np.ix_(np.flatnonzero(pre_pool == sp), c[c >= 0])] = these[c >= 0][None, :]
    own = into[(src_rep[into] >= 0) & (dst_rep[into] >= 0)]  # replica -> replica, declared
    r, c = row[src_rep[own]], col[dst_rep[own]]
    ok = (r >= 0) & (c >= 0)
    out[r[ok], c[ok]] = own[ok]
    return out


def _state_of_severity(sev: IntArray) -> IntArray:
    """Back from a severity to a state code (the inverse of ``SEVERITY``)."""
    inverse = np.full(int(SEVERITY.max()) + 2, int(State.UNKNOWN), dtype=np.int64)
    for code, s in enumerate(SEVERITY.tolist()):
        inverse[s + 1] = code
    return inverse[sev + 1]


def routing_json(
    topology: Topology, states: IntArray, store: TelemetryStore, objective: RoutingObjective, now: float
) -> dict[str, object]:
    """The plan per decode pool as an endpoint picker reads it: per replica its weight (its share of
    the pool's requests) and HAProxy weight, per prefill replica the decode replicas to pair it with
    (non-zero shares only, at most ``MAX_PAIRS_SHOWN``), the shed share, the degrade flag, reasons."""
    pools: list[dict[str, object]] = []
    for pv in pool_views(topology, states, store):
        plan = plan_routing(pv.view, objective)
        weights = haproxy_weights(plan)
        v = pv.view
        replicas = [
            {"id": rid, "role": role, "weight": _num(w), "haproxy_weight": weights[rid],
             "state": LABELS[int(states[topology.index[rid]])]}
            for role, ids, marg in (("prefill", v.prefill, plan.prefill_weight), ("decode", v.decode, plan.decode_weight))
            for rid, w in zip(ids, marg.tolist(), strict=True)
        ]  # fmt: skip
        paths: list[dict[str, object]] = []
        seen: set[int] = set()
        for i, j in zip(*np.nonzero(pv.pair_path >= 0), strict=True):
            g = int(pv.pair_path[i, j])
            if g in seen:
                continue
            seen.add(g)
            paths.append({"id": topology.ids[g], "state": LABELS[int(pv.pair_state[i, j])],
                          "admits": bool(v.path_ok[i, j]), "latency_ms": _num(v.path_latency_ms[i, j]),
                          "jitter_ms": _num(v.path_jitter_ms[i, j]), "failure_share": _num(v.path_failure_rate[i, j])})  # fmt: skip
        pairs = {p: [{"decode": d, "share": _num(s)} for d, s in got]
                 for p, got in pair_hints(plan, top=MAX_PAIRS_SHOWN).items()}  # fmt: skip
        pools.append({"pool": pv.pool, "replicas": replicas, "pairs": pairs, "paths": paths,
                      "shed": _num(plan.shed), "degrade": plan.degrade, "reasons": list(plan.reasons)})  # fmt: skip
    return {
        "now": _num(now),
        "objective": {"ttft_slo_ms": objective.ttft_slo_ms, "itl_slo_ms": objective.itl_slo_ms},
        "pools": pools,
    }


def _num(x: float | np.floating[npt.NBitBase]) -> float | None:
    f = float(x)
    return round(f, 6) if math.isfinite(f) else None


def objective_from(
    ttft_slo_ms: float | None, itl_slo_ms: float | None, defaults: Sequence[float]
) -> RoutingObjective:
    """The objective a request asks for, the defaults for what it leaves out."""
    return RoutingObjective(ttft_slo_ms=ttft_slo_ms or defaults[0], itl_slo_ms=itl_slo_ms or defaults[1])
