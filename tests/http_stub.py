"""A throw-away HTTP server on a free loopback port, for tests that need a peer to answer."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` answered by ``handler`` until the block ends, or ``https://``
    with ``tls`` (a server-side context holding the certificate)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Ok(BaseHTTPRequestHandler):
    """Answers every POST with 200 (a webhook that accepts whatever it is sent), quietly."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class Recorder(BaseHTTPRequestHandler):
    """A webhook peer that keeps the JSON body of every POST in ``received`` and answers 200 with
    ``answer``, quietly. Subclass it with a ``received`` list of its own."""

    received: ClassVar[list[dict[str, Any]]] = []
    answer: ClassVar[bytes] = b""

    def do_POST(self) -> None:
        type(self).received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.answer)))
        self.end_headers()
        self.wfile.write(self.answer)

    def log_message(self, *args: object) -> None:
        pass
