"""A stand-in Kubernetes API server for the pod list: serves PodList pages over loopback HTTP and
checks what the official client sends (bearer token, ``limit``, ``continue``, selectors).

No API server can run here; this one answers the two list endpoints the Kubernetes source uses
exactly as kube-apiserver does (a ``metadata.continue`` token per page, a ``Status`` body on an
error, 410 for a continue token it does not know), so the real client, its configuration from
a kubeconfig and its query encoding are exercised unmodified.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from tests.http_stub import serve

TOKEN = "sg-test-token-3f9a"


@dataclass
class KubeState:
    pages: list[dict[str, Any]]  # PodList pages in order; page i's metadata.continue leads to i+1
    namespaces: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # per-namespace pages
    fail: int = 0  # answer every request with this HTTP status (a Status body)
    body: bytes | None = None  # answer every request with these bytes (status 200)
    delay_s: float = 0.0  # wait this long before answering
    expired: bool = False  # every continue token is too old (etcd compacted it): 410
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (path, query)
    auth: list[str] = field(default_factory=list)  # the Authorization headers seen


def status_body(code: int, reason: str, message: str) -> bytes:
    return json.dumps(
        {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
         "message": message, "reason": reason, "code": code}
    ).encode()  # fmt: skip


def _handler(state: KubeState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            state.requests.append((url.path, query))
            state.auth.append(self.headers.get("Authorization", ""))
            if state.delay_s:
                time.sleep(state.delay_s)
            scheme, _, token = self.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or token != TOKEN:  # the scheme is case-blind, as kube-apiserver's
                return self._send(401, status_body(401, "Unauthorized", "Unauthorized"))
            if state.fail:
                who = "system:serviceaccount:seamguard:seamguard"
                msg = f'pods is forbidden: User "{who}" cannot list resource "pods" in API group "" at the cluster scope'
                return self._send(
                    state.fail,
                    status_body(state.fail, "Forbidden" if state.fail == 403 else "InternalError", msg),
                )
            if state.body is not None:
                return self._send(200, state.body)
            parts = url.path.strip("/").split("/")
            if url.path == "/api/v1/pods":
                pages = state.pages
            elif len(parts) == 5 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
                pages = state.namespaces.get(
                    parts[3], [{"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}]
                )
            else:
                return self._send(
                    404, status_body(404, "NotFound", "the server could not find the requested resource")
                )
            at = 0
            if query.get("continue"):
                tokens = [p["metadata"].get("continue") for p in pages]
                if state.expired or query["continue"] not in tokens:
                    return self._send(
                        410, status_body(410, "Expired", "The provided continue parameter is too old")
                    )
                at = tokens.index(query["continue"]) + 1
            self._send(200, json.dumps(pages[at]).encode())

    return Handler


@contextmanager
def kube_api(state: KubeState, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """``http://127.0.0.1:PORT``, or ``https://`` with ``tls`` (a server-side context)."""
    with serve(_handler(state), tls) as url:
        yield url


def write_kubeconfig(path: Path, server: str, token: str = TOKEN) -> Path:
    """A kubeconfig as ``kubectl config`` writes it: one cluster, one user with a bearer token."""
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "seamguard@test",
        "clusters": [{"name": "test", "cluster": {"server": server}}],
        "users": [{"name": "seamguard", "user": {"token": token}}],
        "contexts": [{"name": "seamguard@test", "context": {"cluster": "test", "user": "seamguard"}}],
        "preferences": {},
    }  # fmt: skip
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def synthetic_pages(total: int, per_page: int, pod: Callable[[int], dict[str, Any]]) -> list[dict[str, Any]]:
    """``total`` pods in pages of ``per_page``, each page's continue token naming the next."""
    pages = []
    for start in range(0, total, per_page):
        meta: dict[str, Any] = {"resourceVersion": "1"}
        if start + per_page < total:
            meta["continue"] = f"tok{start + per_page}"
            meta["remainingItemCount"] = total - start - per_page
        pages.append({"apiVersion": "v1", "kind": "PodList", "metadata": meta,
                      "items": [pod(i) for i in range(start, min(start + per_page, total))]})  # fmt: skip
    return pages
