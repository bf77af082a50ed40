"""Probes and how they run: every probe at once, each bounded by its own timeouts.

A probe reaches one component (an exporter, a Modbus device, Slurm's controller, a webhook...)
once, read-only, with the timeout its section configures, and returns one or more rows: what was
tried, whether it answered, and why not in plain words with what to fix. ``run_probes`` starts
every probe on a thread of its own and lets none begin before all have started, so a site with
five unreachable components is checked in about one timeout, not five. A probe that outlasts its
own budget (its calls at their configured timeouts) is reported as failed and left behind on a
daemon thread: it cannot hold the command.
"""

from __future__ import annotations

import contextlib
import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

START_LINE_S = 5.0  # how long a probe waits for the others to start before it runs anyway
GRACE_S = 2.0  # past the longest budget, before a probe still running is given up
RAW_KEPT = 240  # characters of a library's own error text kept after the explanation


@dataclass(frozen=True)
class Row:
    component: str  # "source dcgm", "actuator webhook (advise)", "ha etcd", "journal"
    tried: str  # what was tried: "GET http://n0001:9400/metrics", "scontrol show node --json"
    ok: bool
    reason: str  # what answered, or why not and what to fix


@dataclass(frozen=True)
class Probe:
    component: str
    tried: str  # shown while it runs, and on the row made for it if it never returns
    run: Callable[[], list[Row]]  # never raises for what the component does (run_probes catches bugs)
    budget_s: float  # the longest it may take: its calls at their configured timeouts


@dataclass(frozen=True)
class Outcome:
    rows: tuple[Row, ...]
    probes: int
    peak: int  # probes in flight at once: every probe when they all ran together

    @property
    def failed(self) -> int:
        return sum(not r.ok for r in self.rows)


Progress = Callable[[int, int, Sequence[Probe]], None]  # (finished, total, still running)


def run_probes(probes: Sequence[Probe], progress: Progress | None = None) -> Outcome:
    """Run every probe at once; rows in the order of ``probes`` whatever answers first."""
    if not probes:
        return Outcome((), 0, 0)
    results: dict[int, list[Row]] = {}
    finished: queue.Queue[int] = queue.Queue()
    lock = threading.Lock()
    counts = {"in_flight": 0, "peak": 0}
    start_line = threading.Barrier(len(probes))

    def work(i: int, probe: Probe) -> None:
        with lock:
            counts["in_flight"] += 1
            counts["peak"] = max(counts["peak"], counts["in_flight"])
        # None starts its calls before all are under way; past START_LINE_S (a thread slow to
        # start) the barrier breaks and each runs anyway.
        with contextlib.suppress(threading.BrokenBarrierError):
            start_line.wait(START_LINE_S)
        try:
            rows = probe.run()
        except Exception as exc:  # the boundary: a probe that raises is a bug, reported on its row
            rows = [
                Row(probe.component, probe.tried, False,
                    f"{type(exc).__name__}: {exc} while checking (a seamguard bug: please report it)")
            ]  # fmt: skip
        with lock:
            counts["in_flight"] -= 1
            results[i] = rows
        finished.put(i)

    for i, probe in enumerate(probes):
        threading.Thread(target=work, args=(i, probe), name=f"check-{i}", daemon=True).start()
    deadline = time.monotonic() + max(p.budget_s for p in probes) + GRACE_S
    done: set[int] = set()
    while len(done) < len(probes):
        left = deadline - time.monotonic()
        try:
            done.add(finished.get(timeout=max(left, 0.0)) if left > 0 else finished.get_nowait())
        except queue.Empty:
            break
        if progress is not None:
            progress(len(done), len(probes), [p for i, p in enumerate(probes) if i not in done])
    rows: list[Row] = []
    with lock:
        for i, probe in enumerate(probes):
            if i in done:
                rows.extend(results[i])
            else:
                rows.append(
                    Row(probe.component, probe.tried, False,
                        f"still no answer after {probe.budget_s + GRACE_S:g} s, past its timeouts; gave up")
                )  # fmt: skip
        return Outcome(tuple(rows), len(probes), counts["peak"])


