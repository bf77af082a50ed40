"""Attacks on the live daemon's HTTP API, each replayed over HTTP against ``run_daemon``.

The fixture ``live`` runs the real daemon (``run_daemon`` in a thread, loopback port 0) with a push
source, a tokens file, and the webhook actuator in enforce mode posting to a local stub: a forged
push that got through would drain a node for real. Each attack asserts that it is refused AND that
nothing reached the push queue, no transition was journaled and the webhook was never called. The
legitimate paths are checked on the same daemon, so the negative checks are known to be able to
fail: a pusher's XID 79 does drain a node through the webhook.

Other parts of the service add their attacks here: ``live`` is the fixture to use (``LiveDaemon``
has the tokens of every role, helpers to call the API, and ``wait_ticks``).
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import yaml
from rich.console import Console

from seamguard.daemon import Daemon
from seamguard.daemon_run import run_daemon
from seamguard.errors import InputError
from seamguard.journal.records import AuditRecord
from seamguard.journal.sqlite import SqliteJournal
from seamguard.service.auth import new_token, token_line
from seamguard.service.connections import FD_RESERVE, usable_max_open
from seamguard.service.sections import ConnectionLimits, Role
from seamguard.service.server import RunningServer
from seamguard.site_config import daemon_config_from_mapping
from tests.http_stub import Recorder, serve
from tests.test_daemon import write_inventory, write_jobs

VICTIM = "gpu/n02/1"  # the GPU a forged XID 79 ("fallen off the bus") names
VICTIM_NODE = "node/n02"


def forged_xid(ts: float) -> dict[str, list[Any]]:
    """One row: the GPU has fallen off the bus. Enough, unauthenticated, to drain its node."""
    return {"entity": [VICTIM], "signal": ["gpu.xid"], "timestamp": [ts], "value": [79.0]}


class Hook(Recorder):
    """The webhook actuator's peer: every POST it receives is a drain (or resume) carried out."""

    received: ClassVar[list[dict[str, Any]]] = []


