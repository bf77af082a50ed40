"""One writer per journal: an exclusive ``flock`` on ``<journal>.lock`` naming its holder.

Two processes appending to one journal (two ``seamguard score`` runs, two daemons) double every
record. The writer takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on a sidecar file and writes its pid,
host and start time into it; a second writer is refused with an error naming them. The kernel
drops a flock when its process dies however it dies, so a crash leaves no stale lock (the file
stays, unlocked, and is reused). Readers take no lock: SQLite's WAL lets them read while the
writer writes.

Written by hand rather than with ``filelock`` (not a dependency of seamguard): its lock file
carries no holder to name, and the holder is the point of the error; this is one flock call.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from seamguard.errors import InputError


def lock_path(journal: Path) -> Path:
    return journal.with_name(journal.name + ".lock")


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    since: float  # unix seconds the holder took the lock

    def describe(self) -> str:
        at = datetime.fromtimestamp(self.since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"pid {self.pid} on {self.host} since {at}"


def _read_holder(fd: int) -> Holder | None:
    try:
        raw = json.loads(os.pread(fd, 4096, 0) or b"null")
        return Holder(int(raw["pid"]), str(raw["host"]), float(raw["since"]))
    except (ValueError, TypeError, KeyError):
        return None  # the holder took the lock an instant ago and has not written itself yet


class WriterLock:
    """Held from ``acquire`` until ``release``, the process's death, or the lock object being
    collected (its file object closes the descriptor, which drops the flock)."""

    def __init__(self, fd: int, path: Path, holder: Holder) -> None:
        self._file: BinaryIO | None = os.fdopen(fd, "r+b", buffering=0)
        self.path = path
        self.holder = holder

    @classmethod
    def acquire(cls, journal: Path) -> WriterLock:
        """The journal's writer lock, or InputError naming the journal and whoever holds it."""
        path = lock_path(journal)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # no O_TRUNC: the holder's record stays
        except OSError as exc:
            raise InputError(str(journal), f"cannot open the writer lock {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            who = holder.describe() if holder is not None else "a process that is just starting"
            raise InputError(
                str(journal),
                f"journal is being written by another seamguard process ({who}; lock {path});"
                " one writer per journal: stop it or choose another journal (readers such as"
                " `seamguard explain` need no lock)",
            ) from None
        holder = Holder(os.getpid(), socket.gethostname(), time.time())
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder.__dict__).encode(), 0)
        return cls(fd, path, holder)

    def release(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            os.ftruncate(file.fileno(), 0)  # still held here: no one reads a half-cleared record
            fcntl.flock(file.fileno(), fcntl.LOCK_UN)
            file.close()