# ---------------------------------------------------------------- what an error means


def tcp_error(host: str, port: int, timeout_s: float) -> str:
    """Why a TCP connection to ``host:port`` fails, in the system's words (``[Errno 111]
    Connection refused``, ``timed out``), for clients that do not say (pymodbus' ``connect()``
    answers False; an async HTTP client, "All connection attempts failed"); "" when it connects."""
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        return str(exc) or type(exc).__name__
    return ""


def url_error(url: str, error: str, timeout_s: float) -> str:
    """A client's error reaching ``url``, made specific by ``tcp_error`` when it says nothing
    known (httpx' async "All connection attempts failed", etcd3gw's bare ConnectionFailedError)."""
    if kind_of(error) or error.startswith("HTTP "):
        return error
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return error
    said = tcp_error(parts.hostname or "", port, timeout_s)
    return f"{said}; {error}" if said else error


def host_port(url: str) -> str:
    """``host:port`` of a URL, with the scheme's port when it names none."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or url
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port or (443 if parts.scheme == 'https' else 80)}"


_KINDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("refused", re.compile(r"connection refused|errno 111\b|econnrefused", re.I)),
    ("dns", re.compile(r"name or service not known|nodename nor servname|temporary failure in name "
                       r"resolution|no address associated|could not translate host name|getaddrinfo", re.I)),
    ("tls", re.compile(r"certificate verify failed|certificate_verify_failed|self[- ]signed certificate|"
                       r"hostname mismatch|wrong version number|\[ssl|sslerror|ssl:|tlsv1 alert|handshake", re.I)),
    ("route", re.compile(r"no route to host|network is unreachable|host is unreachable", re.I)),
    ("timeout", re.compile(r"timed out|timeout|no answer within|no complete answer", re.I)),
    ("missing", re.compile(r"no such file or directory", re.I)),
    ("permission", re.compile(r"permission denied", re.I)),
)  # fmt: skip


def kind_of(error: str) -> str:
    """What went wrong in one word (``refused``, ``dns``, ``tls``, ``route``, ``timeout``,
    ``missing``, ``permission``), or ``""`` when the text says nothing known."""
    return next((kind for kind, pattern in _KINDS if pattern.search(error)), "")


def explain(
    error: str, where: str, timeout_s: float, *, timeout_key: str = "timeout_s",
    ca_key: str = "tls_config.ca_file", service: str = "the service",
) -> str:  # fmt: skip
    """A connection's failure in plain words and what to fix; the library's own text too when it
    is a TLS failure (which check failed) or says nothing known.

    ``where`` is what was reached (``host:port``, a socket path), named first so that the row
    says where to look; ``timeout_key`` and ``ca_key`` are the config keys to name."""
    kind = "" if error.startswith("HTTP ") else kind_of(error)  # the peer answered: its words stand
    host = where.rsplit(":", 1)[0] if ":" in where else where
    meaning = {
        "refused": f"connection refused: nothing listens there; is {service} running, and the port right?",
        "dns": f"the name {host} does not resolve; check DNS or /etc/hosts, or give an address",
        "tls": f"TLS failed: if the certificate is not trusted, set {ca_key} to the CA that signed it; "
        "check http:// against https://",
        "route": "no route to it: the host is down or the network path (VLAN, firewall, routing) is closed",
        "timeout": f"no answer within {timeout_s:g} s ({timeout_key}): the host is down, or a firewall "
        "drops the packets; raise the timeout only if it answers, slowly",
        "missing": "no such file: the path is wrong, or the service is not running on this host",
        "permission": "permission denied: run seamguard as a user allowed to open it",
    }.get(kind, "")
    raw = " ".join(error.split())
    raw = raw if len(raw) <= RAW_KEPT else raw[: RAW_KEPT - 3] + "..."
    if not meaning:
        return f"{where}: {raw}"
    return f"{where}: {meaning} ({raw})" if kind == "tls" else f"{where}: {meaning}"  # which TLS check failed
