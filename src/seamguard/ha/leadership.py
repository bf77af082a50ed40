"""One leader among the replicas of ``seamguard run``: an etcd lease and the key it holds.

A replica campaigns by creating the election key (``HaConfig.key``) under a lease of its own, in a
transaction that succeeds only if the key does not exist. The key's create revision is the
leadership's epoch: a new leadership creates the key anew, so epochs only grow. The leader renews
its lease every ``retry_s`` and may act until ``renew_deadline_s`` after it *sent* the last renewal
etcd accepted, on the monotonic clock: etcd keeps the lease ``ttl_s`` after it *received* it, later
still, so the leader stops acting before anyone else can lead (``settings``). Leader election alone
does not stop a paused leader from acting late; the fence (``ha.fence``) does.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable

from seamguard.ha.etcd import Etcd, EtcdUnavailableError, b64, revision, succeeded, unb64
from seamguard.ha.settings import HaConfig
from seamguard.ha.view import LeaderView

log = logging.getLogger(__name__)
MAX_REPLICAS = 64  # replica announcements read at most (status, metrics)
NAME_CHARS = 128  # a name read from etcd is cut to this (``HaConfig.name`` allows as many)


def default_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Leadership:
    """``step`` every ``retry_s`` (``LeadershipLoop`` does); ``may_act`` before every action."""

    def __init__(self, config: HaConfig, etcd: Etcd | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.config = config
        self.name = config.name or default_name()
        self.etcd = Etcd(config) if etcd is None else etcd
        self._clock = clock
        self._lock = threading.Lock()
        self._lease: int | None = None
        self._epoch = 0  # ours, while we lead
        self._own = 0  # the last epoch this replica led under (kept after it lost it)
        self._act_until = -math.inf
        self._leader = ""
        self._leader_epoch = 0
        self._error = ""
        self._ticked = math.nan  # this replica's engine's last tick, announced at each step
        self._replicas: tuple[tuple[str, float], ...] = ()

    # ---- asked by the daemon and the fence ------------------------------------------------
    def view(self) -> LeaderView:
        with self._lock:
            left = self._act_until - self._clock() if self._epoch else 0.0
            leading = self._epoch > 0 and left > 0
            return LeaderView(self.name, leading, self._epoch if leading else self._leader_epoch,
                              self.name if leading else self._leader, max(left, 0.0) if leading else 0.0,
                              self._error, self._replicas)  # fmt: skip

    def own_epoch(self) -> int:
        """The last epoch this replica led under (0: never), kept after it lost it: its journal
        writes carry it, so that the record of an action it carried out just before its deadline
        still goes in, unless a newer leader has written since (the journal's fence)."""
        with self._lock:
            return self._own

    def ticked(self, now: float) -> None:
        """The engine's tick time, announced to the other replicas at the next step."""
        with self._lock:
            self._ticked = now

    def may_act(self, epoch: int) -> str | None:
        """None when this replica leads under ``epoch`` and its deadline has not passed; else why not."""
        with self._lock:
            if self._epoch == 0:
                return f"{self.name} does not lead (leader: {self._leader or 'none known'})"
            if epoch != self._epoch:
                return f"the action's epoch {epoch} is not the leadership's ({self._epoch})"
            if self._clock() >= self._act_until:
                return (f"{self.name} has not renewed its lease for {self.config.renew_deadline_s:g} s: "
                        "it stops acting before the lease can expire")  # fmt: skip
            return None

    # ---- one renewal or campaign ----------------------------------------------------------
    def step(self) -> LeaderView:
        try:
            if self._epoch:
                self._renew()
            if not self._epoch:
                self._campaign()
            self._announce()
            self._set(error="")
        except EtcdUnavailableError as exc:
            self._set(error=str(exc)[:500])
            log.warning("leadership: %s", exc)
        return self.view()

    def resign(self) -> None:
        """Give the leadership up at once (revoking the lease deletes the key): a clean stop
        hands over in one retry, not a TTL."""
        with self._lock:
            lease, self._lease, self._epoch, self._act_until = self._lease, None, 0, -math.inf
        if lease is not None:
            try:
                self.etcd.revoke(lease)
            except EtcdUnavailableError as exc:
                log.warning("leadership: could not revoke the lease on stopping: %s", exc)

    def _renew(self) -> None:
        assert self._lease is not None
        sent = self._clock()
        if self.etcd.keepalive(self._lease) <= 0:
            self._lose("the lease expired")
            return
        held = self.etcd.read(self.config.key)
        if held is None or held.create_revision != self._epoch or held.value != self.name:
            self._lose("the election key is no longer this replica's")
            return
        with self._lock:
            self._act_until = sent + self.config.renew_deadline_s

    def _campaign(self) -> None:
        sent = self._clock()
        if self._lease is None or self.etcd.keepalive(self._lease) <= 0:
            self._lease = self.etcd.grant(self.config.ttl_s)
        key = b64(self.config.key)
        response = self.etcd.txn(
            [{"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": "0"}],
            [{"request_put": {"key": key, "value": b64(self.name), "lease": str(self._lease)}}],
            [{"request_range": {"key": key}}],
        )
        if succeeded(response):
            epoch = revision(response)
            with self._lock:
                self._epoch, self._act_until = epoch, sent + self.config.renew_deadline_s
                self._own = epoch
                self._leader, self._leader_epoch = self.name, epoch
            log.warning("leadership: %s leads, epoch %d", self.name, epoch)
            return
        kvs = response["responses"][0]["response_range"].get("kvs", [])
        with self._lock:
            if kvs:
                self._leader = unb64(kvs[0]["value"])[:NAME_CHARS]  # shown in status and a metric label
                self._leader_epoch = int(kvs[0]["create_revision"])
            else:  # deleted between the compare and the read: the next campaign will see
                self._leader, self._leader_epoch = "", 0

    def _announce(self) -> None:
        """This replica's last tick under its lease, and every live replica's (for the lag)."""
        prefix = f"{self.config.key}/replicas/"
        if self._lease is not None and not math.isnan(self._ticked):
            self.etcd.announce(prefix + self.name, repr(self._ticked), self._lease)
        seen = self.etcd.read_prefix(prefix, MAX_REPLICAS)
        found = []
        for key, value in seen.items():
            try:
                found.append((key[len(prefix) :][:NAME_CHARS], float(value[:40])))
            except ValueError:
                continue  # not ours to read: skipped, never trusted
        with self._lock:
            self._replicas = tuple(sorted(found))

    def _lose(self, why: str) -> None:
        with self._lock:
            was = self._epoch
            self._epoch, self._act_until = 0, -math.inf
            self._leader, self._leader_epoch = "", 0
        log.error("leadership: %s lost epoch %d: %s", self.name, was, why)

    def _set(self, *, error: str) -> None:
        with self._lock:
            self._error = error


class LeadershipLoop:
    """Runs ``Leadership.step`` every ``retry_s`` on a thread of its own, so a long engine tick
    never delays a renewal; ``stop`` resigns."""

    def __init__(self, leadership: Leadership) -> None:
        self.leadership = leadership
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="seamguard-leadership", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        period = self.leadership.config.retry_s
        while not self._stop.is_set():
            started = time.monotonic()
            self.leadership.step()
            self._stop.wait(max(period - (time.monotonic() - started), 0.0))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.leadership.resign()
