"""The few etcd v3 calls leadership and fencing need, over etcd's JSON gateway (``etcd3gw``),
tried on each configured endpoint in turn.

Kept to leases, transactions and single-key reads: every write seamguard makes to etcd is a
transaction whose compare names the leader's key, so no bare put is offered here.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import etcd3gw
import requests
from etcd3gw.exceptions import Etcd3Exception

from seamguard.ha.settings import HaConfig

T = TypeVar("T")


class EtcdUnavailableError(RuntimeError):
    """No endpoint answered (down, no quorum, or too slow): the caller treats it as a missed call."""


@dataclass(frozen=True)
class KeyState:
    value: str
    create_revision: int
    lease: int


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode(errors="replace")


def is_current(key: str, epoch: int, name: str) -> list[dict[str, Any]]:
    """The compare that holds only while ``name`` leads under ``epoch``: the election key was
    created at that revision (a new leadership creates it anew) and still names this replica."""
    k = b64(key)
    return [
        {"key": k, "result": "EQUAL", "target": "CREATE", "create_revision": str(epoch)},
        {"key": k, "result": "EQUAL", "target": "VALUE", "value": b64(name)},
    ]


class Etcd:
    def __init__(self, config: HaConfig) -> None:
        self._clients = [_client(url, config) for url in config.endpoints]
        self._first = 0  # the endpoint that last answered is asked first

    def _call(self, what: str, fn: Callable[[etcd3gw.Etcd3Client], T]) -> T:
        errors: list[str] = []
        n = len(self._clients)
        for i in range(n):
            k = (self._first + i) % n
            client = self._clients[k]
            try:
                out = fn(client)
            except (Etcd3Exception, requests.RequestException, KeyError, ValueError) as exc:
                errors.append(f"{client.base_url}: {type(exc).__name__}: {str(exc)[:200]}")
                continue
            self._first = k
            return out
        raise EtcdUnavailableError(f"etcd {what}: " + "; ".join(errors))

    def grant(self, ttl_s: int) -> int:
        return self._call("lease grant", lambda c: c.lease(ttl_s).id)

    def keepalive(self, lease: int) -> int:
        """The lease's TTL after the renewal; -1 when etcd no longer has it."""
        return self._call("lease keepalive", lambda c: etcd3gw.Lease(lease, c).refresh())

    def revoke(self, lease: int) -> None:
        self._call("lease revoke", lambda c: etcd3gw.Lease(lease, c).revoke())

    def txn(self, compare: Sequence[dict[str, Any]], success: Sequence[dict[str, Any]],
            failure: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:  # fmt: skip
        body = {"compare": list(compare), "success": list(success), "failure": list(failure)}
        return dict(self._call("txn", lambda c: c.transaction(body)))

    def announce(self, key: str, value: str, lease: int) -> None:
        """A replica's own presence under its lease (gone when the replica is): not an action,
        so not fenced."""
        body = {"key": b64(key), "value": b64(value), "lease": str(lease)}
        self._call("put", lambda c: c.post(c.get_url("/kv/put"), json=body))

    def read_prefix(self, prefix: str, limit: int) -> dict[str, str]:
        """At most ``limit`` keys under ``prefix``: whoever else can write there cannot make a
        replica read without bound."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)

        def many(c: etcd3gw.Etcd3Client) -> dict[str, str]:
            got = c.get(prefix, metadata=True, range_end=end, limit=limit)
            return {
                meta["key"].decode(errors="replace"): value.decode(errors="replace") for value, meta in got
            }

        return self._call("read", many)

    def read(self, key: str) -> KeyState | None:
        def one(c: etcd3gw.Etcd3Client) -> KeyState | None:
            got = c.get(key, metadata=True)
            if not got:
                return None
            value, meta = got[0]
            return KeyState(value.decode(), int(meta["create_revision"]), int(meta.get("lease", 0)))

        return self._call("read", one)


def succeeded(response: dict[str, Any]) -> bool:
    """A transaction's outcome (etcd's JSON omits ``succeeded`` when it is false)."""
    return bool(response.get("succeeded", False))


def revision(response: dict[str, Any]) -> int:
    return int(response["header"]["revision"])


def _client(url: str, config: HaConfig) -> etcd3gw.Etcd3Client:
    parts = urlsplit(url)
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment between a replica and its etcd
    if config.ca_file is not None:
        session.verify = config.ca_file
    if config.cert_file is not None and config.key_file is not None:
        session.cert = (config.cert_file, config.key_file)
    return etcd3gw.Etcd3Client(
        host=parts.hostname or "localhost",
        port=parts.port or 2379,
        protocol=parts.scheme,
        timeout=config.request_timeout_s,
        api_path="/v3/",  # etcd >= 3.4 (Debian bookworm ships 3.4.23): no discovery round trip
        session=session,
    )
