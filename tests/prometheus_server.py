"""Start the Debian ``prometheus`` binary on a free loopback port, scraping given targets.

Used by tests that need a real Prometheus: tmp config, tmp TSDB, 1 s scrape interval, wait
for ``/-/ready``, stop on exit. A missing binary skips outside CI and fails under CI=true.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml

from tests.components import unavailable


def prometheus_binary() -> str:
    path = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if os.path.exists("/usr/bin/prometheus") else None
    )
    if path is None:
        unavailable(
            "the prometheus binary is not installed (Debian package prometheus; scripts/system_packages.sh)"
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def prometheus_server(
    targets: Sequence[str], tmp: Path, *, interval_s: float = 1.0, job: str = "dcgm"
) -> Iterator[str]:
    """Yield the base URL of a Prometheus scraping ``targets`` (host:port, path /metrics)."""
    binary = prometheus_binary()
    port = free_port()
    config = {
        "global": {"scrape_interval": f"{interval_s:g}s", "scrape_timeout": f"{interval_s:g}s",
                   "evaluation_interval": f"{interval_s:g}s"},
        "scrape_configs": [{"job_name": job, "metrics_path": "/metrics", "static_configs": [{"targets": list(targets)}]}],
    }  # fmt: skip
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (tmp / "tsdb").mkdir(exist_ok=True)
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {proc.returncode}: {_tail(tmp)}")
            try:
                if httpx.get(f"{url}/-/ready", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus not ready within 60 s: {_tail(tmp)}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _tail(tmp: Path) -> str:
    text = (tmp / "prometheus.log").read_text(encoding="utf-8", errors="replace")
    return text[-2000:]
