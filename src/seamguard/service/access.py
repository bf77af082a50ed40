"""Which role each (method, path) needs: default deny.

One table for the whole API. A route it does not name needs ``admin``, so a route another module
adds (an operator endpoint, a new reader) is protected before anyone thinks of it; only the
probes are public.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from seamguard.service.sections import Role

PUBLIC = None  # the role a probe needs: none

# What each role includes: an operator may do everything a viewer may; admin everything.
GRANTS: dict[Role, frozenset[Role]] = {
    Role.VIEWER: frozenset({Role.VIEWER}),
    Role.PUSHER: frozenset({Role.PUSHER}),
    Role.OPERATOR: frozenset({Role.OPERATOR, Role.VIEWER}),
    Role.ADMIN: frozenset(Role),
}
READ = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class Rule:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    role: Role | None  # None: public
    template: str  # as written, for messages


def rule(methods: Iterable[str], template: str, role: Role | None) -> Rule:
    """``template`` in FastAPI's spelling: ``{name}`` matches one path segment, ``{name:path}``
    the rest of the path (an entity id such as ``gpu/n0001/3``)."""
    parts = re.split(r"(\{[^}/]+\})", template)
    regex = "".join(
        (".+" if p.endswith(":path}") else "[^/]+") if p.startswith("{") else re.escape(p) for p in parts
    )
    return Rule(frozenset(m.upper() for m in methods), re.compile(regex), role, template)


# What a viewer reads; FastAPI's own pages are here so that the API's shape is not public either.
VIEWER_PATHS = (
    "/v1/status",
    "/v1/economics",
    "/v1/jobs/{job}/risk",
    "/metrics",
    "/v1/whoami",
    "/v1/ops",
    "/v1/fleet",
    "/v1/nodes",
    "/v1/diagnosis",
    "/v1/fleet/{entity:path}",
    "/v1/entities/{entity:path}",
    "/v1/events",
    "/v1/routing",  # the routing hint an endpoint picker reads (docs/serving.md)
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/openapi.json",
)


CONSOLE_ASSETS = ("/console", "/console/app.js", "/console/app.css")


def default_rules(push_path: str | None) -> tuple[Rule, ...]:
    rules = [
        rule(READ, "/healthz", PUBLIC),
        rule(READ, "/readyz", PUBLIC),
        *(rule(READ, p, Role.VIEWER) for p in VIEWER_PATHS),
        rule({"POST"}, "/v1/ops/{verb}", Role.OPERATOR),
        # The console's shell: a page, a script and a style sheet that carry no fleet data (every
        # datum comes from the API above, with the bearer token): public, as a login page must be.
        *(rule(READ, p, PUBLIC) for p in CONSOLE_ASSETS),
    ]
    if push_path is not None:
        rules.append(rule({"POST"}, push_path, Role.PUSHER))
    return tuple(rules)


@dataclass(frozen=True)
class AccessPolicy:
    rules: tuple[Rule, ...]

    def needed(self, method: str, path: str) -> Role | None:
        """The role ``method path`` needs; ``admin`` for what no rule names."""
        for r in self.rules:
            if method in r.methods and r.pattern.fullmatch(path):
                return r.role
        return Role.ADMIN

    def template(self, path: str) -> str | None:
        """The template of the first rule naming ``path`` (for any method), else None."""
        return next((r.template for r in self.rules if r.pattern.fullmatch(path)), None)


def allows(roles: frozenset[Role], needed: Role) -> bool:
    return any(needed in GRANTS[r] for r in roles)
