"""Probes of the actuators, of etcd and of the journal: read-only, every one.

No action is sent: the webhook gets a HEAD (any answer but a gateway's proves the receiver is
there), HAProxy is asked ``show servers state`` and ``show cli level``, Kubernetes and Slurm
are read as the actuators read a node before acting, etcd is asked for the election key, and the
journal's schema version is read without the writer lock (a SQLite file opened ``mode=ro``).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg

from seamguard.actuators.haproxy import parse_servers_state, runtime_command
from seamguard.actuators.sections import (
    ActuatorsConfig,
    HaproxySection,
    KubernetesSection,
    Routed,
    SlurmSection,
    WebhookSection,
)
from seamguard.check.probe import Probe, Row, explain, host_port, url_error
from seamguard.check.sources import slurm_probe
from seamguard.ha.etcd import Etcd, EtcdUnavailableError
from seamguard.ha.settings import HaConfig
from seamguard.journal import sqlite as sqlite_journal
from seamguard.journal.postgres import SCHEMA_VERSION, is_postgres, schema_version, shown_location
from seamguard.kube_connection import client_configuration

PG_CONNECT_TIMEOUT_S = 10  # as the daemon opens its journal (journal.postgres)
_GATEWAY = frozenset({502, 503, 504})  # a proxy answered for a receiver that did not


def _named(name: str, section: Routed) -> str:
    return f"actuator {name} ({section.mode.value})"


def actuator_probes(actuators: ActuatorsConfig, nodes: Sequence[str]) -> list[Probe]:
    """In the order of ``build_routes``. ``nodes``: the inventory's node names, the first of which
    the Kubernetes and Slurm actuators read as they read a node before acting."""
    out: list[Probe] = []
    if actuators.webhook is not None:
        out.append(webhook_probe(actuators.webhook))
    if actuators.haproxy is not None:
        out.append(haproxy_probe(actuators.haproxy))
    if actuators.kubernetes is not None:
        out.append(kubernetes_nodes_probe(actuators.kubernetes, nodes))
    if actuators.slurm is not None:
        out.append(slurm_actuator_probe(actuators.slurm, nodes))
    return out


def slurm_actuator_probe(cfg: SlurmSection, nodes: Sequence[str]) -> Probe:
    """A node read as the actuator reads one before acting (the inventory's first, else all),
    and its ``scontrol`` found: without an inventory ``sinfo`` may read the nodes, but every
    drain and resume is an ``scontrol update``."""
    read = slurm_probe(_named("slurm", cfg), cfg, "nodes", nodes, named=True)

    def run() -> list[Row]:
        rows = read.run()
        if shutil.which(cfg.scontrol) is None and all(r.ok for r in rows):
            rows.append(Row(read.component, f"{cfg.scontrol} update (found on PATH?)", False,
                            f"{cfg.scontrol} not found: the actuator drains and resumes with it; set scontrol to its path"))  # fmt: skip
        return rows

    return Probe(read.component, read.tried, run, read.budget_s)


# ---------------------------------------------------------------- webhook


def webhook_probe(cfg: WebhookSection) -> Probe:
    component = _named("webhook", cfg)
    scheme = "HTTPS" if cfg.url.startswith("https://") else "HTTP"
    tried = f"HEAD {cfg.url} ({scheme} reachability; no action sent)"
    where = host_port(cfg.url)

    def run() -> list[Row]:
        try:
            with httpx.Client(timeout=cfg.timeout_s) as client:  # as the actuator's own client
                resp = client.head(cfg.url)
        except httpx.HTTPError as exc:
            said = url_error(
                cfg.url, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, cfg.timeout_s
            )
            return [Row(component, tried, False, explain(said, where, cfg.timeout_s, service="the receiver",
                                                         ca_key="SSL_CERT_FILE (the system's CAs are used)"))]  # fmt: skip
        code = f"HTTP {resp.status_code} {resp.reason_phrase}".strip()
        if resp.status_code in _GATEWAY:
            return [Row(component, tried, False, f"{code} from {where}: a proxy answered, the receiver behind "
                        "it did not")]  # fmt: skip
        if resp.is_redirect:
            return [Row(component, tried, False, f"{code} to {resp.headers.get('location', '?')}: actions are "
                        "not POSTed on through a redirect; set url to where it leads")]  # fmt: skip
        also = (
            " (a 4xx answer to a HEAD still proves it is reachable)" if 400 <= resp.status_code < 500 else ""
        )
        return [Row(component, tried, True, f"{code}: the receiver answers{also}")]

    return Probe(component, tried, run, cfg.timeout_s)


# ---------------------------------------------------------------- HAProxy


def haproxy_probe(cfg: HaproxySection) -> Probe:
    component = _named("haproxy", cfg)
    tried = f"HAProxy runtime API {cfg.socket}: `show servers state`, `show cli level`"
    where = cfg.socket.removeprefix("tcp://")

    def run() -> list[Row]:
        try:
            states = parse_servers_state(runtime_command(cfg.socket, "show servers state", cfg.timeout_s))
            level = runtime_command(cfg.socket, "show cli level", cfg.timeout_s).strip()
        except OSError as exc:
            said = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return [Row(component, tried, False, explain(said, where, cfg.timeout_s,
                                                         service="HAProxy (with a `stats socket ... level admin`)"))]  # fmt: skip
        except ValueError as exc:
            return [Row(component, tried, False, f"{where}: not the runtime API's answer: {exc}")]
        known = {f"{s.backend}/{s.server}" for s in states}
        missing = sorted(set(cfg.servers.values()) - known)
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            return [Row(component, tried, False, f"{len(missing)} mapped server(s) HAProxy does not know: "
                        f"{shown}; fix servers (backend/server as in haproxy.cfg)")]  # fmt: skip
        if level in ("user", "operator"):
            return [Row(component, tried, False, f"the socket's level is {level}: setting weights and states "
                        "needs `stats socket ... level admin`")]  # fmt: skip
        return [Row(component, tried, True, f"{len(states)} servers, all {len(cfg.servers)} mapped ones known"
                    + (f"; level {level}" if level == "admin" else ""))]  # fmt: skip

    return Probe(component, tried, run, 2 * cfg.timeout_s)


# ---------------------------------------------------------------- Kubernetes


def kubernetes_nodes_probe(cfg: KubernetesSection, nodes: Sequence[str]) -> Probe:
    """The inventory's first node read as the actuator reads a node (``read_node``), or without
    an inventory one node listed."""
    component = _named("kubernetes", cfg)
    name = cfg.node_name.format(name=nodes[0]) if nodes else None
    tried = f"Kubernetes get node {name}" if name else "Kubernetes list nodes (limit 1)"

    def row(ok: bool, reason: str) -> list[Row]:
        return [Row(component, tried, ok, reason)]

    def run() -> list[Row]:
        try:
            conf = client_configuration(cfg.host, cfg.verify_ssl, cfg.in_cluster, cfg.kubeconfig, cfg.context)
            from kubernetes import client
            from kubernetes.client.exceptions import ApiException
            from urllib3.exceptions import HTTPError
        except Exception as exc:  # the client not installed, a kubeconfig missing or unreadable
            return row(False, f"cannot set up the client: {type(exc).__name__}: {exc} "
                       "(set host, kubeconfig or $KUBECONFIG, or in_cluster: true)")  # fmt: skip
        core = client.CoreV1Api(client.ApiClient(conf))
        try:
            if name is None:
                core.list_node(limit=1, _request_timeout=cfg.timeout_s)
            else:
                core.read_node(name, _request_timeout=cfg.timeout_s)
        except ApiException as exc:
            return row(False, _kube_status(int(exc.status or 0), str(exc.reason or ""), name, cfg.node_name))
        except (HTTPError, OSError) as exc:
            cause: Any = getattr(exc, "reason", None) or exc
            return row(False, explain(f"{type(cause).__name__}: {cause}", host_port(conf.host), cfg.timeout_s,
                                      service="the API server", ca_key="the kubeconfig's certificate-authority"))  # fmt: skip
        return row(True, "the API server answers and lets seamguard read nodes")

    return Probe(component, tried, run, cfg.timeout_s + 1.0)


def _kube_status(status: int, reason: str, name: str | None, template: str) -> str:
    hint = {
        401: "the credentials were refused (token or client certificate)",
        403: "RBAC: seamguard's account needs get, list and patch on nodes, list on pods and create "
        "on pods/eviction (docs/kubernetes.md)",
        404: f"no node {name}: node_name {template!r} must turn the inventory's names into the cluster's"
        if name
        else "no such resource: is host a Kubernetes API server?",
    }.get(status, "")
    return f"HTTP {status} {reason}" + (f": {hint}" if hint else "")


# ---------------------------------------------------------------- etcd


def etcd_probes(ha: HaConfig) -> list[Probe]:
    """Each endpoint on its own: a member down is a row of its own, the others still answer."""
    return [_etcd_probe(ha, url) for url in ha.endpoints]


def _etcd_probe(ha: HaConfig, url: str) -> Probe:
    component = "ha etcd"
    tried = f"etcd {url}: GET {ha.key} (the election key)"

    def run() -> list[Row]:
        try:
            held = Etcd(ha.model_copy(update={"endpoints": [url]})).read(ha.key)
        except EtcdUnavailableError as exc:
            said = url_error(
                url, str(exc).split(": ", 2)[-1], ha.request_timeout_s
            )  # "etcd read: <url>: <what>"
            return [Row(component, tried, False, explain(said, host_port(url), ha.request_timeout_s,
                                                         timeout_key="request_timeout_s", ca_key="ca_file",
                                                         service="etcd"))]  # fmt: skip
        if held is None:
            return [Row(component, tried, True, "answers; no replica leads now")]
        return [Row(component, tried, True, f"answers; {held.value} leads (epoch {held.create_revision})")]

    return Probe(component, tried, run, ha.request_timeout_s + 1.0)


# ---------------------------------------------------------------- the journal


def journal_probe(location: str) -> Probe:
    if is_postgres(location):
        shown = shown_location(location)
        tried = f"PostgreSQL journal {shown}: connect and read the schema version"
        return Probe("journal", tried, lambda: [_postgres_row(location, tried)], PG_CONNECT_TIMEOUT_S + 1.0)
    path = Path(location)
    tried = f"SQLite journal {path}: read the schema version (read-only)"
    return Probe("journal", tried, lambda: [_sqlite_row(path, tried)], 1.0)


def _postgres_row(dsn: str, tried: str) -> Row:
    parts = urlsplit(dsn)
    where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=PG_CONNECT_TIMEOUT_S) as conn:
            seen = schema_version(conn)
    except psycopg.Error as exc:
        return Row("journal", tried, False, explain(str(exc), where, PG_CONNECT_TIMEOUT_S, service="PostgreSQL",
                                                    timeout_key="connect_timeout", ca_key="sslrootcert"))  # fmt: skip
    migrate = f"run `seamguard journal migrate --journal {shown_location(dsn)}`"
    if seen == 0:
        return Row("journal", tried, False, f"{where}: no seamguard schema in this database: {migrate}")
    if seen < SCHEMA_VERSION:
        return Row(
            "journal",
            tried,
            False,
            f"schema version {seen}, this seamguard writes {SCHEMA_VERSION}: {migrate}",
        )
    if seen > SCHEMA_VERSION:
        return Row("journal", tried, False, f"schema version {seen}, written by a newer seamguard than this one "
                   f"({SCHEMA_VERSION}): upgrade seamguard")  # fmt: skip
    return Row("journal", tried, True, f"schema version {seen}, current")


def _sqlite_row(path: Path, tried: str) -> Row:
    if not path.exists():
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            return Row("journal", tried, False, f"directory {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            return Row("journal", tried, False, f"directory {parent} is not writable by this user")
        return Row("journal", tried, True, f"not there yet: `seamguard run` creates it in {parent}")
    try:
        db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=1.0)
        try:
            got = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        return Row("journal", tried, False, f"{path}: not a seamguard journal, or unreadable: {exc}")
    now = sqlite_journal.SCHEMA_VERSION
    if got is None:
        return Row("journal", tried, False, f"{path}: not a seamguard journal (no schema version)")
    seen = int(got[0])
    if seen > now:
        return Row("journal", tried, False, f"schema version {seen}, written by a newer seamguard ({now})")
    upgrade = "" if seen == now else f" (version {seen}: `seamguard run` upgrades it to {now})"
    return Row("journal", tried, True, f"a seamguard journal{upgrade}")
