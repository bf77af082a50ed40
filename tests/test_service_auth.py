"""The rules of the service's auth layer one by one: the tokens file and its reloads, expiry, the
role grants, the audit cap, the start-up refusals of ``seamguard run`` and ``seamguard token create``.
The attacks over HTTP are in ``test_security_attacks.py``."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from fastapi import Request
from rich.console import Console
from typer.testing import CliRunner

from seamguard.cli import app
from seamguard.daemon_run import run_daemon
from seamguard.errors import InputError
from seamguard.service.access import AccessPolicy, allows, default_rules
from seamguard.service.audit import OVERFLOW, AuditTally
from seamguard.service.auth import TokenTable, digest_of, new_token, parse_tokens, token_line
from seamguard.service.sections import AuthConfig, Role, ServiceConfig
from seamguard.service.startup import check_exposure, is_loopback
from tests.test_daemon import write_inventory

runner = CliRunner(env={"COLUMNS": "400"})


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_tokens_file_names_the_line_at_fault() -> None:
    good = token_line("a", [Role.VIEWER], new_token())
    cases = {
        "a viewer": "expected NAME ROLES DIGEST [EXPIRES], got 2 field(s)",
        "a root sha256:" + "0" * 64: "roles.0: Input should be 'viewer', 'pusher', 'operator' or 'admin'",
        "a viewer " + new_token(): "digest: Value error, expected sha256: and 64 lowercase hex digits",
        "a viewer sha256:" + "0" * 64 + " 2027-01-01T00:00:00": "expires: Value error, expiry",
        "b viewer " + good.split()[2]: "the digest of 'b' is also that of 'a'",
        "a pusher sha256:" + "1" * 64: "name 'a' already given on line 2",
    }
    for bad, expected in cases.items():
        with pytest.raises(InputError) as err:
            parse_tokens(f"# tokens\n{good}\n\n{bad}  # comment\n", "tokens.txt")
        assert err.value.where == "tokens.txt:4", bad
        assert expected in err.value.problem, (bad, err.value.problem)


def test_lookup_checks_the_digest_and_the_expiry_to_the_second(tmp_path: Path) -> None:
    secret = new_token()
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    path = tmp_path / "tokens"
    path.write_text(token_line("ci", [Role.PUSHER], secret, expires) + "\n")
    table = TokenTable(AuthConfig(tokens_file=path))
    at = expires.timestamp()
    principal, why = table.lookup(secret, at - 1)
    assert principal is not None and principal.name == "ci" and principal.roles == {Role.PUSHER} and not why
    assert table.lookup(secret, at) == (None, "token of 'ci' expired")
    assert table.lookup(secret[:-1], at - 1) == (None, "unknown or revoked token")
    assert table.lookup(digest_of(secret), at - 1)[0] is None  # the stored digest is not a credential


def test_the_tokens_file_is_reread_at_most_once_a_second_and_a_bad_one_is_not_taken(tmp_path: Path) -> None:
    one, two = new_token(), new_token()
    path = tmp_path / "tokens"
    path.write_text(token_line("one", [Role.VIEWER], one) + "\n")
    clock = Clock()
    table = TokenTable(AuthConfig(tokens_file=path), monotonic=clock)
    path.write_text(token_line("two", [Role.VIEWER], two) + "\n")
    clock.t += 0.9
    assert table.lookup(one, 0)[0] is not None  # not looked at yet
    clock.t += 0.2
    assert table.lookup(one, 0)[0] is None and table.lookup(two, 0)[0] is not None
    assert table.drain_problems() == [
        ("info", f"tokens file {path} reloaded: 1 token(s), added two, removed one")
    ]
    path.write_text("two viewer sha256:short\n")
    clock.t += 1.1
    assert table.lookup(two, 0)[0] is not None  # the previous table stays
    (level, message), *_ = table.drain_problems()
    assert level == "error" and f"{path}:1" in message and "previous 1 token(s) stay" in message
    path.unlink()
    clock.t += 1.1
    assert table.lookup(two, 0)[0] is not None
    assert table.drain_problems()[0][0] == "error"


def test_the_roles_grant_what_the_docs_say() -> None:
    policy = AccessPolicy(default_rules("/v1/push"))
    assert policy.needed("GET", "/healthz") is None and policy.needed("GET", "/readyz") is None
    assert policy.needed("POST", "/healthz") is Role.ADMIN
    assert policy.needed("GET", "/v1/jobs/train/risk") is Role.VIEWER
    assert policy.needed("GET", "/v1/jobs/a/b/risk") is Role.ADMIN  # one segment per {job}
    assert policy.needed("GET", "/metrics") is Role.VIEWER
    assert policy.needed("POST", "/v1/push") is Role.PUSHER and policy.needed("GET", "/v1/push") is Role.ADMIN
    assert policy.needed("GET", "/v1/statusx") is Role.ADMIN
    assert AccessPolicy(default_rules("/ingest")).needed("POST", "/v1/push") is Role.ADMIN
    grants = {(r, n): allows(frozenset({r}), n) for r in Role for n in Role}
    assert {k for k, v in grants.items() if v} == {
        (Role.VIEWER, Role.VIEWER), (Role.PUSHER, Role.PUSHER), (Role.OPERATOR, Role.OPERATOR),
        (Role.OPERATOR, Role.VIEWER), *((Role.ADMIN, n) for n in Role),
    }  # fmt: skip


def test_the_audit_tally_is_bounded_and_counts_its_overflow() -> None:
    tally = AuditTally(max_keys=2)
    for _ in range(5):
        tally.count("pusher", "", "POST", "/v1/push", 202)
    tally.count("anonymous", "10.0.0.9", "POST", "/v1/push", 401)
    for i in range(3):
        tally.count("anonymous", "10.0.0.9", "GET", f"/scan/{i}", 401)
    tally.count("pusher", "", "POST", "/v1/push", 202)  # a known key still counts past the cap
    rows = tally.drain(7.0)
    assert [(r.principal, r.path, r.count) for r in rows] == [
        ("anonymous", "/v1/push", 1), ("pusher", "/v1/push", 6), (OVERFLOW, "", 3),
    ]  # fmt: skip
    assert tally.drain(8.0) == []


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "gpu-master.example"])
def test_listening_beyond_loopback_without_a_token_is_refused(host: str) -> None:
    with pytest.raises(InputError) as err:
        check_exposure(host, ServiceConfig())
    assert err.value.where == "--listen" and "seamguard token create" in err.value.problem
    check_exposure(host, ServiceConfig.model_validate({"auth": {"tokens_file": "/x"}}))


def test_loopback_is_recognised() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.9.9.9", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.1", "localhost.evil"))


def write_config(path: Path, **over: object) -> Path:
    base = {"engine": {"tick_s": 1, "stale_after_s": 10, "observe_every_s": 10}, "sources": {"push": {}}}
    path.write_text(yaml.safe_dump({**base, **over}), encoding="utf-8")
    return path


def test_run_refuses_to_serve_the_network_without_a_token_before_writing_anything(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    with pytest.raises(
        InputError, match=re.escape("0.0.0.0 is not a loopback address and service.auth has no token")
    ):
        run_daemon(
            config_path=write_config(tmp_path / "sg.yaml"), inventory=write_inventory(tmp_path / "inv.csv"),
            jobs=None, journal_path=journal, listen="0.0.0.0:0", ticks=1, console=Console(file=io.StringIO()),
        )  # fmt: skip
    assert not journal.exists()


def test_run_refuses_a_bad_tokens_file_naming_the_line(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("ops admin sha256:" + "a" * 63 + "\n")
    cfg = write_config(tmp_path / "sg.yaml", service={"auth": {"tokens_file": str(tokens)}})
    journal = tmp_path / "journal.sqlite"
    result = runner.invoke(
        app, ["run", "--inventory", str(write_inventory(tmp_path / "inv.csv")), "--config", str(cfg),
              "--journal", str(journal), "--listen", "127.0.0.1:0", "--ticks", "1"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"error: {tokens}:1: digest: Value error, expected sha256:" in result.output
    assert not journal.exists()
    tokens.unlink()
    result = runner.invoke(
        app, ["run", "--inventory", str(tmp_path / "inv.csv"), "--config", str(cfg),
              "--journal", str(journal), "--listen", "127.0.0.1:0", "--ticks", "1"],
    )  # fmt: skip
    assert result.exit_code == 2 and f"{tokens}: cannot read tokens file" in result.output


def test_token_create_prints_the_secret_once_and_a_line_with_its_digest_only(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["token", "create", "--name", "grafana", "--role", "viewer", "--expires", "2031-01-01T00:00:00Z"]
    )
    assert result.exit_code == 0, result.output
    out = [line.strip() for line in result.output.splitlines()]
    secret, line = out[1], out[3]
    assert secret.startswith("sgt_") and len(secret) >= 40 and secret not in line
    (token,) = parse_tokens(line, "pasted")
    assert token.principal.name == "grafana" and token.principal.roles == {Role.VIEWER}
    assert token.expires == datetime(2031, 1, 1, tzinfo=UTC).timestamp()
    table_file = tmp_path / "t"
    table_file.write_text(line + "\n")
    assert TokenTable(AuthConfig(tokens_file=table_file)).lookup(secret, 0)[0] == token.principal
    bad = runner.invoke(app, ["token", "create", "--name", "x y", "--role", "viewer"])
    assert bad.exit_code == 2 and "--name: Value error" in bad.output
    bad = runner.invoke(app, ["token", "create", "--name", "x", "--role", "root"])
    assert bad.exit_code == 2 and "--role: Input should be 'viewer'" in bad.output


def test_a_name_both_inline_and_in_the_file_is_refused_at_start_and_on_reload(tmp_path: Path) -> None:
    inline = {"name": "ops", "roles": ["admin"], "digest": digest_of(new_token())}
    path = tmp_path / "tokens"
    path.write_text(token_line("ops", [Role.VIEWER], new_token()) + "\n")
    with pytest.raises(
        InputError, match=re.escape("name 'ops' is given both in service.auth.tokens and in this file")
    ):
        TokenTable(AuthConfig.model_validate({"tokens": [inline], "tokens_file": str(path)}))
    other = new_token()
    path.write_text(token_line("ci", [Role.PUSHER], other) + "\n")
    clock = Clock()
    table = TokenTable(
        AuthConfig.model_validate({"tokens": [inline], "tokens_file": str(path)}), monotonic=clock
    )
    path.write_text(token_line("ops", [Role.VIEWER], new_token()) + "\n")
    clock.t += 2
    assert table.lookup(other, 0)[0] is not None  # the previous file's tokens stay
    assert "given both" in table.drain_problems()[0][1]


def test_the_principal_is_in_request_state_for_the_handlers() -> None:
    import httpx

    from seamguard.config import load_config
    from seamguard.control.controller import Controller
    from seamguard.model.topology import build_topology
    from seamguard.service.app import create_app
    from seamguard.service.guard import Security
    from seamguard.service.server import serve_in_thread
    from tests.conftest import small_inventory, small_jobs

    secret = new_token()
    auth = AuthConfig.model_validate(
        {"tokens": [{"name": "ops", "roles": ["admin"], "digest": digest_of(secret)}]}
    )
    security = Security(AccessPolicy(default_rules(None)), TokenTable(auth), AuditTally())
    api = create_app(
        Controller(build_topology(small_inventory(), small_jobs()), load_config()), security=security
    )

    @api.post("/whoami")
    def whoami(request: Request) -> dict[str, object]:
        return {"principal": getattr(request.state, "principal", None)}

    server = serve_in_thread(api)
    try:
        resp = httpx.post(
            f"{server.url}/whoami", headers={"Authorization": f"Bearer {secret}"}, trust_env=False
        )
        assert resp.json() == {"principal": "ops"}
        assert httpx.post(f"{server.url}/whoami", trust_env=False).status_code == 401
        assert httpx.get(f"{server.url}/readyz", trust_env=False).status_code == 503  # no tick yet
    finally:
        server.stop()
    rows = security.drain(1.0)[0]
    assert [(r.principal, r.client, r.method, r.path, r.status, r.count) for r in rows] == [
        ("anonymous", "127.0.0.1", "POST", "/whoami", 401, 1), ("ops", "", "POST", "/whoami", 200, 1),
    ]  # fmt: skip
