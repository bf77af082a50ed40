"""A real, throw-away Slurm cluster on loopback for the Slurm source and actuator tests.

One munged (its own key, socket and pid file), one slurmctld and one slurmd per node, all in a
temporary directory and on free loopback ports, started in the foreground (``-D``/``-F``) as
our own child processes so teardown stops exactly what was started. Debian's slurmd accepts
``-N NAME`` for several daemons on one host: each node has its own ``Port=`` and
``NodeHostname=localhost``, and the spool, pid and log paths carry ``%n``.

One extra node (``dead_nodes``) is configured but gets no slurmd, so the cluster also shows the
real text of a node that does not respond (``*``, ``NOT_RESPONDING``).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DAEMONS = {"munged": "munged", "slurmctld": "slurmctld", "slurmd": "slurmd"}
CLIENTS = ("scontrol", "squeue", "sinfo", "sbatch", "scancel")
STARTUP_TIMEOUT_S = 20.0


def find_binary(name: str) -> str | None:
    """Daemons live in /usr/sbin, which a non-root PATH often lacks."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        path = Path(folder) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def require_slurm() -> dict[str, str]:
    """The binaries, or a skip (a failure under CI=true, where scripts/system_packages.sh installs them)."""
    names = (*DAEMONS.values(), *CLIENTS)
    found = {n: find_binary(n) for n in names}
    missing = sorted(n for n, p in found.items() if p is None)
    if missing:
        why = f"Slurm/munge binaries not installed: {', '.join(missing)} (scripts/system_packages.sh installs them)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return {n: p for n, p in found.items() if p is not None}


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports: all sockets are held open until every port is chosen."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    munge_socket: Path
    nodes: tuple[str, ...]  # nodes with a running slurmd, in the partition
    dead_nodes: tuple[str, ...]  # configured, never started
    partition: str
    bins: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env["SLURM_CONF"] = str(self.conf)
        return env

    def run(self, *argv: str, check: bool = True, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
        """A client command against this cluster (``argv[0]`` a client name such as scontrol)."""
        cmd = [self.bins.get(argv[0], argv[0]), *argv[1:]]
        proc = subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.root
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def node_line(self, node: str) -> str:
        return self.run("scontrol", "show", "node", node, "--oneliner").stdout.strip()

    def node_states(self) -> dict[str, str]:
        out = self.run("sinfo", "-h", "-N", "-o", "%N %T").stdout
        return dict(line.split(None, 1) for line in out.splitlines() if line.strip())

    def submit(self, nodes: int, name: str, seconds: int = 600, *extra: str) -> str:
        out = self.run(
            "sbatch", "--parsable", "-N", str(nodes), "-J", name, "-p", self.partition, *extra,
            "-o", str(self.root / "job-%j.out"), "--chdir", str(self.root), "--wrap", f"sleep {seconds}",
        ).stdout  # fmt: skip
        return out.strip().split(";")[0]

    def job_state(self, job: str) -> str:
        return self.run("squeue", "-h", "-j", job, "-o", "%T", check=False).stdout.strip()

    def wait_for(self, what: str, ok: Callable[[], bool], timeout: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ok():
                return
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited {proc.returncode} while waiting for {what}\n{self.log_tails()}"
                    )
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}\n{self.log_tails()}")

    def log_tails(self, lines: int = 15) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)


def write_conf(cluster_root: Path, munge_socket: Path, nodes: list[str], dead: list[str], cpus: int) -> Path:
    ctld_port, *node_ports = free_ports(1 + len(nodes) + len(dead))
    user = getpass.getuser()
    lines = [
        "ClusterName=sgtest",
        "SlurmctldHost=localhost",
        f"SlurmctldPort={ctld_port}",
        f"SlurmUser={user}",
        f"SlurmdUser={user}",
        "AuthType=auth/munge",
        f"AuthInfo=socket={munge_socket}",
        "CredType=cred/munge",
        f"StateSaveLocation={cluster_root / 'state'}",
        f"SlurmdSpoolDir={cluster_root / 'spool' / '%n'}",
        f"SlurmctldPidFile={cluster_root / 'run' / 'slurmctld.pid'}",
        f"SlurmdPidFile={cluster_root / 'run' / 'slurmd.%n.pid'}",
        f"SlurmctldLogFile={cluster_root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={cluster_root / 'log' / 'slurmd.%n.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "SchedulerType=sched/builtin",
        "MpiDefault=none",
        "ReturnToService=2",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=10",
        "InactiveLimit=0",
        "KillWait=2",
    ]
    for name, port in zip([*nodes, *dead], node_ports, strict=True):
        lines.append(
            f"NodeName={name} NodeHostname=localhost NodeAddr=127.0.0.1 Port={port} CPUs={cpus} "
            "RealMemory=100 Feature=gpu,h100"
        )
    lines.append(f"PartitionName=main Nodes={','.join(nodes)} Default=YES MaxTime=INFINITE State=UP")
    if dead:
        lines.append(f"PartitionName=spare Nodes={','.join(dead)} Default=NO MaxTime=INFINITE State=UP")
    conf = cluster_root / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _spawn(cluster: SlurmCluster, name: str, argv: list[str]) -> None:
    out = (cluster.root / "log" / f"{name}.stdout.log").open("wb")
    cluster.procs[name] = subprocess.Popen(
        argv,
        env=cluster.env,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=cluster.root,
    )
    out.close()


