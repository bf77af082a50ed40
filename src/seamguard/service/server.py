"""Run an app under uvicorn in a background thread of this process.

For an engine that ticks in its main thread and answers advisors alongside, and for tests. The
socket is bound here, before the thread starts, so port 0 (any free port) yields a known URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from seamguard.service.connections import handshake_bounded_loop, protocol_kwargs
from seamguard.service.sections import ConnectionLimits, TlsConfig


@dataclass(frozen=True)
class RunningServer:
    url: str  # http(s)://host:port, no trailing slash
    server: uvicorn.Server
    thread: threading.Thread
    sock: socket.socket

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, finish what is in flight, and release the port."""
        self.server.should_exit = True
        self.thread.join(timeout_s)
        self.sock.close()
        if self.thread.is_alive():
            raise RuntimeError(f"server at {self.url} did not stop within {timeout_s:g} s")


GRACE_S = 3  # seconds a stopping server lets requests in flight finish


def serve_in_thread(
    app: FastAPI,
    host: str = "127.0.0.1",
    port: int = 0,
    start_timeout_s: float = 10.0,
    tls: TlsConfig | None = None,
    connections: ConnectionLimits | None = None,
) -> RunningServer:
    """Serve ``app`` on ``host:port`` (0: a free port) and return once it accepts connections.

    With ``tls``, over HTTPS only; with ``tls.client_ca``, a client must present a certificate
    signed by that CA (mutual TLS) or the handshake fails. uvicorn does not pass the peer's
    certificate to the app, so mTLS admits the connection and the bearer token still names the
    principal and its roles (``docs/security.md``). ``connections`` bounds how many connections
    are held, from one address, and how long a request's head may take (``service.connections``)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Nagle off for every connection accepted (inherited from the listening socket on Linux and
    # the BSDs): made without IPPROTO_TCP, asyncio leaves it on, and each answer's body then waits
    # for the client's delayed ACK, some 40 ms a request.
    with contextlib.suppress(OSError):  # slower, not wrong
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    bound = sock.getsockname()[1]
    ssl_args: dict[str, object] = {}
    if tls is not None:
        ssl_args = {
            "ssl_certfile": str(tls.certfile),
            "ssl_keyfile": str(tls.keyfile),
            "ssl_ca_certs": str(tls.client_ca) if tls.client_ca is not None else None,
            "ssl_cert_reqs": ssl.CERT_REQUIRED if tls.client_ca is not None else ssl.CERT_NONE,
        }
    bounds = connections if connections is not None else ConnectionLimits()
    server = uvicorn.Server(
        # A stop waits this long for what is in flight, then cancels it: a console's live stream
        # never ends by itself, and must not hold a stopping daemon (or a failover) for ever.
        uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=GRACE_S,
            **ssl_args,  # type: ignore[arg-type]
            **protocol_kwargs(bounds),
        )
    )

    def run() -> None:  # uvicorn's own run, on a loop that bounds TLS handshakes
        with asyncio.Runner(loop_factory=handshake_bounded_loop(bounds.head_timeout_s)) as runner:
            runner.run(server.serve(sockets=[sock]))

    thread = threading.Thread(target=run, name="seamguard-service", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(start_timeout_s)
            sock.close()
            raise RuntimeError(f"server on {host}:{bound} did not start within {start_timeout_s:g} s")
        time.sleep(0.01)
    where = f"[{host}]" if ":" in host else host
    scheme = "https" if tls is not None else "http"
    return RunningServer(f"{scheme}://{where}:{bound}", server, thread, sock)
