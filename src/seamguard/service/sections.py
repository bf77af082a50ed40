"""``service:`` in the config: who may call the daemon's HTTP API, and over what transport.

Models only, like the other site sections: loading a config imports no web framework
(``service.auth`` turns them into a token table, ``service.server`` into a TLS listener).
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from pydantic import Field, field_validator

from seamguard.strict_model import StrictModel

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")  # a principal's name: a journal key, no spaces
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


def checked_name(v: str) -> str:
    """A principal's (or a gateway key's) name: it keys the journal and the metrics."""
    if not NAME_RE.fullmatch(v):
        raise ValueError(f"a name of letters, digits and . _ @ - (at most 64), got {v!r}")
    return v


def checked_digest(v: str) -> str:
    """A secret's SHA-256 digest as the config holds it: never the secret itself."""
    if not DIGEST_RE.fullmatch(v):
        raise ValueError("expected sha256: and 64 lowercase hex digits (the digest, never the secret)")
    return v


def zoned(v: datetime | None) -> datetime | None:
    """An expiry must say its time zone: a naive time would shift with the host's."""
    if v is not None and v.tzinfo is None:
        raise ValueError(f"expiry {v.isoformat()} has no time zone; add Z or +00:00")
    return v


class Role(StrEnum):
    """What a principal may do (``docs/security.md``): each role's rights are in ``access.GRANTS``."""

    VIEWER = "viewer"  # GET endpoints, /docs, /openapi.json, /metrics
    PUSHER = "pusher"  # POST to the push path, nothing else
    OPERATOR = "operator"  # viewer plus the operator endpoints (pause, approve, pin)
    ADMIN = "admin"  # everything, including routes the access table does not name


class TokenEntry(StrictModel):
    """One bearer token, by the SHA-256 digest of its secret (``seamguard token create`` prints both)."""

    name: str
    roles: tuple[Role, ...] = Field(min_length=1)
    digest: str  # "sha256:<64 hex>"
    expires: datetime | None = None  # ISO 8601 with a zone; the token is refused from then on

    _name = field_validator("name")(checked_name)
    _digest = field_validator("digest")(checked_digest)
    _zoned = field_validator("expires")(zoned)


class AuthConfig(StrictModel):
    tokens: tuple[TokenEntry, ...] = ()  # inline, by digest
    tokens_file: Path | None = None  # one token a line (docs/security.md); re-read when it changes

    def configured(self) -> bool:
        return bool(self.tokens) or self.tokens_file is not None


class TlsConfig(StrictModel):
    certfile: Path  # the server's certificate chain (PEM)
    keyfile: Path  # its private key (PEM)
    client_ca: Path | None = None  # mutual TLS: a client certificate signed by this CA is required


class ConnectionLimits(StrictModel):
    """What one client may hold of the server (``service.connections``): slowloris and floods of
    connections, which would otherwise exhaust the process's file descriptors."""

    max_open: int = Field(default=4096, ge=1)  # connections at once; past it a new one gets 503
    per_client: int = Field(default=256, ge=1)  # connections at once from one address (IPv6: one /64)
    head_timeout_s: float = Field(default=10.0, gt=0, allow_inf_nan=False)  # request line + headers


class ServiceConfig(StrictModel):
    """The HTTP API's protection. With no credential configured, the daemon serves on loopback only."""

    auth: AuthConfig = AuthConfig()
    tls: TlsConfig | None = None
    connections: ConnectionLimits = ConnectionLimits()
