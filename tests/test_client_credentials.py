"""seamguard's own HTTP clients send credentials: the DCGM scrape and the Prometheus API source
(``bearer_token_file``, ``basic_auth``, ``tls_config``, as Prometheus names them), and the agent's
``HttpSource`` (``SEAMGUARD_TOKEN`` or a token file, a CA file for https). Each against a real
loopback server that refuses a request without them."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trustme

from seamguard.agent.http_source import TOKEN_ENV, HttpSource
from seamguard.agent.sources import SourceError
from seamguard.model.entities import EntityKind
from seamguard.service.access import AccessPolicy, default_rules
from seamguard.service.app import create_app
from seamguard.service.audit import AuditTally
from seamguard.service.auth import TokenTable, digest_of, new_token
from seamguard.service.guard import Security
from seamguard.service.sections import AuthConfig, TlsConfig
from seamguard.service.server import serve_in_thread
from seamguard.telemetry.sources.dcgm_config import DcgmSourceConfig
from seamguard.telemetry.sources.prometheus_api import PrometheusApiSource
from seamguard.telemetry.sources.prometheus_config import PrometheusApiConfig
from seamguard.telemetry.sources.scrape import DcgmScrapeSource
from seamguard.twin.exporter import DcgmRenderer, basic_header, start_exporter
from tests.http_stub import serve
from tests.test_twin_exporter import twin_batches


@pytest.fixture(scope="module")
def twin() -> tuple[Any, str]:
    topo, batches = twin_batches()
    return topo, DcgmRenderer(topo).render(batches[-1], nodes=[0])


def secret_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def test_the_scrape_sends_basic_auth_and_says_so_when_it_has_none(
    twin: tuple[Any, str], tmp_path: Path
) -> None:
    topo, text = twin
    server = start_exporter(text, authorization=basic_header("seamguard", "s3cret"))
    try:
        bare = DcgmScrapeSource(DcgmSourceConfig(endpoints=(server.url,)), topo).collect(5000.0)
        assert len(bare.batch) == 0
        (notice,) = bare.notices
        assert notice.where == server.url and notice.message.startswith("HTTP 401 Unauthorized")
        assert "set bearer_token_file or basic_auth" in notice.message
        wrong = DcgmSourceConfig.model_validate(
            {"endpoints": [server.url],
             "basic_auth": {"username": "seamguard", "password_file": str(secret_file(tmp_path, "pw0", "nope"))}}
        )  # fmt: skip
        refused = DcgmScrapeSource(wrong, topo).collect(5000.0)
        assert len(refused.batch) == 0 and "HTTP 401" in refused.notices[0].message
        assert "set bearer_token_file" not in refused.notices[0].message  # it had credentials: wrong ones
        cfg = DcgmSourceConfig.model_validate(
            {"endpoints": [server.url],
             "basic_auth": {"username": "seamguard", "password_file": str(secret_file(tmp_path, "pw", "s3cret"))}}
        )  # fmt: skip
        got = DcgmScrapeSource(cfg, topo).collect(5000.0)
        assert got.notices == () and len(got.batch) > 0
    finally:
        server.stop()


def test_the_scrape_sends_a_bearer_token_read_at_every_poll(twin: tuple[Any, str], tmp_path: Path) -> None:
    topo, text = twin
    server = start_exporter(text, authorization="Bearer tok-1")
    token = secret_file(tmp_path, "token", "tok-1")
    try:
        source = DcgmScrapeSource(
            DcgmSourceConfig.model_validate({"endpoints": [server.url], "bearer_token_file": str(token)}),
            topo,
        )
        assert len(source.collect(5000.0).batch) > 0
        token.write_text("tok-2\n")  # rotated on our side only: refused, and said
        assert "HTTP 401" in source.collect(5001.0).notices[0].message
        token.unlink()
        got = source.collect(5002.0)
        assert [(n.where, n.message.split(":")[0]) for n in got.notices] == [
            ("credentials", f"bearer_token_file {token}")
        ]
    finally:
        server.stop()


def test_credential_keys_are_checked_at_load() -> None:
    with pytest.raises(ValueError, match="bearer_token_file and basic_auth are exclusive"):
        DcgmSourceConfig.model_validate(
            {"endpoints": ["http://x:9400/metrics"], "bearer_token_file": "/t",
             "basic_auth": {"username": "u", "password_file": "/p"}}
        )  # fmt: skip
    with pytest.raises(ValueError, match="cert_file and key_file go together"):
        PrometheusApiConfig.model_validate({"url": "http://p:9090", "tls_config": {"cert_file": "/c"}})


class PromStub(BaseHTTPRequestHandler):
    """A Prometheus query API that wants a bearer token and records what it was sent."""

    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        given = self.headers.get("Authorization", "")
        PromStub.seen.append(given)
        ok = given == "Bearer prom-token"
        body = json.dumps(
            {"status": "success", "data": {"resultType": "vector", "result": []}}
            if ok
            else {"status": "error", "error": "unauthorized"}
        ).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def tls_prometheus(tmp_path: Path) -> Iterator[tuple[str, trustme.CA, trustme.CA]]:
    """The stub over TLS, requiring a client certificate from ``clients``."""
    ca, clients = trustme.CA(), trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    clients.configure_trust(ctx)
    ctx.verify_mode = ssl.CERT_REQUIRED
    PromStub.seen = []
    with serve(PromStub, ctx) as url:
        yield url, ca, clients


def test_the_prometheus_source_uses_its_ca_client_cert_and_token(
    tls_prometheus: tuple[str, trustme.CA, trustme.CA], twin: tuple[Any, str], tmp_path: Path
) -> None:
    url, ca, clients = tls_prometheus
    topo = twin[0]
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "me.pem", tmp_path / "me.key"
    ca.cert_pem.write_to_path(str(ca_file))
    mine = clients.issue_cert("seamguard")
    mine.cert_chain_pems[0].write_to_path(str(cert_file))
    mine.private_key_pem.write_to_path(str(key_file))
    base = {"url": url, "tls_config": {"ca_file": str(ca_file)}}
    no_cert = PrometheusApiSource(PrometheusApiConfig.model_validate(base), topo).collect(5000.0)
    assert no_cert.notices and PromStub.seen == []  # the handshake failed: no request reached it
    with_cert = {
        **base,
        "tls_config": {"ca_file": str(ca_file), "cert_file": str(cert_file), "key_file": str(key_file)},
    }
    no_token = PrometheusApiSource(PrometheusApiConfig.model_validate(with_cert), topo).collect(5000.0)
    assert "HTTP 401" in no_token.notices[0].message and PromStub.seen == [""]
    token = secret_file(tmp_path, "prom.token", "prom-token")
    full = PrometheusApiConfig.model_validate({**with_cert, "bearer_token_file": str(token)})
    got = PrometheusApiSource(full, topo).collect(5000.0)
    assert got.notices == () and PromStub.seen[-1] == "Bearer prom-token"
    assert topo.count(EntityKind.NODE) > 0


def test_the_agent_sends_its_token_and_trusts_its_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_service import live_engine

    engine = live_engine()
    engine.server.stop()
    secret = new_token()
    tokens = AuthConfig.model_validate(
        {"tokens": [{"name": "trainer", "roles": ["viewer"], "digest": digest_of(secret)}]}
    )
    security = Security(AccessPolicy(default_rules(None)), TokenTable(tokens), AuditTally())
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile, ca_file = tmp_path / "s.pem", tmp_path / "s.key", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(ca_file))
    server = serve_in_thread(
        create_app(engine.controller, engine.lock, security),
        tls=TlsConfig(certfile=certfile, keyfile=keyfile),
    )
    try:
        monkeypatch.delenv(TOKEN_ENV, raising=False)
        with pytest.raises(
            SourceError, match=f"HTTP 401: .*needs a bearer token.*set {TOKEN_ENV} or token_file"
        ):
            HttpSource(server.url, ca_file=ca_file).risk("train")
        with pytest.raises(SourceError, match="CERTIFICATE_VERIFY_FAILED"):
            HttpSource(server.url).risk("train")  # the system does not trust the test CA
        monkeypatch.setenv(TOKEN_ENV, secret)
        assert HttpSource(server.url, ca_file=ca_file).risk("train").job == "train"
        monkeypatch.delenv(TOKEN_ENV)
        token_file = secret_file(tmp_path, "agent.token", secret)
        assert HttpSource(server.url, ca_file=ca_file, token_file=token_file).risk("train").job == "train"
        token_file.write_text("sgt_revoked\n")
        with pytest.raises(SourceError, match="HTTP 401: unknown or revoked token"):
            HttpSource(server.url, ca_file=ca_file, token_file=token_file).risk("train")
    finally:
        server.stop()


def test_the_agent_names_a_token_file_it_cannot_use_before_it_calls(tmp_path: Path) -> None:
    """A missing or empty token file is a SourceError naming it, raised before any request (the
    URL answers nothing), never a request sent without the token."""
    missing = tmp_path / "absent.token"
    with pytest.raises(SourceError, match=r"HttpSource.token_file .*absent.token: cannot read"):
        HttpSource("http://127.0.0.1:9", token_file=missing).risk("train")
    empty = tmp_path / "empty.token"
    empty.write_text("  \n")
    with pytest.raises(SourceError, match=r"HttpSource.token_file .*empty.token is empty"):
        HttpSource("http://127.0.0.1:9", token_file=empty).risk("train")