def node_names(nodes: int, dead_nodes: int, names: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """The live and the dead nodes' names: ``names`` when given (e.g. a twin's ``n0000``...), else
    ``n001``...; dead nodes are named after the live ones (``n005``, or ``dead1``... beside ``names``)."""
    if names is None:
        live = [f"n{i:03d}" for i in range(1, nodes + 1)]
        return live, [f"n{i:03d}" for i in range(nodes + 1, nodes + 1 + dead_nodes)]
    live = list(names)
    if not live or len(set(live)) != len(live):
        raise ValueError(f"node names must be distinct and not empty, got {live}")
    return live, [f"dead{i}" for i in range(1, dead_nodes + 1)]


def start_cluster(
    root: Path, nodes: int = 4, cpus: int = 2, dead_nodes: int = 1, names: Sequence[str] | None = None
) -> SlurmCluster:
    """Start munged, slurmctld and one slurmd per node; return once every live node is idle.

    ``names`` (optional) gives the live nodes' names explicitly; ``nodes`` is then ignored."""
    bins = require_slurm()
    # Unix socket paths are limited to 108 bytes: keep the root short.
    for sub in ("state", "spool", "run", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    live, dead = node_names(nodes, dead_nodes, names)
    for n in live:
        (root / "spool" / n).mkdir(exist_ok=True)
    key = root / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o600)
    sock = root / "munge.sock"
    conf = write_conf(root, sock, live, dead, cpus)
    cluster = SlurmCluster(root, conf, sock, tuple(live), tuple(dead), "main", bins)
    try:
        _spawn(cluster, "munged", [
            bins["munged"], "-F", "--force", f"--socket={sock}", f"--key-file={key}",
            f"--pid-file={root / 'run' / 'munged.pid'}", f"--log-file={root / 'log' / 'munged.log'}",
            f"--seed-file={root / 'run' / 'munged.seed'}",
        ])  # fmt: skip
        cluster.wait_for("the munge socket", sock.exists, timeout=10)
        _spawn(cluster, "slurmctld", [bins["slurmctld"], "-D", "-i", "-f", str(conf)])
        cluster.wait_for(
            "slurmctld to answer", lambda: cluster.run("scontrol", "ping", check=False).returncode == 0
        )
        for n in live:
            _spawn(cluster, f"slurmd.{n}", [bins["slurmd"], "-D", "-N", n, "-f", str(conf)])

        def all_idle() -> bool:
            states = cluster.node_states()
            return all(states.get(n) == "idle" for n in live)

        cluster.wait_for(f"nodes {','.join(live)} to be idle", all_idle)
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def stop_cluster(cluster: SlurmCluster) -> None:
    """Cancel every job, then stop the daemons we started (slurmds, slurmctld, munged last)."""
    ctld = cluster.procs.get("slurmctld")
    if ctld is not None and ctld.poll() is None:
        with contextlib.suppress(Exception):
            cluster.run("scancel", "--full", "-u", getpass.getuser(), check=False, timeout=10)
            cluster.wait_for(
                "jobs to end", lambda: not cluster.run("squeue", "-h", check=False).stdout.strip(), 15
            )
    order = [n for n in cluster.procs if n.startswith("slurmd.")] + ["slurmctld", "munged"]
    for name in order:
        proc = cluster.procs.get(name)
        if proc is None or proc.poll() is not None:
            continue
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.contextmanager
def slurm_cluster(
    root: Path, nodes: int = 4, cpus: int = 2, dead_nodes: int = 1, names: Sequence[str] | None = None
) -> Iterator[SlurmCluster]:
    cluster = start_cluster(root, nodes=nodes, cpus=cpus, dead_nodes=dead_nodes, names=names)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
