"""The one app-wide layer that authenticates and authorises every request (an ASGI middleware).

Default deny: the access table (``access``) says which role each (method, path) needs and names
every route it does not know ``admin``. Credentials come only from the ``Authorization: Bearer``
header, never a query parameter or a cookie: a browser's cross-origin "simple" request cannot set
that header without a CORS preflight, and this service answers no preflight, so a page an
operator visits cannot push or read on their behalf. 401 (with ``WWW-Authenticate: Bearer``) for
a missing, unknown or expired token, 403 for a valid one without the role; the body says which,
never echoing the secret. The principal's name is put in ``request.state.principal``, its roles in ``request.state.roles``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from seamguard.journal.records import AuditRecord, NoticeRecord
from seamguard.service.access import READ, AccessPolicy, allows
from seamguard.service.audit import AuditTally
from seamguard.service.auth import Principal, TokenTable

ANONYMOUS = "anonymous"
NO_ROUTE = "(no route)"  # the audit's path for a request the router would not route
OTHER_METHOD = "(other)"  # the audit's method for one HTTP does not define (h11 takes any token)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})


@dataclass(frozen=True)
class Security:
    """What the layer needs: the access table, the tokens (None: no credential configured, every
    request passes, which the daemon allows on loopback only) and the audit tally."""

    policy: AccessPolicy
    tokens: TokenTable | None
    audit: AuditTally
    clock: Callable[[], float] = time.time

    def drain(self, now: float) -> tuple[list[AuditRecord], list[NoticeRecord]]:
        """The tick's audit rows, and a notice for each tokens-file reload (refused ones as errors)."""
        problems = self.tokens.drain_problems() if self.tokens is not None else []
        return self.audit.drain(now), [NoticeRecord(now, "service", lvl, msg) for lvl, msg in problems]


class AuthMiddleware:
    def __init__(self, app: ASGIApp, security: Security) -> None:
        self.app = app
        self.security = security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sec = self.security
        method: str = scope["method"]
        path: str = scope["path"]
        needed = sec.policy.needed(method, path)
        if needed is None:  # a probe
            await self.app(scope, receive, send)
            return
        client = _client(scope)
        audit_path = self._audit_path(scope, path)
        audit_method = method if method in METHODS else OTHER_METHOD
        principal: Principal | None = None
        if sec.tokens is not None:
            principal, why = self._authenticate(scope)
            if principal is None:
                sec.audit.count(ANONYMOUS, client, audit_method, audit_path, 401)
                await _refuse(send, 401, f"{why}: {method} {path} needs a bearer token with role {needed}")
                return
            if not allows(principal.roles, needed):
                sec.audit.count(principal.name, client, audit_method, audit_path, 403)
                has = ", ".join(sorted(principal.roles))
                await _refuse(
                    send, 403, f"{principal.name!r} (roles: {has}) may not {method} {path}: needs {needed}"
                )
                return
            state = scope.setdefault("state", {})
            state["principal"], state["roles"] = principal.name, sorted(r.value for r in principal.roles)
        if method in READ:
            await self.app(scope, receive, send)
            return
        status = [500]  # what the app answered, for the audit row

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            name = principal.name if principal is not None else ANONYMOUS
            sec.audit.count(
                name, "" if principal is not None else client, audit_method, audit_path, status[0]
            )

    def _audit_path(self, scope: Scope, path: str) -> str:
        """What the audit keys a request on: the access table's template (``/v1/jobs/{job}/risk``),
        the path of a route the table does not name, else ``NO_ROUTE``; so a scan of random paths
        or job names is one row per client and tick, not one per path."""
        named = self.security.policy.template(path)
        if named is not None:
            return named
        return path if _routed(scope) else NO_ROUTE

    def _authenticate(self, scope: Scope) -> tuple[Principal | None, str]:
        assert self.security.tokens is not None
        values = [v for k, v in scope["headers"] if k == b"authorization"]
        if not values:
            return None, "no Authorization header (credentials are read from it only)"
        if len(values) > 1:
            return None, "more than one Authorization header"
        scheme, _, secret = values[0].decode("latin-1").strip().partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return None, "the Authorization header is not 'Bearer <token>'"
        return self.security.tokens.lookup(secret.strip(), self.security.clock())


def _routed(scope: Scope) -> bool:
    """Whether the app's router would take this path (for some method)."""
    router = getattr(scope.get("app"), "router", None)
    return any(route.matches(scope)[0] is not Match.NONE for route in getattr(router, "routes", ()))


def _client(scope: Scope) -> str:
    peer = scope.get("client")
    return str(peer[0]) if peer else ""  # the host: a port per connection would split the tally


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="seamguard"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