@dataclass
class LiveDaemon:
    """A running ``seamguard run`` and what an attack test needs to check it."""

    url: str
    daemon: Daemon
    journal_path: Path
    tokens_file: Path
    tokens: dict[str, str]  # name -> secret: viewer, pusher, operator, admin, expired
    lines: dict[str, str]  # name -> its tokens-file line
    ticks: list[int] = field(default_factory=lambda: [0])
    cond: threading.Condition = field(default_factory=threading.Condition)

    def request(self, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {self.tokens.get(token, token)}"
        return httpx.request(method, self.url + path, headers=headers, trust_env=False, timeout=10, **kw)

    def push(self, body: dict[str, list[Any]], token: str | None = None, **kw: Any) -> httpx.Response:
        return self.request("POST", "/v1/push", token, json=body, **kw)

    def wait_ticks(self, n: int = 1, timeout_s: float = 20.0) -> None:
        """Until ``n`` more ticks have finished (each drains the push queue and journals)."""
        with self.cond:
            target = self.ticks[0] + n
            if not self.cond.wait_for(lambda: self.ticks[0] >= target, timeout_s):
                raise TimeoutError(f"the daemon did not tick {n} time(s) within {timeout_s:g} s")

    def journal(self) -> SqliteJournal:
        return SqliteJournal(self.journal_path, read_only=True)

    def write_tokens(self, *names: str) -> None:
        """Rewrite the tokens file with only ``names`` (a rotation, as an operator does it)."""
        self.tokens_file.write_text("".join(self.lines[n] + "\n" for n in names), encoding="utf-8")

    def assert_untouched(self) -> None:
        """Nothing reached the engine: no queued row, no transition, no action, no webhook call."""
        assert self.daemon.push is not None and self.daemon.push.queued_rows == 0
        self.wait_ticks(2)
        with self.journal() as j:
            assert j.transitions() == [], j.transitions()
            assert [a for a in j.action_results() if a.target == VICTIM_NODE] == []
        assert Hook.received == []
        assert self.daemon.status().quarantined == ()


ROLES = {"viewer": Role.VIEWER, "pusher": Role.PUSHER, "operator": Role.OPERATOR, "admin": Role.ADMIN}


def make_tokens() -> tuple[dict[str, str], dict[str, str]]:
    secrets = {name: new_token() for name in (*ROLES, "expired", "viewer2", "pusher2")}
    lines = {name: token_line(name, [role], secrets[name]) for name, role in ROLES.items()}
    lines["viewer2"] = token_line("viewer2", [Role.VIEWER], secrets["viewer2"])
    lines["pusher2"] = token_line("pusher2", [Role.PUSHER], secrets["pusher2"])
    past = datetime.now(UTC) - timedelta(hours=1)
    lines["expired"] = token_line("expired", [Role.PUSHER, Role.VIEWER], secrets["expired"], past)
    return secrets, lines


@pytest.fixture
def push_config() -> dict[str, Any]:
    """``sources.push`` of the live daemon; a test parametrizes it to tighten the limits."""
    return {}


@pytest.fixture
def service_config() -> dict[str, Any]:
    """``service`` keys beside ``auth`` (``connections``); a test parametrizes it."""
    return {}


@pytest.fixture
def live(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    push_config: dict[str, Any],
    service_config: dict[str, Any],
) -> Iterator[LiveDaemon]:
    Hook.received, Hook.answer = [], b""
    monkeypatch.setenv("SEAMGUARD_WEBHOOK_SECRET", "hook-secret")
    secrets, lines = make_tokens()
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("".join(lines[n] + "\n" for n in (*ROLES, "expired")), encoding="utf-8")
    # run_daemon installs SIGINT/SIGTERM handlers, which only the main thread may: the handler it
    # would install is kept here and called to stop it, as the signal would.
    handlers: dict[int, Callable[[int, Any], None]] = {}
    monkeypatch.setattr(
        "seamguard.daemon_run.signal.signal", lambda s, h: handlers.setdefault(s, h) and signal.SIG_DFL
    )
    ready = threading.Event()
    got: dict[str, Any] = {}
    failed: list[BaseException] = []
    with serve(Hook) as hook_url:
        config = {
            "engine": {"tick_s": 1, "stale_after_s": 10, "observe_every_s": 10},
            "sources": {"push": push_config},
            "actuators": {
                "webhook": {
                    "url": hook_url + "/drain",
                    "mode": "enforce",
                    "kinds": ["drain_node", "cordon_node"],
                }
            },
            "service": {"auth": {"tokens_file": str(tokens_file)}, **service_config},
        }
        cfg_path = tmp_path / "sg.yaml"
        cfg_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        journal_path = tmp_path / "journal.sqlite"

        def on_ready(daemon: Daemon, server: RunningServer | None) -> None:
            assert server is not None
            live = LiveDaemon(server.url, daemon, journal_path, tokens_file, secrets, lines)
            step = daemon.step

            def counted(now: float) -> Any:
                report = step(now)
                with live.cond:
                    live.ticks[0] += 1
                    live.cond.notify_all()
                return report

            daemon.step = counted  # type: ignore[method-assign]
            got["live"] = live
            ready.set()

        def main() -> None:
            try:
                run_daemon(
                    config_path=cfg_path, inventory=write_inventory(tmp_path / "inv.csv"),
                    jobs=write_jobs(tmp_path / "jobs.csv"), journal_path=journal_path,
                    listen="127.0.0.1:0", ticks=None, console=Console(file=io.StringIO()), on_ready=on_ready,
                )  # fmt: skip
            except BaseException as exc:
                failed.append(exc)
                ready.set()

        thread = threading.Thread(target=main, name="seamguard-run", daemon=True)
        thread.start()
        assert ready.wait(30) and not failed, failed
        try:
            live: LiveDaemon = got["live"]
            live.wait_ticks(1)
            yield live
        finally:
            handlers[signal.SIGTERM](signal.SIGTERM, None)
            thread.join(30)
            assert not thread.is_alive() and not failed, failed


# ---- the attacks ------------------------------------------------------------------------------


def test_a_forged_xid_push_without_a_token_is_refused(live: LiveDaemon) -> None:
    resp = live.push(forged_xid(time.time()))
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert "no Authorization header" in resp.json()["detail"]
    live.assert_untouched()


def test_a_forged_xid_push_with_a_viewer_token_is_forbidden(live: LiveDaemon) -> None:
    resp = live.push(forged_xid(time.time()), "viewer")
    assert resp.status_code == 403
    detail = resp.json()["detail"]
    assert "'viewer'" in detail and "needs pusher" in detail
    assert live.tokens["viewer"] not in resp.text  # the secret is never echoed
    live.assert_untouched()


@pytest.mark.parametrize("param", ["access_token", "token"])
def test_a_token_in_the_query_string_is_ignored(live: LiveDaemon, param: str) -> None:
    resp = live.request("POST", f"/v1/push?{param}={live.tokens['pusher']}", json=forged_xid(time.time()))
    assert resp.status_code == 401 and live.tokens["pusher"] not in resp.text
    live.assert_untouched()


def test_a_token_in_a_cookie_is_ignored(live: LiveDaemon) -> None:
    resp = live.push(forged_xid(time.time()), cookies={"Authorization": f"Bearer {live.tokens['pusher']}"})
    assert resp.status_code == 401
    live.assert_untouched()


def test_a_cross_origin_text_plain_post_from_a_browser_is_refused(live: LiveDaemon) -> None:
    """What a page in an operator's browser can send without a preflight: a simple POST, text/plain,
    with an Origin and no Authorization header. It is refused, and no CORS header invites a retry."""
    resp = live.request(
        "POST", "/v1/push", content=json.dumps(forged_xid(time.time())),
        headers={"Content-Type": "text/plain", "Origin": "https://evil.example"},
    )  # fmt: skip
    assert resp.status_code == 401
    assert "access-control-allow-origin" not in resp.headers
    preflight = live.request(
        "OPTIONS", "/v1/push",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization"},
    )  # fmt: skip
    assert preflight.status_code == 401 and "access-control-allow-origin" not in preflight.headers
    live.assert_untouched()


@pytest.mark.parametrize(
    "path", ["/v1/status", "/v1/economics", "/v1/jobs/train/risk", "/docs", "/openapi.json", "/metrics"]
)
def test_reading_without_a_token_is_refused(live: LiveDaemon, path: str) -> None:
    resp = live.request("GET", path)
    assert resp.status_code == 401, resp.text
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert f"GET {path} needs a bearer token with role viewer" in resp.json()["detail"]


def test_an_unknown_route_needs_admin(live: LiveDaemon) -> None:
    """Default deny: a route the access table does not name (an operator endpoint another module
    adds later) is refused to every role but admin."""
    for who in ("viewer", "pusher", "operator"):
        resp = live.request("POST", "/v1/pause", who)
        assert resp.status_code == 403 and "needs admin" in resp.json()["detail"], (who, resp.text)
    assert live.request("POST", "/v1/pause", "admin").status_code == 404  # through: no such route


def test_a_rotated_out_token_is_refused_without_a_restart(live: LiveDaemon) -> None:
    assert live.request("GET", "/v1/status", "viewer").status_code == 200
    live.write_tokens("pusher", "viewer2")  # viewer's token revoked, a new one issued
    time.sleep(1.1)  # the file is looked at once a second at most
    resp = live.request("GET", "/v1/status", "viewer")
    assert resp.status_code == 401 and "unknown or revoked token" in resp.json()["detail"]
    assert live.request("GET", "/v1/status", "viewer2").status_code == 200
    live.wait_ticks(1)
    with live.journal() as j:
        notes = [n.message for n in j.notices() if n.source == "service"]
    removed = [m.split("removed ", 1)[1].split(", ") for m in notes if "added viewer2" in m]
    assert removed == [["admin", "expired", "operator", "viewer"]], notes


def test_a_broken_tokens_file_keeps_the_previous_table_and_says_why(live: LiveDaemon) -> None:
    live.tokens_file.write_text(live.lines["viewer"] + "\nadmin everything sha256:nothex\n", encoding="utf-8")
    time.sleep(1.1)
    assert live.request("GET", "/v1/status", "admin").status_code == 200  # the old table is in force
    assert live.push(forged_xid(time.time())).status_code == 401  # and the door is not open
    live.wait_ticks(1)
    with live.journal() as j:
        errors = [n for n in j.notices() if n.source == "service" and n.level == "error"]
    assert len(errors) == 1 and f"{live.tokens_file}:2" in errors[0].message, errors
    assert "previous 5 token(s) stay" in errors[0].message


def test_an_expired_token_is_refused(live: LiveDaemon) -> None:
    resp = live.push(forged_xid(time.time()), "expired")
    assert resp.status_code == 401 and "token of 'expired' expired" in resp.json()["detail"]
    assert live.request("GET", "/v1/status", "expired").status_code == 401
    live.assert_untouched()


def test_a_token_for_another_role_is_forbidden(live: LiveDaemon) -> None:
    """A pusher cannot read; a viewer or operator cannot push."""
    assert live.request("GET", "/v1/status", "pusher").status_code == 403
    assert live.request("GET", "/openapi.json", "pusher").status_code == 403
    assert live.push(forged_xid(time.time()), "operator").status_code == 403
    live.assert_untouched()


def test_a_malformed_authorization_header_is_refused(live: LiveDaemon) -> None:
    for value in ("Basic dXNlcjpwYXNz", "Bearer", f"Token {live.tokens['pusher']}"):
        resp = live.request(
            "POST", "/v1/push", json=forged_xid(time.time()), headers={"Authorization": value}
        )
        assert resp.status_code == 401, value
        assert live.tokens["pusher"] not in resp.text
    live.assert_untouched()


# ---- the legitimate paths (and proof the checks above can fail) --------------------------------


def test_a_pushers_xid_is_accepted_and_drains_the_node(live: LiveDaemon) -> None:
    """The same forged row with a pusher's token does drain n02 through the webhook: the daemon in
    this fixture can act, so ``assert_untouched`` would see an attack that got through."""
    resp = live.push(forged_xid(time.time()), "pusher")
    assert resp.status_code == 202, resp.text
    deadline = time.monotonic() + 20
    while not Hook.received and time.monotonic() < deadline:
        live.wait_ticks(1)
    assert [(h["kind"], h["target"]) for h in Hook.received][:1] == [("drain_node", VICTIM_NODE)]
    with live.journal() as j:
        assert any(t.entity == VICTIM for t in j.transitions())


def test_reads_work_for_viewer_operator_and_admin(live: LiveDaemon) -> None:
    for who in ("viewer", "operator", "admin"):
        for path in ("/v1/status", "/v1/economics", "/openapi.json", "/docs", "/metrics"):
            resp = live.request("GET", path, who)
            assert resp.status_code == 200, (who, path, resp.text)
    risk = live.request("GET", "/v1/jobs/train/risk", "viewer")
    assert risk.status_code in (200, 503), risk.text  # through the layer: the engine answers


def test_the_probes_answer_without_a_token(live: LiveDaemon) -> None:
    assert live.request("GET", "/healthz").json()["status"] == "ok"
    ready = live.request("GET", "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert live.request("POST", "/healthz").status_code == 401  # public for reading only
    for probe in ("/healthz", "/readyz"):  # a load balancer's HEAD check
        assert live.request("HEAD", probe).status_code == 200, probe


def test_refused_and_state_changing_requests_are_journaled_as_a_tally(live: LiveDaemon) -> None:
    for _ in range(3):
        assert live.push(forged_xid(time.time())).status_code == 401
    assert live.request("GET", "/v1/status", "pusher").status_code == 403
    empty = {"entity": [], "signal": [], "timestamp": [], "value": []}
    for _ in range(4):
        assert live.push(empty, "pusher").status_code == 202
    assert live.request("GET", "/v1/status", "viewer").status_code == 200  # a read: not journaled
    live.wait_ticks(2)
    with live.journal() as j:
        rows: list[AuditRecord] = j.audit()
    # One row per key per flush (each tick): on a loaded machine a tick can fall between the
    # requests, so a key's tally may be split over rows.
    tally: dict[tuple[str, str, str, int], int] = {}
    clients: dict[tuple[str, str, str, int], set[str]] = {}
    for r in rows:
        k = (r.principal, r.method, r.path, r.status)
        tally[k] = tally.get(k, 0) + r.count
        clients.setdefault(k, set()).add(r.client)
    anon = ("anonymous", "POST", "/v1/push", 401)
    assert tally[anon] == 3 and clients[anon] == {"127.0.0.1"}
    assert tally[("pusher", "GET", "/v1/status", 403)] == 1
    pushed = ("pusher", "POST", "/v1/push", 202)
    assert tally[pushed] == 4 and clients[pushed] == {""}
    assert not any(r.principal == "viewer" for r in rows)


# ---- flooding and forged readings ---------------------------------------------------------------


def hot_readings(ts: float, gpus: int = 40) -> dict[str, list[Any]]:
    """The storm-brake attack: every GPU of the fleet suddenly at 98 degC."""
    names = [f"gpu/n{n:02d}/{g}" for n in range(1, 9) for g in range(8)][:gpus]
    return {"entity": names, "signal": ["gpu.temp_c"] * len(names), "timestamp": [ts] * len(names),
            "value": [98.0] * len(names)}  # fmt: skip


def test_forged_hot_readings_cannot_reach_the_engine(live: LiveDaemon) -> None:
    """Forged heat for 40 GPUs would switch the storm brake on and hold back a genuine drain: without
    a pusher's token it is refused, the brake stays off, and a genuine XID 79 still drains."""
    for token in (None, "viewer", "operator", "expired"):
        assert live.push(hot_readings(time.time()), token).status_code in (401, 403), token
    live.assert_untouched()
    assert live.daemon.status().storm_brake is None
    assert live.push(forged_xid(time.time()), "pusher").status_code == 202
    deadline = time.monotonic() + 20
    while not Hook.received and time.monotonic() < deadline:
        live.wait_ticks(1)
    assert [(h["kind"], h["target"]) for h in Hook.received][:1] == [("drain_node", VICTIM_NODE)]


@pytest.mark.parametrize(
    "push_config", [{"rate_limit_rows_per_s": 1, "burst_rows": 100, "max_queue_share": 0.5}]
)
def test_one_pushers_flood_does_not_starve_another(live: LiveDaemon) -> None:
    """Rate limits key on the authenticated principal: the flooding pusher gets 429 with a
    Retry-After, a second pusher's token (another principal) is still accepted."""
    live.write_tokens(*ROLES, "pusher2")
    time.sleep(1.1)  # the tokens file is looked at once a second at most
    body = hot_readings(time.time(), gpus=40)
    codes = [live.push(body, "pusher").status_code for _ in range(4)]
    assert codes[:2] == [202, 202] and codes[-1] == 429, codes
    flooded = live.push(body, "pusher")
    assert flooded.status_code == 429 and int(flooded.headers["retry-after"]) >= 1
    assert "principal pusher" in flooded.text
    assert live.push(body, "pusher2").status_code == 202


# ---- connections: slowloris and floods of sockets -------------------------------------------


def open_socket(live: LiveDaemon, source: str = "127.0.0.1") -> socket.socket:
    host, port = live.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10, source_address=(source, 0))


def answer_of(sock: socket.socket, timeout_s: float) -> bytes:
    """What the server sent before closing, or b"" if it neither answered nor closed in time."""
    sock.settimeout(timeout_s)
    out = b""
    try:
        while chunk := sock.recv(4096):
            out += chunk
    except TimeoutError:
        return b""
    return out


def pusher_from(live: LiveDaemon, source: str) -> httpx.Client:
    """A client on another loopback address: another host, as far as the server can tell."""
    return httpx.Client(
        base_url=live.url, trust_env=False, timeout=10,
        transport=httpx.HTTPTransport(local_address=source),
        headers={"Authorization": f"Bearer {live.tokens['pusher']}"},
    )  # fmt: skip


@pytest.mark.parametrize("service_config", [{"connections": {"head_timeout_s": 1.5, "per_client": 8}}])
def test_a_slowloris_is_cut_off_and_does_not_lock_out_other_hosts(live: LiveDaemon) -> None:
    """Eight sockets dripping a header byte every half second (a drip resets no timer) are
    answered 408 and closed once the head timeout passes; meanwhile a ninth from the same address
    is turned away at once, and a pusher on another address is served."""
    drips = [open_socket(live) for _ in range(8)]
    for s in drips:
        s.sendall(b"POST /v1/push HTTP/1.1\r\nHost: x\r\n")
    ninth = open_socket(live)
    assert b"503" in answer_of(ninth, 5) and b"from this address" in answer_of(open_socket(live), 5)
    with pusher_from(live, "127.0.0.2") as other:
        assert other.post("/v1/push", json=forged_xid(time.time())).status_code == 202
    for _ in range(8):  # 4 s of drips: twice the timeout, which they would outlive had a byte reset it
        time.sleep(0.5)
        for s in drips:
            with contextlib.suppress(OSError):
                s.sendall(b"X")
    answers = [answer_of(s, 0.2) for s in drips]  # already answered and closed, not waited for
    assert all(a.startswith(b"HTTP/1.1 408") and b"did not arrive within 1.5 s" in a for a in answers)
    with pusher_from(live, "127.0.0.1") as same:  # the address's sockets were given back
        assert same.get("/healthz").status_code == 200


@pytest.mark.parametrize("service_config", [{"connections": {"max_open": 6, "per_client": 100}}])
def test_connections_past_max_open_are_refused_at_once_not_held(live: LiveDaemon) -> None:
    idle = [open_socket(live) for _ in range(6)]
    late = answer_of(open_socket(live, "127.0.0.3"), 5)
    assert late.startswith(b"HTTP/1.1 503") and b"too many connections" in late
    for s in idle:
        s.close()
    time.sleep(0.3)
    with pusher_from(live, "127.0.0.3") as other:
        assert other.get("/healthz").status_code == 200


@pytest.mark.parametrize("push_config", [{"body_timeout_s": 1.0}])
def test_a_slow_push_body_is_refused_with_408_and_nothing_queued(live: LiveDaemon) -> None:
    """A pusher that passed authentication and the rate check, then sends its body a byte at a
    time: refused once the body deadline passes, whatever the bytes' pace."""
    sock = open_socket(live)
    body = json.dumps(forged_xid(time.time())).encode()
    sock.sendall(
        b"POST /v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {live.tokens['pusher']}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    )
    started = time.monotonic()
    for byte in body[:4]:  # a byte each 0.2 s: a per-chunk timeout of 1 s would never fire
        sock.sendall(bytes([byte]))
        time.sleep(0.2)
    answer = answer_of(sock, 5)
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in answer, answer
    assert time.monotonic() - started < 4
    live.assert_untouched()


def test_max_open_leaves_descriptors_to_the_rest_of_the_daemon() -> None:
    """With ``ulimit -n`` 1024, 4,096 connections could never be held: the cap is lowered so that
    the journal, the sources and the actuators still get a descriptor."""
    limits = ConnectionLimits()
    assert usable_max_open(limits, soft_nofile=1024) == 1024 - FD_RESERVE
    assert usable_max_open(limits, soft_nofile=1 << 20) == limits.max_open


@pytest.mark.parametrize("push_config", [{"rate_limit_rows_per_s": 1, "burst_rows": 1000}])
def test_refused_batches_are_billed_so_they_cannot_keep_the_daemon_parsing(live: LiveDaemon) -> None:
    """A refusal that cost nothing (a stamp in 2001, a body that does not parse) could be sent in
    a loop: each is parsed whole, none was charged, the rate limit never engaged. Now a refused
    body is billed like an accepted one, so the next is refused before its body is read."""
    live.write_tokens(*ROLES, "pusher2")
    time.sleep(1.1)  # the tokens file is looked at once a second at most
    n = 1000
    stale = {
        "entity": [VICTIM] * n,
        "signal": ["gpu.xid"] * n,
        "timestamp": [978307200.0] * n,
        "value": [79.0] * n,
    }
    assert live.push(stale, "pusher").status_code == 422
    again = live.push(stale, "pusher")
    assert again.status_code == 429 and "its bucket is empty" in again.json()["detail"], again.text
    assert again.headers["retry-after"] == "1"  # the burst of 1,000 billed: a row back in 1 s
    garbage = b'{"entity": [' + b'"x", ' * 4000  # 20,000 bytes that never close: 1,250 rows' worth
    headers = {"Content-Type": "application/json"}
    assert live.request("POST", "/v1/push", "pusher2", content=garbage, headers=headers).status_code == 400
    assert live.request("POST", "/v1/push", "pusher2", content=garbage, headers=headers).status_code == 429
    assert live.push(forged_xid(time.time()), "admin").status_code == 202  # another principal: its own bucket


def test_a_scan_of_random_paths_and_methods_adds_a_row_per_route_not_per_path(live: LiveDaemon) -> None:
    """The audit was keyed on the path as sent: an anonymous scan of random paths (or job names)
    journaled up to 1,000 rows a tick, each with 200 characters the attacker chose."""
    with httpx.Client(base_url=live.url, trust_env=False, timeout=10) as c:
        for i in range(60):
            assert c.get(f"/scan-{i}-%0A%1B[31m{'x' * 150}").status_code == 401
            assert c.get(f"/v1/jobs/no-such-job-{i}/risk").status_code == 401
            assert c.request(f"PROBE{i}", "/v1/push").status_code == 401
    live.wait_ticks(2)
    anon: Counter[tuple[str, str]] = Counter()
    with live.journal() as j:
        for r in j.audit():  # a row per key and tick: the scan spans a few ticks
            anon[r.method, r.path] += r.count if r.principal == "anonymous" else 0
    assert anon == {
        ("GET", "(no route)"): 60,
        ("GET", "/v1/jobs/{job}/risk"): 60,
        ("(other)", "/v1/push"): 60,
    }


@pytest.mark.parametrize("push_config", [{"path": "/ingest/v2"}])
def test_a_moved_push_path_is_the_one_the_table_guards(live: LiveDaemon) -> None:
    body = forged_xid(time.time())
    assert live.request("POST", "/ingest/v2", json=body).status_code == 401
    assert live.request("POST", "/ingest/v2", "viewer", json=body).status_code == 403
    assert live.request("POST", "/v1/push", "pusher", json=body).status_code == 403  # no rule: admin
    assert live.request("POST", "/ingest/v2", "pusher", json=body).status_code == 202


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("v1/push", "not a literal path"),  # served nowhere the table looks: the push silently dead
        ("/v1/{p:path}", "not a literal path"),  # the router took /v1/a/b, the table judged [^/]+
        ("/v1/{job}", "not a literal path"),  # POST /v1/status would have been a push
        ("/v1/push/", "not a literal path"),
        ("/v1//push", "not a literal path"),
        ("/v1/%70ush", "not a literal path"),  # the router matches it decoded, the table as written
        ("/v1/../push", "not a literal path"),
        ("/healthz", "already serves"),  # POST to the public probe's path would be a push
        ("/v1/jobs/x/risk", "already serves"),
    ],
)
def test_a_push_path_the_table_and_router_would_read_apart_is_refused(path: str, why: str) -> None:
    with pytest.raises(InputError, match=rf"sources\.push\.path: .*{why}"):
        daemon_config_from_mapping({"sources": {"push": {"path": path}}})


def test_a_peers_text_in_an_action_detail_cannot_stop_the_daemon(live: LiveDaemon) -> None:
    """The daemon prints each action's detail, which carries the peer's answer (the webhook's
    body, an API's message), through rich: an answer holding ``[/]`` raised MarkupError in the
    main loop and stopped the daemon."""
    Hook.answer = b"ok [/] [bold red]not markup"
    assert live.push(forged_xid(time.time()), "pusher").status_code == 202
    deadline = time.monotonic() + 20
    while not Hook.received and time.monotonic() < deadline:
        live.wait_ticks(1)
    assert Hook.received
    live.wait_ticks(3)  # still ticking
    with live.journal() as j:
        assert any("ok [/] [bold red]not markup" in a.detail for a in j.action_results())


def test_the_per_client_cap_counts_an_ipv6_host_by_its_64() -> None:
    """A host handed a /64 could open every connection from a new address: they count as one."""
    from seamguard.service.connections import client_key

    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff:abcd:1:9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:10.0.0.7") == client_key("10.0.0.7") == "10.0.0.7"  # dual-stack socket
    assert client_key("10.0.0.7") != client_key("10.0.0.8")
