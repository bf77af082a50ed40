"""A ``Controller`` served read-only over HTTP: each job's risk, for its runtime's advisor, and
the engine's economics (each running job's plan value, rollback exposure and slip risk).

Route handlers run in the server's worker threads while the engine ticks in its own, so every
read of the controller holds ``lock``: the caller that ticks must hold the same lock around
``Controller.tick``, or a reader could see a half-updated engine.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

from fastapi import FastAPI, HTTPException, Response

from seamguard.control.controller import Controller
from seamguard.service.guard import AuthMiddleware, Security
from seamguard.service.risk_schema import JobRiskPayload
from seamguard.service.schema import EconomicsPayload

NAMED_JOBS = 10  # how many known jobs a 404 lists


def create_app(
    controller: Controller,
    lock: threading.Lock | None = None,
    security: Security | None = None,
    ticked: Callable[[], float] | None = None,
) -> FastAPI:
    """``GET /v1/jobs/{job}/risk``, ``GET /v1/economics``, ``GET /healthz`` and ``GET /readyz`` over
    ``controller``; with ``security``, every route added to the app, now or later, passes through
    the authentication layer (``service.guard``). ``ticked`` gives the time of the last finished
    tick (-inf before the first); by default the controller's."""
    guard = lock if lock is not None else threading.Lock()
    app = FastAPI(title="seamguard", summary="Each job's live risk, for its checkpoint advisor")
    if security is not None:
        app.add_middleware(AuthMiddleware, security=security)

    # The probes take no lock: a tick that holds it for seconds must not make the process look dead.
    # The topology is replaced whole by a world change (one reference read) and the tick time is
    # one float, read whole.
    @app.get("/healthz")
    def healthz() -> dict[str, object]:
        return {"status": "ok", "jobs": len(controller.topology.jobs)}

    @app.get("/readyz", responses={503: {"description": "the engine has not ticked yet"}})
    def readyz() -> dict[str, object]:
        now = float(ticked()) if ticked is not None else float(controller.now)
        if not math.isfinite(now):
            raise HTTPException(status_code=503, detail="not ready: the engine has not ticked yet")
        return {"status": "ready", "now": now}

    # HEAD too, for load balancers' checks (HAProxy's ``option httpchk HEAD``); kept out of the
    # schema, where a second operation of the same name would clash with the GET's.
    app.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
    app.add_api_route("/readyz", readyz, methods=["HEAD"], include_in_schema=False)

    @app.get(
        "/v1/jobs/{job}/risk",
        response_model=JobRiskPayload,
        responses={
            404: {"description": "the engine's job table has no such job"},
            503: {"description": "the engine has no risk to give"},
        },
    )
    def job_risk(job: str) -> Response:
        with guard:
            try:
                risk = controller.job_risk(job)
            except KeyError:
                raise HTTPException(status_code=404, detail=_unknown(controller, job)) from None
            except LookupError as exc:  # an engine that has no risk to give (it plans no checkpoints)
                raise HTTPException(status_code=503, detail=str(exc)) from None
        # Serialised by the schema itself: it carries the infinite MTBF of a job without hazard,
        # which the framework's JSON encoder refuses.
        body = JobRiskPayload.from_risk(risk).model_dump_json()
        return Response(content=body, media_type="application/json")

    @app.get(
        "/v1/economics",
        response_model=EconomicsPayload,
        responses={503: {"description": "the engine has not valued its jobs yet"}},
    )
    def economics() -> Response:
        with guard:
            econ = controller.economics
            if econ is None:
                raise HTTPException(
                    status_code=503, detail="no economics yet: the engine has not planned a tick"
                )
            names = [j.job for j in controller.topology.jobs]
            body = EconomicsPayload.from_economics(controller.now, names, econ).model_dump_json()
        return Response(content=body, media_type="application/json")

    return app


def _unknown(controller: Controller, job: str) -> str:
    names = [j.job for j in controller.topology.jobs]
    shown = ", ".join(names[:NAMED_JOBS]) + (
        f", ... ({len(names)} in all)" if len(names) > NAMED_JOBS else ""
    )
    return f"unknown job {job!r}: the engine's job table has {shown or 'no jobs'}"
