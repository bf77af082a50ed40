"""Start Debian's PostgreSQL server (``initdb`` + ``postgres``) on a free loopback port, in a
temporary directory, and stop it. The server refuses to run as root, so under root it runs as
the ``postgres`` user the Debian package creates. A missing binary skips outside CI and fails
under CI=true."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg

from tests.components import unavailable
from tests.prometheus_server import free_port


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        unavailable(
            "PostgreSQL's server is not installed (Debian package postgresql; scripts/system_packages.sh)"
        )
    return Path(found[-1]).parent


@dataclass
class PostgresServer:
    port: int
    data: Path
    bindir: Path
    proc: subprocess.Popen[bytes] | None
    user: str | None  # the OS user it runs as (None: this process's)

    def dsn(self, db: str = "seamguard") -> str:
        return f"postgresql://seamguard@127.0.0.1:{self.port}/{db}"

    def _as_user(self, argv: list[str]) -> list[str]:
        """``setpriv`` execs the server in place (no wrapper process between the signals this
        class sends and the postmaster, unlike ``runuser``/``su``)."""
        if not self.user:
            return argv
        return ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--init-groups", "--", *argv]

    def start(self) -> None:
        log = (self.data.parent / "postgres.log").open("ab")
        self.proc = subprocess.Popen(
            self._as_user([str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                           "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.data.parent}",
                           "-c", "fsync=on", "-c", "max_connections=50"]),
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    tail = (self.data.parent / "postgres.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"postgres did not start: {tail}") from None
                time.sleep(0.1)

    def stop(self, *, fast: bool = True) -> None:
        """SIGINT is PostgreSQL's fast shutdown (clients disconnected, a clean checkpoint);
        ``fast=False`` is a crash of the whole server: the postmaster and its backends killed at
        once (a backend left running holds the shared memory, and the next start would refuse
        it), and the next start recovers from the WAL."""
        if self.proc is not None and self.proc.poll() is None:
            if fast:
                self.proc.send_signal(signal.SIGINT)
            else:
                backends = psutil.Process(self.proc.pid).children(recursive=True)
                self.proc.kill()
                for b in backends:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        b.kill()
                psutil.wait_procs(backends, timeout=10)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A directory of its own under the system's temporary directory (pytest's are private to
    root, and the server may run as ``postgres``), removed at the end."""
    bindir = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="seamguard-pg-"))
    user = "postgres" if os.geteuid() == 0 else None
    if user is not None:
        pw = pwd.getpwnam(user)
        os.chmod(root, 0o700)
        shutil.chown(root, pw.pw_uid, pw.pw_gid)
    server = PostgresServer(free_port(), root / "data", bindir, None, user)
    subprocess.run(
        server._as_user([str(bindir / "initdb"), "-D", str(server.data), "-U", "seamguard", "--auth=trust",
                         "-E", "UTF8", "--no-instructions"]),
        check=True, capture_output=True,
    )  # fmt: skip
    server.start()
    try:
        with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE seamguard")
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
