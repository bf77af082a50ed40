"""The daemon's API over TLS and mutual TLS, with certificates made by ``trustme`` for each test.

Plain HTTP to the TLS port fails; under mTLS a client without a certificate, or with one from
another CA, is refused at the handshake and a good one gets through, where its bearer token is
still asked for (uvicorn does not pass the peer certificate to the app: docs/security.md)."""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import trustme

from seamguard.daemon import Daemon
from seamguard.daemon_run import serve_api
from seamguard.errors import InputError
from seamguard.model.topology import build_topology
from seamguard.service.auth import digest_of, new_token
from seamguard.service.server import RunningServer
from seamguard.service.startup import check_tls
from seamguard.site_config import daemon_config_from_mapping
from seamguard.telemetry.sources.build import build_sources
from tests.conftest import small_inventory, small_jobs

SECRET = new_token()


@pytest.fixture(scope="module")
def cas() -> tuple[trustme.CA, trustme.CA, trustme.CA]:
    """The server's CA, the CA of clients, and a stranger's CA."""
    return trustme.CA(), trustme.CA(), trustme.CA()


def write_server_cert(ca: trustme.CA, where: Path) -> tuple[Path, Path]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = where / "server.pem", where / "server.key"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    return certfile, keyfile


def serve(tmp_path: Path, tls: dict[str, str], connections: dict[str, float] | None = None) -> RunningServer:
    config = daemon_config_from_mapping(
        {
            "engine": {"tick_s": 1, "stale_after_s": 10, "observe_every_s": 10},
            "sources": {"push": {}},
            "service": {
                "auth": {"tokens": [{"name": "ops", "roles": ["viewer"], "digest": digest_of(SECRET)}]},
                "tls": tls,
                "connections": connections or {},
            },
        }
    )
    topo = build_topology(small_inventory(), small_jobs())
    return serve_api(Daemon(config, topo, build_sources(config.site.sources, topo)), "127.0.0.1", 0)


def client_ctx(server_ca: trustme.CA, cert_from: trustme.CA | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    server_ca.configure_trust(ctx)
    if cert_from is not None:
        cert_from.issue_cert("pusher@dc1.example").configure_cert(ctx)
    return ctx


def get(url: str, ctx: ssl.SSLContext | bool, token: str | None = SECRET) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(url, verify=ctx, headers=headers, trust_env=False, timeout=10)


@pytest.fixture
def tls_server(tmp_path: Path, cas: tuple[trustme.CA, trustme.CA, trustme.CA]) -> Iterator[RunningServer]:
    certfile, keyfile = write_server_cert(cas[0], tmp_path)
    server = serve(tmp_path, {"certfile": str(certfile), "keyfile": str(keyfile)})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mtls_server(tmp_path: Path, cas: tuple[trustme.CA, trustme.CA, trustme.CA]) -> Iterator[RunningServer]:
    certfile, keyfile = write_server_cert(cas[0], tmp_path)
    client_ca = tmp_path / "clients.pem"
    cas[1].cert_pem.write_to_path(str(client_ca))
    server = serve(
        tmp_path, {"certfile": str(certfile), "keyfile": str(keyfile), "client_ca": str(client_ca)}
    )
    try:
        yield server
    finally:
        server.stop()


def test_tls_serves_https_and_plain_http_fails(
    tls_server: RunningServer, cas: tuple[trustme.CA, trustme.CA, trustme.CA]
) -> None:
    assert tls_server.url.startswith("https://127.0.0.1:")
    assert get(f"{tls_server.url}/v1/status", client_ctx(cas[0])).status_code == 200
    assert get(f"{tls_server.url}/v1/status", client_ctx(cas[0]), token=None).status_code == 401
    plain = tls_server.url.replace("https://", "http://")
    with pytest.raises(httpx.TransportError):
        get(f"{plain}/healthz", False)
    with pytest.raises(httpx.ConnectError):  # a server certificate from a CA the client does not trust
        get(f"{tls_server.url}/healthz", client_ctx(cas[2]))


def test_mtls_refuses_a_client_without_a_certificate(
    mtls_server: RunningServer, cas: tuple[trustme.CA, trustme.CA, trustme.CA]
) -> None:
    with pytest.raises(httpx.TransportError):
        get(f"{mtls_server.url}/healthz", client_ctx(cas[0]))


def test_mtls_refuses_a_certificate_from_another_ca(
    mtls_server: RunningServer, cas: tuple[trustme.CA, trustme.CA, trustme.CA]
) -> None:
    with pytest.raises(httpx.TransportError):
        get(f"{mtls_server.url}/healthz", client_ctx(cas[0], cert_from=cas[2]))


def test_mtls_admits_a_good_certificate_and_the_token_still_carries_the_role(
    mtls_server: RunningServer, cas: tuple[trustme.CA, trustme.CA, trustme.CA]
) -> None:
    ctx = client_ctx(cas[0], cert_from=cas[1])
    assert get(f"{mtls_server.url}/healthz", ctx, token=None).status_code == 200
    assert get(f"{mtls_server.url}/v1/status", ctx).status_code == 200
    assert get(f"{mtls_server.url}/v1/status", ctx, token=None).status_code == 401


def test_a_certificate_that_does_not_load_is_refused_naming_it(
    tmp_path: Path, cas: tuple[trustme.CA, trustme.CA, trustme.CA]
) -> None:
    from seamguard.service.sections import TlsConfig

    certfile, _ = write_server_cert(cas[0], tmp_path)
    with pytest.raises(InputError, match=re.escape("service.tls.keyfile: no such file")):
        check_tls(TlsConfig(certfile=certfile, keyfile=tmp_path / "nope.key"))
    other = tmp_path / "other.key"
    cas[0].issue_cert("x.example").private_key_pem.write_to_path(str(other))
    with pytest.raises(InputError, match=re.escape(f"cannot load certfile {certfile} with keyfile {other}")):
        check_tls(TlsConfig(certfile=certfile, keyfile=other))


def test_mtls_refuses_an_expired_client_certificate(
    mtls_server: RunningServer, cas: tuple[trustme.CA, trustme.CA, trustme.CA]
) -> None:
    ctx = client_ctx(cas[0])
    now = datetime.now(UTC)
    expired = cas[1].issue_cert(
        "pusher@dc1.example", not_before=now - timedelta(days=30), not_after=now - timedelta(days=1)
    )
    expired.configure_cert(ctx)
    with pytest.raises(httpx.TransportError):
        get(f"{mtls_server.url}/healthz", ctx, token=None)


def test_a_tls_connection_that_never_says_hello_is_dropped_after_the_head_timeout(
    tmp_path: Path, cas: tuple[trustme.CA, trustme.CA, trustme.CA]
) -> None:
    """A TLS connection reaches the connection bounds only once its handshake is done; asyncio
    held a silent one for 60 s, so sockets that never said hello held descriptors uncounted."""
    certfile, keyfile = write_server_cert(cas[0], tmp_path)
    server = serve(tmp_path, {"certfile": str(certfile), "keyfile": str(keyfile)}, {"head_timeout_s": 1.0})
    try:
        host, port = server.url.removeprefix("https://").rsplit(":", 1)
        silent = [socket.create_connection((host, int(port)), timeout=10) for _ in range(5)]
        started = time.monotonic()
        for s in silent:
            s.settimeout(10)
            with contextlib.suppress(ConnectionResetError):
                assert s.recv(100) == b""  # closed by the server
        assert time.monotonic() - started < 5
        assert get(f"{server.url}/healthz", client_ctx(cas[0]), token=None).status_code == 200
    finally:
        server.stop()
