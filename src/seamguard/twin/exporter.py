"""The twin as a fleet of DCGM exporters: a ``TelemetryBatch`` rendered back into exposition
text (the inverse of ``seamguard/data/dcgm.yaml``) and served on ``/metrics``.

This lets the real scrape path (HTTP, the exposition parser, the DCGM mapping, Prometheus
itself) run against simulated GPUs: what the twin emits is what a scrape must give back.
Series carry the labels dcgm-exporter sets (``gpu``, ``UUID``, ``pci_bus_id``, ``device``,
``modelName``, ``Hostname``, ``DCGM_FI_DRIVER_VERSION``); counters are totals; XID events are
counted as dcgm-exporter 4.x counts them, ``DCGM_EXP_XID_ERRORS_COUNT{xid=...,window_size_in_ms=...}``
over a sliding window (a 0-valued series without ``xid`` for a GPU with none), and set
``DCGM_FI_DEV_XID_ERRORS``.
"""

from __future__ import annotations

import base64
import hmac
import math
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import numpy.typing as npt

from seamguard.model.catalog import SignalKind, signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.dcgm_config import DEFAULT_XID_WINDOW_S
from seamguard.telemetry.sources.dcgm_mapping import DcgmMapping, FieldMap, Role, dcgm_mapping

IntArray = npt.NDArray[np.int64]
DRIVER_VERSION = "550.54.15"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_UUID_NS = uuid.UUID("6f1d3c4e-2b8a-4c55-9d1e-5a7b0c3e9f21")


def gpu_uuid(entity_id: str) -> str:
    """A stable, GPU-shaped UUID for a twin GPU (the same id always gives the same UUID)."""
    return f"GPU-{uuid.uuid5(_UUID_NS, entity_id)}"


