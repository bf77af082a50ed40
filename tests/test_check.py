"""``seamguard check CONFIG`` (issue 18) against real components on loopback: the twin's DCGM
exporter, the Debian ``prometheus``, a webhook receiver, the twin's pymodbus BMS server, ``etcd``,
PostgreSQL and ``haproxy``; Slurm through a config whose clients are missing (no cluster is started).

Each test asserts what the operator reads (the exit code, the failed row naming where and why)
and that nothing was changed: no action POSTed, no process started before the config passed.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import httpx
import psycopg
import pytest
import yaml
from typer.testing import CliRunner

from seamguard.check.probe import Outcome, Row, run_probes
from seamguard.check_run import plan_check
from seamguard.cli import app
from seamguard.journal.postgres import migrate
from seamguard.telemetry.sources.registers import ModbusConfig, ModbusDevice, RegisterPoint, RegisterType
from seamguard.twin.exporter import MetricsServer, start_exporter
from seamguard.twin.modbus_server import TwinModbusServer
from tests.etcd_cluster import etcd_cluster
from tests.http_stub import serve
from tests.kube_api import KubeState, kube_api, write_kubeconfig
from tests.postgres_server import postgres_server
from tests.prometheus_server import free_port, prometheus_server
from tests.test_haproxy import haproxy  # noqa: F401  (the fixture: a real haproxy and its stats socket)

SECRET_ENV = "SEAMGUARD_CHECK_TEST_SECRET"
DCGM_TEXT = (
    "# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature (in C).\n# TYPE DCGM_FI_DEV_GPU_TEMP gauge\n"
    + "".join(f'DCGM_FI_DEV_GPU_TEMP{{gpu="{g}",UUID="GPU-{g}",Hostname="n0000"}} 4{g}\n' for g in range(4))
)


def runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "400"})  # rows whole: one line each


class Receiver(BaseHTTPRequestHandler):
    """A webhook receiver that takes POSTs only (a HEAD gets the server's own 501), and records
    every request it sees."""

    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        type(self).seen.append(f"POST {self.path}")
        self.send_response(200)
        self.end_headers()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        type(self).seen.append(f"{self.command} {self.path}")
        super().send_error(code, message, explain)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.seen = []
    with serve(Receiver) as url:
        yield f"{url}/hooks/seamguard"


@pytest.fixture
def exporter() -> Iterator[MetricsServer]:
    server = start_exporter(DCGM_TEXT)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "s3cret")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    return free_port()


def write_config(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def webhook(url: str) -> dict[str, Any]:
    return {"url": url, "secret_env": SECRET_ENV, "timeout_s": 2}


def check(config: Path, *extra: str) -> tuple[int, str]:
    result = runner().invoke(app, ["check", str(config), *extra])
    return result.exit_code, result.output


def outcome_of(config: Path, **kw: Any) -> Outcome:
    return run_probes(plan_check(config_path=config, **kw))


def row_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("│")]


# ---------------------------------------------------------------- (a) everything answers


def wait_for_series(prometheus: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = httpx.get(
            f"{prometheus}/api/v1/query", params={"query": "DCGM_FI_DEV_GPU_TEMP"}, trust_env=False
        )
        if got.json()["data"]["result"]:
            return
        time.sleep(0.2)
    raise AssertionError("prometheus never scraped the exporter")


def test_a_site_whose_every_component_answers_passes(
    tmp_path: Path, exporter: MetricsServer, receiver: str, secret: None
) -> None:
    with prometheus_server([f"127.0.0.1:{exporter.port}"], tmp_path) as prometheus:
        wait_for_series(prometheus)
        config = write_config(tmp_path, {
            "sources": {
                "dcgm": {"endpoints": [exporter.url], "timeout_s": 2},
                "prometheus": {"url": prometheus, "timeout_s": 2, "dcgm_selector": 'job="dcgm"',
                               "queries": [{"query": "up", "signal": "node.heartbeat_age_s", "entity": "node/{instance}"}]},
            },
            "actuators": {"webhook": webhook(receiver)},
        })  # fmt: skip
        code, output = check(config, "--journal", str(tmp_path / "journal.sqlite"))
    assert code == 0, output
    rows = row_lines(output)
    assert len(rows) == 5, output  # the exporter, Prometheus' two queries, the webhook, the journal
    assert all("│ ok " in r for r in rows), output
    assert f"GET {exporter.url}" in output and "4 DCGM samples" in output
    assert f"GET {prometheus}/api/v1/query (the DCGM fields)" in output and "4 series" in output
    assert f"HEAD {receiver} (HTTP reachability; no action sent)" in output
    assert "HTTP 501 Unsupported method ('HEAD')" in output  # a receiver that takes POST only still answers
    assert "all 5 check(s) passed" in output
    assert Receiver.seen == ["HEAD /hooks/seamguard"], "no action is POSTed"
    assert not (tmp_path / "journal.sqlite").exists() and not (tmp_path / "journal.sqlite.lock").exists()


# ---------------------------------------------------------------- (b) one endpoint down


def test_a_closed_port_fails_its_row_alone_and_every_probe_runs_at_once(
    tmp_path: Path, exporter: MetricsServer, receiver: str, secret: None
) -> None:
    port = closed_port()
    config = write_config(tmp_path, {
        "sources": {
            "dcgm": {"endpoints": [exporter.url, f"http://127.0.0.1:{port}/metrics"], "timeout_s": 1},
            "slurm": {"scontrol": str(tmp_path / "no-scontrol"), "squeue": str(tmp_path / "no-squeue"),
                      "sinfo": str(tmp_path / "no-sinfo"), "timeout_s": 1},
        },
        "actuators": {"webhook": webhook(receiver)},
    })  # fmt: skip
    code, output = check(config)
    assert code == 1, output
    (refused,) = [r for r in row_lines(output) if f"127.0.0.1:{port}" in r]
    assert (
        "│ failed │" in refused and f"127.0.0.1:{port}: connection refused: nothing listens there" in refused
    )
    (answered,) = [r for r in row_lines(output) if f"GET {exporter.url}" in r]
    assert "│ ok " in answered
    assert "4 of 6 check(s) failed" in output  # the closed port and Slurm's three commands

    outcome = outcome_of(config)
    assert (
        outcome.probes == 5
    )  # the exporters (one probe, their own client), Slurm's three parts, the webhook
    assert outcome.peak == outcome.probes, "every probe was under way at once: one timeout, not five"
    by_tried = {r.tried: r for r in outcome.rows}
    assert by_tried[f"HEAD {receiver} (HTTP reachability; no action sent)"].ok
    slurm = [r for r in outcome.rows if r.component == "source slurm"]
    assert [r.tried for r in slurm] == [
        f"{tmp_path}/no-scontrol show node --json", f"{tmp_path}/no-squeue --json --all",
        f"{tmp_path}/no-scontrol show reservation --json",
    ]  # fmt: skip
    assert all(
        not r.ok and "could not run" in r.reason and "is Slurm's client installed" in r.reason for r in slurm
    )
    assert Receiver.seen == ["HEAD /hooks/seamguard"] * 2


def test_many_exporters_are_one_row_and_each_failure_its_own(tmp_path: Path, exporter: MetricsServer) -> None:
    port = closed_port()
    urls = [f"{exporter.url}?n={i}" for i in range(11)] + [f"http://127.0.0.1:{port}/metrics"]
    config = write_config(tmp_path, {"sources": {"dcgm": {"endpoints": urls, "timeout_s": 2}}})
    answered, refused = outcome_of(config).rows
    assert answered == Row("source dcgm", "GET each of 12 exporters", True,
                           "11 answered with DCGM samples; 1 did not (below)")  # fmt: skip
    assert refused.tried == f"GET http://127.0.0.1:{port}/metrics" and not refused.ok
    assert exporter.requests == 11


def test_a_probe_that_outlasts_its_budget_is_given_up() -> None:
    """A call that never returns (a client without a timeout of its own) costs its budget and a
    grace, then its row says so; the other probes' rows are there."""
    from seamguard.check.probe import Probe

    release = threading.Event()

    def hangs() -> list[Row]:
        release.wait()
        return [Row("source stuck", "a call that never returns", True, "returned after all")]

    try:
        outcome = run_probes([
            Probe("source stuck", "a call that never returns", hangs, 0.0),
            Probe("source fine", "nothing", lambda: [Row("source fine", "nothing", True, "")], 0.0),
        ])  # fmt: skip
    finally:
        release.set()
    stuck, fine = outcome.rows
    assert not stuck.ok and stuck.reason == "still no answer after 2 s, past its timeouts; gave up"
    assert fine.ok and outcome.failed == 1


# ---------------------------------------------------------------- (c) invalid config, (d) missing secret


@pytest.mark.parametrize(
    ("doc", "named"),
    [
        ({"classifier": {"degraded_enter": 2}}, "key classifier.degraded_enter: Input should be less than 1"),
        ({"sources": {"dcgm": {"endpoints": ["http://n1:9400/metrics"], "timeout_s": -1}}}, "key sources.dcgm.timeout_s"),
        ({"actuators": {"webhook": {"url": "ftp://x"}}}, "key actuators.webhook.url"),
        ({"engine": {"tick_s": 10}}, "sources: nothing to read"),
    ],
)  # fmt: skip
def test_an_invalid_config_exits_2_naming_the_key(tmp_path: Path, doc: dict[str, Any], named: str) -> None:
    config = write_config(tmp_path, doc)
    code, output = check(config)
    assert code == 2, output
    assert output.startswith(f"error: {config}: ") and named in output, output


def test_a_missing_secret_is_refused_before_anything_is_contacted(
    tmp_path: Path, exporter: MetricsServer, receiver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    started: list[Any] = []

    def popen(args: Any, *_a: Any, **_k: Any) -> Any:
        started.append(args)
        raise FileNotFoundError(2, "not started in this test", str(args))

    monkeypatch.setattr(subprocess, "Popen", popen)
    config = write_config(tmp_path, {
        "sources": {"dcgm": {"endpoints": [exporter.url]}, "slurm": {}},
        "actuators": {"webhook": webhook(receiver)},
    })  # fmt: skip
    code, output = check(config)
    assert code == 2, output
    assert (
        output.strip() == f"error: actuators.webhook.secret_env: environment variable {SECRET_ENV} is not set"
    )
    assert exporter.requests == 0 and Receiver.seen == [] and started == []


def test_the_inventory_and_jobs_files_are_read_as_run_reads_them(
    tmp_path: Path, exporter: MetricsServer
) -> None:
    config = write_config(tmp_path, {"sources": {"dcgm": {"endpoints": [exporter.url]}}})
    inv = tmp_path / "inv.csv"
    inv.write_text("node,rack,cdu,leaf,gpus\nn0000,r0,c0,l0,eight\n")
    code, output = check(config, "--inventory", str(inv))
    assert code == 2 and f"error: {inv}:2: column 'gpus' must be an integer" in output, output
    code, output = check(config, "--jobs", str(inv))
    assert code == 2 and "error: --jobs: needs --inventory" in output, output
    assert exporter.requests == 0


# ---------------------------------------------------------------- (e) Modbus


def bms_map(port: int, unit: int = 1) -> ModbusConfig:
    points = (
        RegisterPoint(entity="cdu/c0", signal="cdu.flow_lpm", address=0, type=RegisterType.FLOAT32),
        RegisterPoint(entity="cdu/c0", signal="cdu.supply_temp_c", address=2, type=RegisterType.INT16, scale=0.01),
    )  # fmt: skip
    return ModbusConfig(devices=(ModbusDevice(name="cdu0", host="127.0.0.1", port=port, unit=unit, timeout_s=1.0, points=points),))  # fmt: skip


def test_a_modbus_device_is_read_once_and_a_wrong_address_is_named(tmp_path: Path) -> None:
    served = bms_map(502)
    with TwinModbusServer(served, "127.0.0.1", 0) as srv:
        srv.set_values({("cdu/c0", "cdu.flow_lpm"): 410.0, ("cdu/c0", "cdu.supply_temp_c"): 18.5})
        port = srv.port
        good = served.devices[0].model_dump(mode="json") | {"port": port}
        wrong = good | {"name": "cdu1", "points": [good["points"][1] | {"entity": "cdu/c1", "address": 7}]}
        config = write_config(tmp_path, {"sources": {"modbus": {"devices": [good, wrong]}}})
        code, output = check(config)
        outcome = outcome_of(config)
    assert code == 1, output
    ok, typo = outcome.rows
    assert ok == Row("source modbus cdu0", f"Modbus read of 2 registers at 127.0.0.1:{port} unit 1 (holding 0)",
                     True, "answered 2 register(s)")  # fmt: skip
    assert typo.tried == f"Modbus read of 1 register at 127.0.0.1:{port} unit 1 (holding 7)"
    assert not typo.ok and typo.reason.startswith(
        "Modbus exception code 2 (illegal data address) from unit 1: no such register"
    )


def test_a_modbus_gateway_that_is_not_there_is_named(tmp_path: Path) -> None:
    port = closed_port()
    config = write_config(tmp_path, {"sources": {"modbus": bms_map(port).model_dump(mode="json")}})
    (row,) = outcome_of(config).rows
    assert not row.ok and row.reason.startswith(
        f"127.0.0.1:{port}: connection refused: nothing listens there"
    )


# ---------------------------------------------------------------- etcd, the journal, HAProxy, Kubernetes


def test_etcd_answers_and_a_member_down_is_its_own_row(tmp_path: Path, exporter: MetricsServer) -> None:
    down = f"http://127.0.0.1:{closed_port()}"
    with etcd_cluster(tmp_path) as cluster:
        config = write_config(tmp_path, {
            "sources": {"dcgm": {"endpoints": [exporter.url]}},
            "ha": {"endpoints": [*cluster.endpoints, down]},
        })  # fmt: skip
        rows = [r for r in outcome_of(config).rows if r.component == "ha etcd"]
    up, gone = rows
    assert up == Row("ha etcd", f"etcd {cluster.endpoints[0]}: GET /seamguard/leader (the election key)", True,
                     "answers; no replica leads now")  # fmt: skip
    assert not gone.ok and gone.reason.startswith(f"{down.removeprefix('http://')}: connection refused")


def test_the_postgres_journal_schema_is_read_without_writing(tmp_path: Path, exporter: MetricsServer) -> None:
    config = write_config(tmp_path, {"sources": {"dcgm": {"endpoints": [exporter.url]}}})
    with postgres_server() as pg:
        dsn = pg.dsn()
        code, output = check(config, "--journal", dsn)
        assert code == 1 and "no seamguard schema in this database: run `seamguard journal migrate" in output
        with psycopg.connect(dsn) as conn:  # the check created nothing
            assert conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,)
        migrate(dsn)
        code, output = check(config, "--journal", dsn)
        assert code == 0, output
        assert "schema version" in output and "current" in output
    refused = f"postgresql://seamguard@127.0.0.1:{closed_port()}/seamguard"
    (row,) = [r for r in outcome_of(config, journal=refused).rows if r.component == "journal"]
    assert not row.ok and "connection refused" in row.reason and row.reason.startswith("127.0.0.1:")


def test_haproxy_servers_are_looked_up_and_an_unknown_one_is_named(
    tmp_path: Path,
    haproxy: str,  # noqa: F811  (the fixture imported above)
    exporter: MetricsServer,
) -> None:
    servers = {"node/n0000": "be_app/s1", "node/n0001": "be_app/s9"}
    config = write_config(tmp_path, {
        "sources": {"dcgm": {"endpoints": [exporter.url]}},
        "actuators": {"haproxy": {"socket": haproxy, "servers": servers}},
    })  # fmt: skip
    (row,) = [r for r in outcome_of(config).rows if r.component.startswith("actuator haproxy")]
    assert row.component == "actuator haproxy (advise)"
    assert not row.ok and row.reason.startswith("1 mapped server(s) HAProxy does not know: be_app/s9")
    config = write_config(tmp_path, {
        "sources": {"dcgm": {"endpoints": [exporter.url]}},
        "actuators": {"haproxy": {"socket": haproxy, "servers": {"node/n0000": "be_app/s1"}}},
    })  # fmt: skip
    (row,) = [r for r in outcome_of(config).rows if r.component.startswith("actuator haproxy")]
    assert row.ok and row.reason == "3 servers, all 1 mapped ones known; level admin"


def test_kubernetes_pods_are_listed_once_and_rbac_is_named(tmp_path: Path) -> None:
    state = KubeState(pages=[{"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}])
    with kube_api(state) as url:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url)
        config = write_config(
            tmp_path, {"sources": {"kubernetes": {"kubeconfig": str(kubeconfig), "timeout_s": 2}}}
        )
        (ok,) = outcome_of(config).rows
        state.fail = 403
        (forbidden,) = outcome_of(config).rows
    assert ok.ok and ok.tried == "Kubernetes list pods (GET /api/v1/pods, limit 1)"
    assert [q.get("limit") for _, q in state.requests] == ["1", "1"]
    assert (
        not forbidden.ok
        and "HTTP 403 Forbidden (RBAC: seamguard's account needs get/list on pods" in forbidden.reason
    )


def test_a_silent_peer_fails_on_its_timeout(tmp_path: Path, exporter: MetricsServer) -> None:
    """An exporter that accepts the connection and never answers: the row says the timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever reads or answers
        port = silent.getsockname()[1]
        url = f"http://127.0.0.1:{port}/metrics"
        config = write_config(tmp_path, {"sources": {"dcgm": {"endpoints": [url], "timeout_s": 0.5}}})
        (row,) = outcome_of(config).rows
    assert not row.ok
    assert row.reason.startswith(f"127.0.0.1:{port}: no answer within 0.5 s (timeout_s)")
