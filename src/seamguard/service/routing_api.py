"""``GET /v1/routing`` (role ``viewer``): the routing controller's plan as a hint an endpoint picker
reads (a Gateway API Inference Extension / llm-d endpoint picker, Dynamo's router, an HAProxy
agent): per replica its share and HAProxy weight, per prefill replica the decode replicas to pair
it with, the shed share, the degrade flag and the reasons (``serving.view``, ``docs/serving.md``).

The plan is made from the last tick's states and signals, once per tick and objective; the
objective is the caller's (``ttft_slo_ms``, ``itl_slo_ms``), or the defaults below.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from fastapi import APIRouter, HTTPException, Query

from seamguard.control.controller import Controller
from seamguard.serving.view import objective_from, routing_json

DEFAULT_TTFT_SLO_MS = 2000.0
DEFAULT_ITL_SLO_MS = 100.0


def routing_router(controller: Callable[[], Controller], lock: threading.Lock | threading.RLock) -> APIRouter:
    router = APIRouter()
    cache: dict[tuple[float, float, float], dict[str, object]] = {}

    @router.get("/v1/routing", responses={422: {}})
    def routing(
        ttft_slo_ms: float | None = Query(default=None, gt=0, le=3.6e6),
        itl_slo_ms: float | None = Query(default=None, gt=0, le=3.6e6),
    ) -> dict[str, object]:
        try:
            objective = objective_from(ttft_slo_ms, itl_slo_ms, (DEFAULT_TTFT_SLO_MS, DEFAULT_ITL_SLO_MS))
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        with lock:
            ctl = controller()
            key = (float(ctl.now), objective.ttft_slo_ms, objective.itl_slo_ms)
            got = cache.get(key)
            if got is None:
                cache.clear()  # one tick's plans: a new tick makes them old
                got = cache[key] = routing_json(
                    ctl.topology, ctl.states, ctl.store, objective, float(ctl.now)
                )
        return got

    return router
