"""The checks ``seamguard run`` makes before it serves: never exposed without credentials, and a
TLS certificate that loads. Each failure is an InputError saying what to fix."""

from __future__ import annotations

import ipaddress
import logging
import ssl
from pathlib import Path

from seamguard.errors import InputError
from seamguard.service.access import AccessPolicy, default_rules
from seamguard.service.audit import AuditTally
from seamguard.service.auth import TokenTable
from seamguard.service.guard import Security
from seamguard.service.sections import ServiceConfig, TlsConfig

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve to anything
        return False


def check_exposure(host: str, service: ServiceConfig) -> None:
    """Refuse to listen beyond loopback with no credential: anyone who can reach the port could
    push a forged XID and get a node drained. On loopback it is allowed, with a warning."""
    if service.auth.configured():
        return
    if not is_loopback(host):
        raise InputError(
            "--listen",
            f"{host} is not a loopback address and service.auth has no token: anyone who reaches it "
            "could push telemetry and read the fleet's state; create a token (seamguard token create "
            "--name NAME --role ROLE) and set service.auth.tokens_file, or listen on 127.0.0.1 "
            "(docs/security.md)",
        )
    log.warning(
        "serving on %s without authentication: any local user or process may push and read "
        "(set service.auth, docs/security.md)",
        host,
    )


def build_security(service: ServiceConfig, push_path: str | None) -> Security:
    """The access table, the token table (a bad tokens file raises, naming its line) and the tally."""
    tokens = TokenTable(service.auth) if service.auth.configured() else None
    return Security(AccessPolicy(default_rules(push_path)), tokens, AuditTally())


def check_tls(tls: TlsConfig) -> None:
    """Load the certificate, key and client CA once here, so a wrong path or a key that does not
    match fails the start with its name rather than the server thread in silence."""
    for what, path in (("certfile", tls.certfile), ("keyfile", tls.keyfile), ("client_ca", tls.client_ca)):
        if path is not None and not Path(path).is_file():
            raise InputError(f"service.tls.{what}", f"no such file: {path}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(tls.certfile, tls.keyfile)
    except (ssl.SSLError, OSError) as exc:
        raise InputError(
            "service.tls", f"cannot load certfile {tls.certfile} with keyfile {tls.keyfile}: {exc}"
        ) from None
    if tls.client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=tls.client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise InputError("service.tls.client_ca", f"cannot load {tls.client_ca}: {exc}") from None
