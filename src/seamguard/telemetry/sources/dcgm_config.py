"""``sources.dcgm`` and the series-reading settings it shares with ``sources.prometheus``.

Models only, like every config section: loading a config imports no HTTP client."""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from typing import Any, Self
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from seamguard.strict_model import HttpUrlText, StrictModel
from seamguard.telemetry.sources.http_auth import HttpClientAuth

TARGET = "target"  # in node_from: the node the scrape target names (see DcgmReading.node_from)
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
DEFAULT_XID_WINDOW_S = 300.0  # dcgm-exporter's --xid-count-window-size default: 300000 ms


class HostnameRule(StrictModel):
    """How a host name (the target's, a Hostname label's...) becomes the inventory's node name."""

    strip_suffixes: tuple[str, ...] = ()  # e.g. [".cluster.local"]: removed when the host ends with one
    strip_domain: bool = False  # keep the text before the first dot
    lowercase: bool = False
    prefix: str = ""  # prepended after the rest, e.g. "n" when hosts are bare numbers

    def node_name(self, host: str) -> str:
        for suffix in self.strip_suffixes:
            if suffix and host.endswith(suffix):
                host = host[: -len(suffix)]
                break
        if self.strip_domain:
            host = host.split(".", 1)[0]
        if self.lowercase:
            host = host.lower()
        return self.prefix + host


def is_address(host: str) -> bool:
    """An IP literal names no host: the hostname rule is not for it (10.0.0.17 is not n10)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def host_of(address: str) -> str:
    """The host part of a URL (``http://n1:9400/metrics``) or of a Prometheus ``instance``
    label (``n1:9400``, ``[fd00::1]:9400``); empty when there is none."""
    text = address if "//" in address else "//" + address
    try:
        return urlsplit(text).hostname or ""
    except ValueError:
        return ""


class DcgmReading(StrictModel):
    """How series become entities: shared by the scrape and the Prometheus sources."""

    hostname: HostnameRule = HostnameRule()
    # Where a series' node comes from, tried in this order; the first that names a node of the
    # inventory wins. "target": the endpoint's `node` if set, else the host of its URL (for the
    # Prometheus source, the host of the `instance` label). Any other entry is a label name,
    # matched without regard to case: "Hostname" (what dcgm-exporter sets: NODE_NAME, else the
    # host's or, in a pod without NODE_NAME, the pod's name), "kubernetes_node", "node", ...
    node_from: tuple[str, ...] = (TARGET, "Hostname")
    uuid_entities: dict[str, str] = Field(default_factory=dict)  # GPU UUID -> entity id (wins over all)
    # One exporter speaks for one node: once a target's series have named a node, series of that
    # target naming another are refused (a compromised or misconfigured exporter cannot report
    # for the fleet). Off only for an exporter that serves many nodes (the twin's, in tests).
    one_node_per_target: bool = True
    # The exporter's XID window when a series carries no window_size_in_ms label.
    xid_window_s: float = Field(default=DEFAULT_XID_WINDOW_S, gt=0, le=7 * 86400)
    # How late a windowed XID count may be: the exporter's collect interval (30 s by default),
    # plus a Prometheus scrape interval when read through Prometheus, plus clock skew.
    xid_window_slack_s: float = Field(default=60.0, ge=0, le=3600)

    @field_validator("node_from")
    @classmethod
    def _sources(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("name at least one place to read the node from, e.g. [target, Hostname]")
        bad = [x for x in v if x != TARGET and not _LABEL.fullmatch(x)]
        if bad:
            raise ValueError(f"{bad[0]!r} is neither 'target' nor a label name")
        twice = [x for x, n in Counter(x.lower() for x in v).items() if n > 1]
        if twice:
            raise ValueError(f"{twice[0]!r} listed twice")
        return v

    @model_validator(mode="after")
    def _uuids(self) -> Self:
        for uuid, eid in self.uuid_entities.items():
            if not eid.startswith("gpu/") or eid.count("/") != 2:
                raise ValueError(f"uuid_entities[{uuid}]: expected gpu/<node>/<index>, got {eid!r}")
        return self


class DcgmEndpoint(StrictModel):
    url: HttpUrlText
    node: str | None = None  # the node this exporter runs on, when its URL does not name it

    def target_host(self) -> str:
        """What ``target`` in node_from names: the configured node, else the URL's host."""
        return self.node if self.node is not None else host_of(self.url)

    @property
    def names_node(self) -> bool:
        """The config says which node this is: taken as written, no hostname rule."""
        return self.node is not None


class DcgmSourceConfig(DcgmReading, HttpClientAuth):
    """Like one Prometheus scrape job: the exporter endpoints, how to read them, and the
    credentials they ask for (``bearer_token_file``, ``basic_auth``, ``tls_config``)."""

    name: str = "dcgm"
    endpoints: tuple[DcgmEndpoint, ...] = ()
    timeout_s: float = Field(default=3.0, gt=0, le=120)  # per request, whole body included
    concurrency: int = Field(default=256, ge=1, le=8192)  # requests in flight at once
    max_bytes: int = Field(default=16 * 2**20, ge=1024)  # a body past this is refused
    max_malformed_fraction: float = Field(default=0.2, ge=0, le=1)

    @field_validator("endpoints", mode="before")
    @classmethod
    def _plain_urls(cls, v: Any) -> Any:
        if isinstance(v, list | tuple):
            return [{"url": x} if isinstance(x, str) else x for x in v]
        return v

    @model_validator(mode="after")
    def _unique(self) -> Self:
        urls = [e.url for e in self.endpoints]
        dup = [u for u, n in Counter(urls).items() if n > 1]
        if dup:
            raise ValueError(f"endpoint listed twice: {dup[0]}")
        return self
