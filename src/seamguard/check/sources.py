"""Probes of the ``sources:`` section, each through the read path its source uses.

DCGM exporters are fetched with the scrape source's own client (``fetch_all``: its timeout,
concurrency, body cap and credentials), Prometheus is asked the source's own queries, a Modbus
device is read through pymodbus as the source reads it (one point's registers), Slurm's parts
with the source's ``SlurmReader`` (its forms, fallbacks and timeout), Kubernetes with the
source's pod pager. Nothing here writes anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from seamguard.check.probe import Probe, Row, explain, host_port, tcp_error, url_error
from seamguard.kube_connection import client_configuration
from seamguard.telemetry.sources.base import read_json
from seamguard.telemetry.sources.dcgm_config import DcgmSourceConfig
from seamguard.telemetry.sources.http_auth import client_auth
from seamguard.telemetry.sources.kubernetes_config import KubernetesSourceConfig
from seamguard.telemetry.sources.modbus import exception_name
from seamguard.telemetry.sources.prometheus_api import _vector, dcgm_query
from seamguard.telemetry.sources.prometheus_config import PrometheusApiConfig
from seamguard.telemetry.sources.registers import ModbusDevice, Table
from seamguard.telemetry.sources.scrape import Fetched, fetch_all
from seamguard.telemetry.sources.sections import SourcesConfig
from seamguard.telemetry.sources.slurm import Read, SlurmReader
from seamguard.telemetry.sources.slurm_commands import SlurmConfig

SHOWN_ENDPOINTS = 10  # more exporters than this: the ones that answered are one row
SHOWN_FAILURES = 20  # ...and at most this many failed ones are listed, the rest counted


def source_probes(sources: SourcesConfig, nodes: Sequence[str]) -> list[Probe]:
    """One probe per thing to reach, in the order of ``build_sources``. ``nodes``: the
    inventory's node names (empty without ``--inventory``), looked up in Slurm."""
    out: list[Probe] = []
    if sources.dcgm is not None:
        out.append(dcgm_probe(sources.dcgm))
    if sources.prometheus is not None:
        out.append(prometheus_probe(sources.prometheus))
    if sources.modbus is not None:
        out.extend(modbus_probe(d) for d in sources.modbus.devices)
    if sources.slurm is not None:
        out.extend(slurm_probe("source slurm", sources.slurm, part, nodes) for part in SLURM_PARTS)
    if sources.kubernetes is not None:
        k = sources.kubernetes
        out.extend(kubernetes_pods_probe(k, ns) for ns in (k.namespaces or (None,)))
    if (push := sources.push) is not None:
        said = Row("source push", f"POST {push.path}", True,
                   f"nothing to reach: pushers POST to {push.path} on `seamguard run --listen HOST:PORT`")  # fmt: skip
        out.append(Probe(said.component, said.tried, lambda: [said], 0.0))
    return out


# ---------------------------------------------------------------- DCGM exporters


def dcgm_probe(cfg: DcgmSourceConfig) -> Probe:
    urls = [e.url for e in cfg.endpoints]
    component = f"source {cfg.name}"
    tried = f"GET {urls[0]}" if len(urls) == 1 else f"GET each of {len(urls)} exporters"

    def run() -> list[Row]:
        try:
            auth = client_auth(cfg)
        except ValueError as exc:
            return [Row(component, tried, False, f"{exc}: fix the file, or the key naming it")]
        got: dict[str, Fetched] = {}
        fetch_all(urls, timeout_s=cfg.timeout_s, concurrency=cfg.concurrency, max_bytes=cfg.max_bytes,
                  on_result=lambda f: got.__setitem__(f.url, f), auth=auth)  # fmt: skip
        rows = [_exporter_row(component, cfg, got[u]) for u in urls]
        return rows if len(rows) <= SHOWN_ENDPOINTS else _folded(component, rows)

    return Probe(component, tried, run, math.ceil(len(urls) / cfg.concurrency) * cfg.timeout_s)


def _exporter_row(component: str, cfg: DcgmSourceConfig, f: Fetched) -> Row:
    tried = f"GET {f.url}"
    if f.body is None:
        hint = (
            " (an exporter serves /metrics: check the URL's path)" if f.error.startswith("HTTP 404") else ""
        )
        said = url_error(f.url, f.error, cfg.timeout_s)
        return Row(component, tried, False, explain(said, host_port(f.url), cfg.timeout_s, service="the exporter") + hint)  # fmt: skip
    series = sum(1 for line in f.body.splitlines() if line.startswith("DCGM_"))
    if not series:
        return Row(component, tried, False, f"{host_port(f.url)} answers, but with no DCGM_ series: is this "
                   "a dcgm-exporter, on its port (9400 by default)?")  # fmt: skip
    return Row(component, tried, True, f"HTTP 200, {f.size:,} bytes, {series:,} DCGM samples")