def format_value(v: float) -> str:
    """Exposition text for a value: integers without a fraction (as dcgm-exporter writes them),
    others in the shortest form that reads back to the same float."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return str(int(v)) if v.is_integer() else repr(v)


@dataclass
class DcgmRenderer:
    """Renders batches for the GPUs of a topology; keeps the XID window from render to render."""

    topology: Topology
    hostname_suffix: str = ""  # e.g. ".cluster.local", for testing a hostname rule
    mapping: DcgmMapping = field(default_factory=dcgm_mapping)
    xid_window_s: float = DEFAULT_XID_WINDOW_S  # dcgm-exporter's --xid-count-window-size
    xid_times: dict[tuple[int, int], list[float]] = field(default_factory=dict)  # (gpu local, code) -> when
    last_xid: dict[int, int] = field(default_factory=dict)  # gpu local -> last code
    now: float = -math.inf  # the newest sample rendered: the window ends here
    _prefix: list[str] | None = field(default=None, repr=False)

    def labels(self, gpu: int) -> str:
        """The label set of one GPU (local index), without braces."""
        if self._prefix is None:
            t = self.topology
            node_names = t.names[EntityKind.NODE]
            gpu_names = t.names[EntityKind.GPU]
            prefix = []
            for g in range(t.count(EntityKind.GPU)):
                node = int(t.gpu_node[g])
                slot = int(t.gpu_slot[g])
                model_ix = int(t.node_model[node])
                model = t.models[model_ix] if model_ix >= 0 else "NVIDIA H100 80GB HBM3"
                prefix.append(
                    f'gpu="{slot}",UUID="{gpu_uuid("gpu/" + gpu_names[g])}",'
                    f'pci_bus_id="00000000:{0x18 + 0x10 * slot:02X}:00.0",device="nvidia{slot}",'
                    f'modelName="{model}",Hostname="{node_names[node]}{self.hostname_suffix}",'
                    f'DCGM_FI_DRIVER_VERSION="{DRIVER_VERSION}"'
                )
            self._prefix = prefix
        return self._prefix[gpu]

    def render(self, batch: TelemetryBatch, nodes: Iterable[int] | None = None) -> str:
        """Exposition text for the GPU samples of ``batch`` (only ``nodes``' GPUs when given).

        Of several samples of one series the latest is written; an XID event is counted by every
        render until it is ``xid_window_s`` older than the newest sample, as the exporter's
        window counts it."""
        t = self.topology
        catalog = signal_catalog()
        gpu_kind = t.kind_code[t.members[EntityKind.GPU][0]] if t.count(EntityKind.GPU) else -1
        is_gpu = t.kind_code[batch.entity] == gpu_kind
        local = t.local[batch.entity]
        if nodes is not None:
            wanted = np.zeros(t.count(EntityKind.NODE), dtype=bool)
            wanted[np.fromiter(nodes, np.int64)] = True
            is_gpu &= wanted[t.gpu_node[np.where(is_gpu, local, 0)]]
        rendered = self.mapping.rendered()
        out: list[str] = []
        xid = catalog["gpu.xid"].index
        present = np.unique(local[is_gpu])
        self._take_xids(batch, is_gpu & (batch.signal == xid), local)
        for sig_name, fields in rendered.items():
            sig = catalog[sig_name]
            if sig.kind is SignalKind.EVENT:
                for fm in fields:
                    out.extend(self._xid_lines(fm, present))
                continue
            pick = is_gpu & (batch.signal == sig.index)
            if not pick.any():
                continue
            g, ts, v = local[pick], batch.timestamp[pick], batch.value[pick]
            order = np.lexsort((ts, g))
            g, v = g[order], v[order]
            last = np.ones(g.size, dtype=bool)
            last[:-1] = g[1:] != g[:-1]
            for fm in fields:
                raw = (v[last] - fm.offset) / fm.scale
                out.append(
                    _family(fm, sig.description, "counter" if sig.kind is SignalKind.COUNTER else "gauge")
                )
                out.extend(
                    f"{fm.field}{{{self.labels(gi)}}} {format_value(x)}"
                    for gi, x in zip(g[last].tolist(), raw.tolist(), strict=True)
                )
        out.append("")
        return "\n".join(out)

    def _take_xids(self, batch: TelemetryBatch, pick: npt.NDArray[np.bool_], local: IntArray) -> None:
        if len(batch):
            self.now = max(self.now, float(batch.timestamp.max()))
        order = np.argsort(batch.timestamp[pick], kind="stable")
        stamps = batch.timestamp[pick][order].tolist()
        for g, code, ts in zip(
            local[pick][order].tolist(), batch.value[pick][order].tolist(), stamps, strict=True
        ):
            self.xid_times.setdefault((g, int(code)), []).append(ts)
            self.last_xid[g] = int(code)
        since = self.now - self.xid_window_s
        for key in list(self.xid_times):
            self.xid_times[key] = [t for t in self.xid_times[key] if t > since]
            if not self.xid_times[key]:
                del self.xid_times[key]

    def _xid_lines(self, fm: FieldMap, present: IntArray) -> list[str]:
        keep = set(present.tolist())
        if fm.role is Role.XID_WINDOW:
            window = f'window_size_in_ms="{round(self.xid_window_s * 1000)}"'
            rows = sorted((g, c, len(ts)) for (g, c), ts in self.xid_times.items() if g in keep)
            quiet = sorted(keep - {g for g, _, _ in rows})
            lines = [f'{fm.field}{{{self.labels(g)},{window},xid="{c}"}} {n}' for g, c, n in rows]
            lines += [f"{fm.field}{{{self.labels(g)},{window}}} 0" for g in quiet]
            if not lines:
                return []
            help_text = (
                "Count of XID Errors within user-specified time window (see xid-count-window-size param)."
            )
            return [_family(fm, help_text, "gauge"), *lines]
        lines = [f"{fm.field}{{{self.labels(g)}}} {self.last_xid.get(g, 0)}" for g in sorted(keep)]
        return [_family(fm, "Value of the last XID error encountered."), *lines] if lines else []


def _family(fm: FieldMap, help_text: str, kind: str = "gauge") -> str:
    return f"# HELP {fm.field} {help_text}\n# TYPE {fm.field} {kind}"


# ---- serving ------------------------------------------------------------------------------------
class MetricsServer:
    """A loopback HTTP server answering ``GET /metrics`` with the last published text.

    ``publish(text, delay_s=...)`` can make it answer late (a hung exporter, for timeouts).
    ``authorization`` makes it ask for credentials as dcgm-exporter does behind a web config: the
    exact ``Authorization`` header value (``basic_header`` or ``"Bearer <token>"``) it accepts;
    anything else is answered 401 with ``WWW-Authenticate``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, authorization: str | None = None) -> None:
        self._body = b""
        self._delay = 0.0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    body, delay = server._body, server._delay
                    server.requests += 1
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics is served")
                    return
                given = self.headers.get("Authorization", "")
                if authorization is not None and not hmac.compare_digest(
                    given.encode(), authorization.encode()
                ):
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="dcgm-exporter"')
                    self.send_header("Content-Length", "12")
                    self.end_headers()
                    self.wfile.write(b"Unauthorized")
                    return
                if delay > 0 and server._stopping.wait(delay):
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="twin-exporter", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._httpd.server_address[0])
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/metrics"

    def publish(self, text: str | bytes, *, delay_s: float = 0.0) -> None:
        with self._lock:
            self._body = text.encode("utf-8") if isinstance(text, str) else text
            self._delay = delay_s

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def basic_header(username: str, password: str) -> str:
    """The ``Authorization`` value of HTTP basic auth, for ``MetricsServer(authorization=...)``."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def start_exporter(
    text: str | bytes = "", *, host: str = "127.0.0.1", port: int = 0, authorization: str | None = None
) -> MetricsServer:
    """Serve ``text`` on ``http://host:port/metrics`` (port 0: a free one) from a thread."""
    server = MetricsServer(host, port, authorization=authorization)
    server.publish(text)
    return server


def stop_exporter(server: MetricsServer) -> None:
    server.stop()
