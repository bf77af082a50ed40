"""The engine's risk for a job over HTTP (``seamguard.service``), with a timeout.

Standard library only on the wire, so a training image needs no HTTP client package; the answer
is checked against the service's schema (``agent.wire``), so a malformed one is an error naming
the field.

Where the service asks for credentials (``docs/security.md``), the bearer token comes from
``token_file`` or else the ``SEAMGUARD_TOKEN`` environment variable (a viewer token suffices),
and ``ca_file`` names the CA of an https service whose certificate the system does not trust.
The token file is re-read at every call, so a rotated token is taken up without a restart.
"""

from __future__ import annotations

import json
import math
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from seamguard.agent.sources import SourceError
from seamguard.agent.wire import WireError, read_risk
from seamguard.economics.job_risk import JobRisk

TOKEN_ENV = "SEAMGUARD_TOKEN"


class HttpSource:
    """``GET {base_url}/v1/jobs/{job}/risk``; every failure is a ``SourceError`` saying which."""

    def __init__(
        self,
        base_url: str,
        timeout_s: float = 2.0,
        *,
        token_file: Path | str | None = None,
        ca_file: Path | str | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"HttpSource.base_url must be an http(s) URL like http://host:port, got {base_url!r}"
            )
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"HttpSource.timeout_s must be a positive number of seconds, got {timeout_s!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.token_file = Path(token_file) if token_file is not None else None
        self.context: ssl.SSLContext | None = None
        if ca_file is not None:
            try:
                self.context = ssl.create_default_context(cafile=str(ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"HttpSource.ca_file {ca_file}: cannot load: {exc}") from None

    def _token(self) -> str | None:
        if self.token_file is None:
            return os.environ.get(TOKEN_ENV) or None
        try:
            token = self.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SourceError(
                f"HttpSource.token_file {self.token_file}: cannot read: {exc.strerror}"
            ) from exc
        if not token:
            raise SourceError(f"HttpSource.token_file {self.token_file} is empty")
        return token

    def risk(self, job: str) -> JobRisk:
        url = f"{self.base_url}/v1/jobs/{urllib.parse.quote(job, safe='')}/risk"
        headers = {"Accept": "application/json"}
        token = self._token()
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=self.context) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            hint = "" if exc.code != 401 or token else f" (no token: set {TOKEN_ENV} or token_file)"
            raise SourceError(f"{url}: HTTP {exc.code}: {_detail(exc)}{hint}") from exc
        except urllib.error.URLError as exc:
            raise SourceError(f"{url} unreachable: {exc.reason}") from exc
        except TimeoutError as exc:
            raise SourceError(f"{url}: no answer within {self.timeout_s:g} s") from exc
        except OSError as exc:  # a connection reset mid-answer
            raise SourceError(f"{url}: {exc}") from exc
        try:
            risk = read_risk(body)
        except WireError as exc:
            raise SourceError(f"bad risk payload from {url}: {exc}") from exc
        if risk.job != job:
            raise SourceError(
                f"bad risk payload from {url}: job: asked for {job!r}, answered for {risk.job!r}"
            )
        return risk


def _detail(exc: urllib.error.HTTPError) -> str:
    """The service's own message (FastAPI's ``detail``), else the status text."""
    try:
        detail = json.loads(exc.read()).get("detail")
    except (ValueError, AttributeError, OSError):
        detail = None
    return str(detail) if detail else str(exc.reason)
