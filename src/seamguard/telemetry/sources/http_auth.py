"""Credentials for seamguard's scrapes: the keys of a Prometheus ``scrape_config``.

``bearer_token_file``, ``basic_auth: {username, password_file}`` and ``tls_config: {ca_file,
cert_file, key_file}`` are spelled as Prometheus spells them, and match what an exporter's
``--web.config.file`` (prometheus/exporter-toolkit: ``basic_auth_users``, ``tls_server_config``)
can ask for. Secrets are read from files, never written in the config, and re-read at every poll
(as Prometheus does), so a rotated password needs no restart. Standard library only: loading a
config imports no HTTP client.
"""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from pydantic import model_validator

from seamguard.strict_model import StrictModel


class BasicAuth(StrictModel):
    username: str
    password_file: Path


class TlsClientConfig(StrictModel):
    ca_file: Path | None = None  # the CA that signed the server's certificate (default: the system's)
    cert_file: Path | None = None  # a client certificate, for servers that require one
    key_file: Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class HttpClientAuth(StrictModel):
    """What a scraping source adds to its section."""

    bearer_token_file: Path | None = None
    basic_auth: BasicAuth | None = None
    tls_config: TlsClientConfig | None = None

    @model_validator(mode="after")
    def _one_scheme(self) -> Self:
        if self.bearer_token_file is not None and self.basic_auth is not None:
            raise ValueError("bearer_token_file and basic_auth are exclusive: give one")
        return self


@dataclass(frozen=True)
class ClientAuth:
    """Ready for the HTTP client: headers to send and how to verify TLS."""

    headers: dict[str, str] = field(default_factory=dict)
    verify: ssl.SSLContext | bool = True


def _secret(path: Path, what: str) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"{what} {path}: cannot read: {exc.strerror}") from None
    if not text:
        raise ValueError(f"{what} {path} is empty")
    return text


def client_auth(cfg: HttpClientAuth) -> ClientAuth:
    """Read the credential files now; ValueError names the file that could not be used."""
    headers: dict[str, str] = {}
    if cfg.bearer_token_file is not None:
        headers["Authorization"] = "Bearer " + _secret(cfg.bearer_token_file, "bearer_token_file")
    if cfg.basic_auth is not None:
        pw = _secret(cfg.basic_auth.password_file, "basic_auth.password_file")
        pair = base64.b64encode(f"{cfg.basic_auth.username}:{pw}".encode()).decode()
        headers["Authorization"] = "Basic " + pair
    tls = cfg.tls_config
    if tls is None:
        return ClientAuth(headers)
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        if tls.cert_file is not None and tls.key_file is not None:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"tls_config: {exc}") from None
    return ClientAuth(headers, ctx)