def _folded(component: str, rows: list[Row]) -> list[Row]:
    """Many exporters: one row for those that answered, then each failed one (up to a limit)."""
    bad = [r for r in rows if not r.ok]
    answered = len(rows) - len(bad)
    out = []
    if answered:
        out.append(Row(component, f"GET each of {len(rows):,} exporters", True,
                       f"{answered:,} answered with DCGM samples" + (f"; {len(bad):,} did not (below)" if bad else "")))  # fmt: skip
    out += bad[:SHOWN_FAILURES]
    if len(bad) > SHOWN_FAILURES:
        out.append(
            Row(component, f"GET {len(bad) - SHOWN_FAILURES:,} more exporters", False, "failed as well")
        )
    return out


# ---------------------------------------------------------------- Prometheus


def prometheus_probe(cfg: PrometheusApiConfig) -> Probe:
    """The source's own queries, once each, at Prometheus' now."""
    asks: dict[str, str | None] = {}  # url -> the extra query (None: the DCGM fields' query)
    if cfg.dcgm:
        asks[f"{cfg.url}/api/v1/query?{urlencode({'query': dcgm_query(cfg.dcgm_selector)})}"] = None
    for q in cfg.queries:
        asks[f"{cfg.url}/api/v1/query?{urlencode({'query': q.query})}"] = q.query
    component = f"source {cfg.name}"

    def tried(query: str | None) -> str:
        return f"GET {cfg.url}/api/v1/query " + ("(the DCGM fields)" if query is None else f"{query!r}")

    def run() -> list[Row]:
        try:
            auth = client_auth(cfg)
        except ValueError as exc:
            return [Row(component, tried(None), False, f"{exc}: fix the file, or the key naming it")]
        got: dict[str, Fetched] = {}
        fetch_all(list(asks), timeout_s=cfg.timeout_s, concurrency=len(asks), max_bytes=cfg.max_bytes,
                  on_result=lambda f: got.__setitem__(f.url, f), auth=auth)  # fmt: skip
        return [_query_row(component, tried(q), cfg, got[url], q) for url, q in asks.items()]

    return Probe(component, tried(next(iter(asks.values()))), run, cfg.timeout_s)


def _query_row(component: str, tried: str, cfg: PrometheusApiConfig, f: Fetched, query: str | None) -> Row:
    if f.body is None:
        said = url_error(cfg.url, f.error, cfg.timeout_s)
        return Row(component, tried, False, explain(said, host_port(cfg.url), cfg.timeout_s, service="Prometheus"))  # fmt: skip
    try:
        n = len(_vector(f))
    except ValueError as exc:
        fix = "fix the query" if query is not None else "is this Prometheus' base URL?"
        return Row(component, tried, False, f"{exc} ({fix})")
    if query is None and n == 0:
        selector = f" matching dcgm_selector {cfg.dcgm_selector!r}" if cfg.dcgm_selector else ""
        return Row(component, tried, False, f"Prometheus answers, but holds no DCGM series{selector}: check "
                   "the selector, and that Prometheus scrapes the exporters (its /targets page)")  # fmt: skip
    return Row(component, tried, True, f"{n:,} series")


# ---------------------------------------------------------------- Modbus


def modbus_probe(dev: ModbusDevice) -> Probe:
    """The registers of the device's first point, read as the source reads them."""
    point = dev.points[0]
    where = f"{dev.host}:{dev.port}"
    component = f"source modbus {dev.name}"
    tried = (f"Modbus read of {point.width} register{'s' if point.width > 1 else ''} at {where} unit "
             f"{dev.unit} ({point.table.value} {point.address})")  # fmt: skip

    def row(ok: bool, reason: str) -> list[Row]:
        return [Row(component, tried, ok, reason)]

    def run() -> list[Row]:
        client = ModbusTcpClient(dev.host, port=dev.port, timeout=dev.timeout_s, retries=0)
        try:
            if not client.connect():  # type: ignore[no-untyped-call]
                said = tcp_error(dev.host, dev.port, dev.timeout_s) or "cannot connect"
                return row(False, explain(said, where, dev.timeout_s, service="the Modbus gateway"))
            read = (
                client.read_holding_registers if point.table is Table.HOLDING else client.read_input_registers
            )
            answer = read(point.address, count=point.width, device_id=dev.unit)
        except (ModbusIOException, ConnectionException, OSError) as exc:
            return row(False, f"{where} connected, but unit {dev.unit} did not answer within {dev.timeout_s:g} s "
                       f"(timeout_s): a wrong unit id, or the device behind the gateway is off ({exc})")  # fmt: skip
        except ModbusException as exc:
            return row(False, f"{where}: bad response: {exc}")
        finally:
            client.close()  # type: ignore[no-untyped-call]
        if answer.isError():
            code = int(getattr(answer, "exception_code", 0))
            return row(False, f"Modbus exception code {code} ({exception_name(code)}) from unit {dev.unit}"
                       + _MODBUS_HINTS.get(code, ""))  # fmt: skip
        regs = getattr(answer, "registers", None) or []
        if len(regs) != point.width:
            return row(False, f"answered {len(regs)} register(s) for {point.width} asked")
        return row(True, f"answered {len(regs)} register(s)")

    return Probe(component, tried, run, 2 * dev.timeout_s)


