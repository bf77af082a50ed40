"""``seamguard gateway``: load the config, open the journal, serve until SIGINT/SIGTERM.

Served by the daemon's server (``service.server.serve_in_thread``): the same TLS and mutual TLS,
the same bounds on connections held and on how long a request's head may take (``connections``),
h11's 16 KiB bound on a request's line and headers. One process: the budgets' ledger is in its
memory, so run one gateway per journal (its writer lock refuses a second).

Like the daemon's, its listening socket has ``TCP_NODELAY`` (``service.server``): without it each
answer's body, written after its head, waited for the client's delayed ACK (40 ms on Linux): one
client alone saw 52 ms a request through the gateway against 2 ms direct (6 ms with it).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.markup import escape

from seamguard.errors import InputError
from seamguard.gateway.app import Gateway
from seamguard.gateway.config import load_gateway_config
from seamguard.gateway.store import SpendStore
from seamguard.service.auth import digest_of, new_token
from seamguard.service.server import RunningServer, serve_in_thread
from seamguard.service.startup import check_tls


def new_key_lines(name: str) -> tuple[str, str]:
    """A fresh key (shown once) and the config entry that holds only its digest."""
    secret = new_token()
    entry = f'- {{name: {name}, tenant: TENANT, digest: "{digest_of(secret)}", budget: {{tokens: 1000000, period: day}}}}'
    return secret, entry


def start_gateway(config_path: Path, listen: str) -> tuple[Gateway, RunningServer]:
    """The gateway serving on ``listen`` (HOST:PORT; port 0: a free one), its journal open."""
    from seamguard.daemon_run import parse_listen

    cfg = load_gateway_config(config_path)
    host, port = parse_listen(listen)
    if cfg.tls is not None:
        check_tls(cfg.tls)
    for up in cfg.upstreams:
        if up.api_key_file is not None and not up.api_key_file.is_file():
            raise InputError(f"gateway.upstreams.{up.name}.api_key_file", f"no such file: {up.api_key_file}")
    store = SpendStore(cfg.journal, cfg.flush_s)
    gateway = Gateway(cfg, store)
    try:
        server = serve_in_thread(gateway.app(), host, port, tls=cfg.tls, connections=cfg.connections)
    except BaseException:
        store.close()
        raise
    return gateway, server


def run_gateway(config_path: Path, listen: str, console: Console) -> None:
    gateway, server = start_gateway(config_path, listen)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    cfg = gateway.config
    console.print(
        f"seamguard gateway serving {escape(server.url)}: {len(cfg.keys)} key(s), "
        f"{len(cfg.upstreams)} upstream(s), models {escape(', '.join(gateway.upstreams.models()))}; "
        f"journal {escape(str(cfg.journal))}"
    )
    try:
        while not stop.wait(0.5):  # woken by the signal handler
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        server.stop()
        gateway.store.close()
        console.print("gateway stopped; settled tokens written")
