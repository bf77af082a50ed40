"""Running Slurm's clients: the configuration the source and the actuator share, and one bounded
call (timeout, output size) that never raises."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from seamguard.model.states import JobClass
from seamguard.strict_model import StrictModel

STDERR_KEPT = 64 * 1024  # bytes of a client's stderr kept for a notice


class SlurmConfig(StrictModel):
    """Where Slurm's clients are and how seamguard talks to them (source and actuator share it)."""

    scontrol: str = "scontrol"  # path or name on PATH
    squeue: str = "squeue"
    sinfo: str = "sinfo"  # its --json is the node list's JSON form on 21.08/22.05
    slurm_conf: str | None = None  # SLURM_CONF for the clients; None inherits the environment's
    timeout_s: float = Field(default=10.0, gt=0)
    # auto: each part (nodes, jobs, reservations) read with --json where the installed Slurm has
    # it, else the text form; json / text: only that form.
    read_format: Literal["auto", "json", "text"] = "auto"
    # After the JSON form of a part failed and its text form worked, the text form is used; the
    # JSON form is tried again after this long (an upgraded Slurm, a plugin installed).
    json_retry_s: float = Field(default=3600.0, gt=0)
    # A client printing more than this is stopped and its output dropped (a notice says so):
    # squeue --json before 24.11 prints every job, a few kB each.
    max_output_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024)
    # slurmdbd stores a node event's reason as TINYTEXT (255 bytes); longer reasons are cut there
    # and are unreadable in sinfo anyway. Reasons are cut to this many UTF-8 bytes, ending in "...".
    reason_max_bytes: int = Field(default=250, ge=40, le=1024)
    feature_prefix: str = Field(default="sg_", min_length=1)  # the node features seamguard owns
    default_job_class: JobClass = JobClass.SYNC_TRAINING
    partition_classes: dict[str, JobClass] = Field(default_factory=dict)  # partition -> job class


@dataclass(frozen=True)
class CommandResult:
    where: str  # the command line, for notices and action details
    ok: bool
    stdout: str
    stderr: str  # the command's stderr, or why it could not run (timeout, missing binary)
    returncode: int | None
    timed_out: bool = False

    @property
    def problem(self) -> str:
        if self.returncode is None:
            return self.stderr
        # scontrol prints some errors ("Node x not found") on stdout.
        said = self.stderr.strip() or self.stdout.strip()[:500] or "(no output)"
        return f"exited {self.returncode}: {said}"


def client_env(config: SlurmConfig) -> dict[str, str]:
    """The environment for a client: SLURM_CONF as configured, and ISO times whatever the host's
    SLURM_TIME_FORMAT (the text forms' times and reason stamps are read as ISO)."""
    env = dict(os.environ)
    if config.slurm_conf is not None:
        env["SLURM_CONF"] = config.slurm_conf
    env["SLURM_TIME_FORMAT"] = "standard"
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


def run_command(config: SlurmConfig, argv: list[str]) -> CommandResult:
    """Run one Slurm client with the configured SLURM_CONF, timeout and output bound; never raises."""
    where = " ".join(argv)
    try:
        proc = subprocess.Popen(
            argv, env=client_env(config), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
    except OSError as exc:  # missing binary, not executable
        return CommandResult(where, False, "", f"could not run: {exc}", None)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        return _collect(config, proc, where)
    finally:
        proc.stdout.close()
        proc.stderr.close()


def _collect(config: SlurmConfig, proc: subprocess.Popen[bytes], where: str) -> CommandResult:
    assert proc.stdout is not None and proc.stderr is not None
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + config.timeout_s
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                _stop(proc)
                return CommandResult(where, False, "", f"timed out after {config.timeout_s:g}s", None, True)
            for key, _ in sel.select(left):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf: bytearray = key.data
                if buf is err:
                    buf += chunk[: max(0, STDERR_KEPT - len(buf))]
                    continue
                buf += chunk
                if len(buf) > config.max_output_bytes:
                    _stop(proc)
                    why = f"printed more than max_output_bytes={config.max_output_bytes}; stopped, output dropped"
                    return CommandResult(where, False, "", why, None)
    try:
        code = proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
    except subprocess.TimeoutExpired:
        _stop(proc)
        return CommandResult(where, False, "", f"timed out after {config.timeout_s:g}s", None, True)
    stdout = out.decode(errors="replace")
    return CommandResult(where, code == 0, stdout, err.decode(errors="replace").strip(), code)