_MODBUS_HINTS = {
    2: ": no such register: check the map's addresses (0-based: holding register 40001 is address 0) "
    "and tables (holding or input)",
    10: ": the gateway has no path to this unit: check the unit id",
    11: ": the gateway got no answer from this unit: check the unit id, and that the device is on",
}


# ---------------------------------------------------------------- Slurm

SLURM_PARTS = ("nodes", "jobs", "reservations")


def slurm_probe(
    component: str, cfg: SlurmConfig, part: str, nodes: Sequence[str], named: bool = False
) -> Probe:
    """One part read with the source's reader: its forms in order, the first that works.
    ``named``: read only the inventory's first node, as the actuator reads one."""
    reader = SlurmReader(cfg)
    names = tuple(nodes[:1]) if named else ()
    reads: dict[str, tuple[list[Any], Callable[[], Read[Any]]]] = {
        "nodes": (reader.node_forms(names), lambda: reader.nodes(names)),
        "jobs": (reader.job_forms(), reader.jobs),
        "reservations": (reader.reservation_forms(), reader.reservations),
    }
    forms, read = reads[part]
    first = " ".join(forms[0].argv)

    def run() -> list[Row]:
        got = read()
        said = "; ".join(n.message if n.where == first else f"`{n.where}`: {n.message}" for n in got.notices)
        if got.records is None:
            return [Row(component, first, False, said + _slurm_hint(said, cfg))]
        if part == "nodes":
            seen = {n.name for n in got.records}
            missing = [n for n in (names or nodes) if n not in seen]
            if missing:
                shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
                return [Row(component, got.where, False, f"{len(missing)} inventory node(s) Slurm does not "
                            f"know: {shown} (the inventory must name nodes as Slurm does)")]  # fmt: skip
        reason = f"{len(got.records):,} {part} read ({got.form})"
        return [Row(component, got.where, True, reason + (f"; {said}" if said else ""))]

    return Probe(component, first, run, len(forms) * cfg.timeout_s)


def _slurm_hint(said: str, cfg: SlurmConfig) -> str:
    low = said.lower()
    if "could not run" in low:
        return " (is Slurm's client installed here? set scontrol, squeue and sinfo to their paths)"
    if "timed out" in low:
        return (
            " (slurmctld did not answer within timeout_s: try `scontrol ping`; is slurm_conf this cluster's?)"
        )
    if "munge" in low:
        return " (munge: is munged running here, with the cluster's key?)"
    if "configuration source" in low or "slurm.conf" in low:
        return " (no usable slurm.conf: set slurm_conf to this cluster's)"
    return ""


# ---------------------------------------------------------------- Kubernetes


def kubernetes_pods_probe(cfg: KubernetesSourceConfig, namespace: str | None) -> Probe:
    """The first page (of one pod) of the list the source reads, with its selectors."""
    path = "/api/v1/pods" if namespace is None else f"/api/v1/namespaces/{namespace}/pods"
    component = "source kubernetes"
    tried = f"Kubernetes list pods (GET {path}, limit 1)"

    def row(ok: bool, reason: str) -> list[Row]:
        return [Row(component, tried, ok, reason)]

    def run() -> list[Row]:
        from seamguard.telemetry.sources.kubernetes import ClientPodPages, ListError

        try:
            server = client_configuration(
                cfg.host, cfg.verify_ssl, cfg.in_cluster, cfg.kubeconfig, cfg.context
            ).host
            pages = ClientPodPages(cfg.model_copy(update={"page_size": 1}))
        except Exception as exc:  # a kubeconfig missing or unreadable, no in-cluster account
            return row(False, f"cannot set up the client: {type(exc).__name__}: {exc} "
                       "(set host, kubeconfig or $KUBECONFIG, or in_cluster: true)")  # fmt: skip
        try:
            body = pages.page(namespace, None)
            doc = read_json(body.decode("utf-8", "replace"))
        except ListError as exc:
            said = str(exc).removeprefix("no answer: ")
            return row(False, explain(said, host_port(server), cfg.timeout_s, service="the API server",
                                      ca_key="the kubeconfig's certificate-authority"))  # fmt: skip
        except ValueError as exc:
            return row(False, f"the answer is {exc}")
        if not isinstance(doc, dict) or doc.get("kind") != "PodList":
            return row(False, f"not a PodList: {str(doc)[:120]!r}")
        return row(True, "the API server answers and lets seamguard list pods")

    return Probe(component, tried, run, cfg.timeout_s + 1.0)
