"""The gateway over HTTP, in front of a real OpenAI-compatible upstream on loopback."""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from seamguard.actuators.guard import Breaker
from seamguard.cli import app
from seamguard.journal.records import GatewaySpendRecord
from seamguard.journal.sqlite import SqliteJournal
from tests.gateway_harness import VIEWER, Running, auth, chat, config, gateway
from tests.openai_upstream import upstream

CHAT = "/v1/chat/completions"


def _post(g: Running, body: dict[str, Any], key: str = "alice", path: str = CHAT) -> httpx.Response:
    return httpx.post(g.url + path, content=json.dumps(body).encode(), headers=auth(key), timeout=30)


def _prompt(body: dict[str, Any]) -> int:
    """The gateway's prompt estimate: the body's bytes / 4."""
    return math.ceil(len(json.dumps(body).encode()) / 4)


def _spent(g: Running, key: str = "alice") -> int:
    return g.gateway.ledger.account(key, time.time()).spent


def _metric(g: Running, line_start: str) -> float:
    text = httpx.get(g.url + "/metrics", headers={"authorization": f"Bearer {VIEWER}"}).text
    found = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)]
    return sum(found)


def _notices(journal: Path) -> list[str]:
    with SqliteJournal(journal, read_only=True) as j:
        return [n.message for n in j.notices() if n.source == "gateway"]


def test_every_route_but_the_probe_needs_a_key(tmp_path: Path) -> None:
    with upstream() as (up, url), gateway(config(tmp_path / "j.sqlite", [("u", url)])) as g:
        assert httpx.get(g.url + "/healthz").status_code == 200
        for headers in ({}, {"authorization": "Bearer sgt_not-a-key"}, {"authorization": "Basic eDp5"}):
            r = httpx.post(g.url + CHAT, json=chat(), headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
            assert set(r.json()["error"]) >= {"message", "type", "code"}
        assert httpx.get(g.url + "/v1/models").status_code == 401
        assert (
            httpx.get(g.url + "/metrics", headers=auth()).status_code == 401
        )  # no metrics for a gateway key
        assert up.knobs.calls == 0
        r = _post(g, chat())
        assert r.status_code == 200 and r.json()["usage"]["total_tokens"] > 0
        models = httpx.get(g.url + "/v1/models", headers=auth()).json()
        assert [m["id"] for m in models["data"]] == ["m"] and models["data"][0]["owned_by"] == "vllm"
        assert _metric(g, 'seamguard_gateway_requests_total{key="",outcome="unauthenticated"') == 4
        text = httpx.get(g.url + "/metrics", headers={"authorization": f"Bearer {VIEWER}"}).text
        types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE seamguard_gateway")]
        families = {f for f in types if not f.endswith("_created")}
        doc = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
        assert len(families) == 10 and all(f"`{f}" in doc for f in families)  # every family documented


def test_a_request_over_the_budget_is_refused_before_the_upstream(tmp_path: Path) -> None:
    keys = config(tmp_path / "j", [])["gateway"]["keys"]
    keys[0]["budget"] = {"tokens": 100}
    with upstream() as (up, url), gateway(config(tmp_path / "j.sqlite", [("u", url)], keys=keys)) as g:
        r = _post(g, chat(max_tokens=200))
        assert r.status_code == 429
        assert (
            r.json()["error"]["type"] == "insufficient_quota"
            and "100 are left" in r.json()["error"]["message"]
        )
        assert up.knobs.calls == 0
        assert _post(g, chat(max_tokens=10)).status_code == 200  # a small one still fits
        assert up.knobs.calls == 1
    assert any("alice: 1 request(s) refused for its budget" in m for m in _notices(tmp_path / "j.sqlite"))


def test_a_request_without_max_tokens_is_capped_as_reserved(tmp_path: Path) -> None:
    data = config(tmp_path / "j.sqlite", [], estimate={"default_max_tokens": 5})
    with upstream() as (up, url):
        data["gateway"]["upstreams"] = [{"name": "u", "url": url, "models": ["m"]}]
        with gateway(data) as g:
            assert _post(g, chat(max_tokens=None)).status_code == 200
            assert up.knobs.bodies[-1]["max_tokens"] == 5


async def _client_loop(url: str, n: int, seed: int, stop_at: float) -> tuple[int, int]:
    """One client sending until refused for the budget: (ok, refused)."""
    rng = random.Random(seed)
    ok = refused = 0
    async with httpx.AsyncClient(base_url=url, headers=auth(), timeout=60) as client:
        for _ in range(n):
            if time.monotonic() > stop_at:
                break
            stream = rng.random() < 0.5
            body = chat(max_tokens=rng.randint(4, 40), stream=stream, text="x" * rng.randint(10, 400))
            if stream:
                async with client.stream("POST", CHAT, content=json.dumps(body)) as r:
                    async for _ in r.aiter_bytes():
                        pass
                    status = r.status_code
            else:
                status = (await client.post(CHAT, content=json.dumps(body))).status_code
            ok += status == 200
            refused += status == 429
    return ok, refused


def test_a_hundred_concurrent_clients_on_one_key_overshoot_the_budget_by_at_most_one_percent(
    tmp_path: Path,
) -> None:
    budget = 20_000
    keys = config(tmp_path / "j", [])["gateway"]["keys"]
    keys[0]["budget"] = {"tokens": budget}
    with upstream() as (up, url):
        up.knobs.latency_s = 0.02  # requests overlap: admission must count those in flight
        up.knobs.token_s = 0.001
        with gateway(config(tmp_path / "j.sqlite", [("u", url)], keys=keys)) as g:

            async def run() -> list[tuple[int, int]]:
                stop_at = time.monotonic() + 60
                return await asyncio.gather(*(_client_loop(g.url, 10, i, stop_at) for i in range(100)))

            results = asyncio.run(run())
            spent = _spent(g)
            assert g.gateway.ledger.account("alice", time.time()).reserved == 0  # nothing left held
    ok = sum(r[0] for r in results)
    refused = sum(r[1] for r in results)
    assert ok > 50 and refused > 0  # the budget was reached under load
    assert up.knobs.served_tokens <= budget * 1.01  # what the upstream really served
    assert spent <= budget * 1.01 and spent >= up.knobs.served_tokens * 0.99
    with SqliteJournal(tmp_path / "j.sqlite", read_only=True) as j:
        assert sum(r.tokens for r in j.gateway_spend()) == spent  # settled spend all written


def test_a_stream_cut_by_the_upstream_is_charged_for_what_it_streamed(tmp_path: Path) -> None:
    with upstream() as (up, url), gateway(config(tmp_path / "j.sqlite", [("u", url)])) as g:
        up.knobs.cut_after = 5
        body = chat(max_tokens=50, stream=True)
        with httpx.stream("POST", g.url + CHAT, content=json.dumps(body).encode(), headers=auth()) as r:
            assert r.status_code == 200
            received = b"".join(r.iter_raw())
        assert received.count(b'"content": "tok "') == 5 and b"[DONE]" not in received
        assert _spent(g) == _prompt(body) + 5  # its prompt and 5 tokens: not 0, not the 50 reserved
        assert up.knobs.calls == 1  # never retried once a byte was relayed
        assert _metric(g, 'seamguard_gateway_requests_total{key="alice",outcome="cut"') == 1


def test_a_whole_stream_settles_to_its_usage_and_the_usage_chunk_goes_only_to_who_asked(
    tmp_path: Path,
) -> None:
    with upstream() as (up, url), gateway(config(tmp_path / "j.sqlite", [("u", url)])) as g:
        up.knobs.reply_tokens = 7
        body = chat(max_tokens=50, stream=True, text="abcd" * 10)
        with httpx.stream("POST", g.url + CHAT, content=json.dumps(body).encode(), headers=auth()) as r:
            plain = b"".join(r.iter_raw())
        assert up.knobs.bodies[-1]["stream_options"] == {"include_usage": True}  # asked upstream all the same
        assert b'"choices": []' not in plain and plain.endswith(b"data: [DONE]\n\n")
        assert _spent(g) == 10 + 7  # the upstream's usage exactly, not the estimate
        body["stream_options"] = {"include_usage": True}
        with httpx.stream("POST", g.url + CHAT, content=json.dumps(body).encode(), headers=auth()) as r:
            asked = b"".join(r.iter_raw())
        assert b'"choices": []' in asked and b'"total_tokens": 17' in asked


def test_the_breaker_opens_sends_nothing_while_open_and_a_half_open_probe_closes_it(tmp_path: Path) -> None:
    data = config(tmp_path / "j.sqlite", [], breaker={"failures_to_open": 3, "recovery_s": 30, "half_open_probes": 1},
                  retry={"max_attempts": 1})  # fmt: skip
    clock = [1000.0]
    with upstream() as (up, url):
        data["gateway"]["upstreams"] = [{"name": "u", "url": url, "models": ["m"]}]
        with gateway(data, monotonic=lambda: clock[0]) as g:
            up.knobs.fail_status = 500
            assert [_post(g, chat()).status_code for _ in range(3)] == [500, 500, 500]
            assert up.knobs.calls == 3
            for _ in range(5):
                r = _post(g, chat())
                assert r.status_code == 503 and r.json()["error"]["code"] == "no_healthy_upstream"
            assert up.knobs.calls == 3  # nothing sent while open
            assert _metric(g, 'seamguard_gateway_upstream_breaker{state="open",upstream="u"}') == 1
            up.knobs.fail_status = None
            up.knobs.latency_s = 0.5
            clock[0] += 29.9
            assert _post(g, chat()).status_code == 503 and up.knobs.calls == 3  # still open
            clock[0] += 0.1

            async def probes() -> list[int]:
                async with httpx.AsyncClient(headers=auth(), timeout=30) as c:
                    rs = await asyncio.gather(*(c.post(g.url + CHAT, json=chat()) for _ in range(4)))
                return [r.status_code for r in rs]

            statuses = asyncio.run(probes())
            assert sorted(statuses) == [200, 503, 503, 503] and up.knobs.calls == 4  # one probe only
            assert g.gateway.upstreams.pools["u"].breaker.state(clock[0]) is Breaker.CLOSED
            up.knobs.latency_s = 0.0
            assert [_post(g, chat()).status_code for _ in range(3)] == [200, 200, 200]
    notices = _notices(tmp_path / "j.sqlite")
    assert "upstream u: breaker open after 3 consecutive failure(s)" in notices
    assert "upstream u: breaker closed" in notices


def test_failover_to_the_next_healthy_upstream(tmp_path: Path) -> None:
    with upstream() as (bad, bad_url), upstream() as (good, good_url):
        data = config(tmp_path / "j.sqlite", [("bad", bad_url), ("good", good_url)],
                      breaker={"failures_to_open": 2, "recovery_s": 60})  # fmt: skip
        with gateway(data) as g:
            bad.knobs.fail_status = 503
            assert all(_post(g, chat()).status_code == 200 for _ in range(10))
            assert bad.knobs.calls == 2 and good.knobs.calls == 10  # open after 2: then skipped


def test_retries_stay_within_the_retry_budget_under_a_failing_upstream(tmp_path: Path) -> None:
    data = config(tmp_path / "j.sqlite", [], breaker={"failures_to_open": 10_000},
                  retry={"max_attempts": 3, "percent": 20, "min_per_s": 0.1, "ttl_s": 10})  # fmt: skip
    with upstream() as (up, url):
        data["gateway"]["upstreams"] = [{"name": "u", "url": url, "models": ["m"]}]
        with gateway(data) as g:
            up.knobs.fail_status = 503
            n = 60
            assert all(_post(g, chat()).status_code == 503 for _ in range(n))
            retries = up.knobs.calls - n
            assert 0 < retries <= n * 0.20 + 0.1 * 10  # not the 2 x 60 that max_attempts alone allows
            assert _metric(g, 'seamguard_gateway_retries_total{outcome="taken"}') == retries
            assert _metric(g, 'seamguard_gateway_retries_total{outcome="denied"}') > 0
            up.knobs.fail_status = None
            up.knobs.fail_next = 1  # one failure, and budget left: retried, the client sees 200
            time.sleep(0.01)


def test_a_key_idle_for_weeks_that_spends_is_flagged_and_with_refuse_refused(tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite"
    with SqliteJournal(journal) as j:
        j.append_gateway_spend([GatewaySpendRecord(time.time() - 20 * 86400, "alice", "lab", 0.0, 10)])
    with upstream() as (_, url), gateway(config(journal, [("u", url)], zombie={"refuse": True})) as g:
        assert _post(g, chat()).status_code == 200  # the waking request goes through, flagged
        assert _metric(g, 'seamguard_gateway_key_zombie{key="alice",kind="woke"}') == 1
        r = _post(g, chat())
        assert r.status_code == 403 and r.json()["error"]["code"] == "key_flagged"
        assert _post(g, chat(), key="bob").status_code == 200  # never seen: not a zombie
    assert any(m.startswith("key alice flagged as a zombie (woke): idle 20.0 d") for m in _notices(journal))


def test_a_key_that_keeps_failing_is_flagged(tmp_path: Path) -> None:
    with (
        upstream() as (up, url),
        gateway(config(tmp_path / "j.sqlite", [("u", url)], zombie={"failures": 4})) as g,
    ):
        up.knobs.fail_status = 400
        for _ in range(3):
            assert _post(g, chat(), key="bob").status_code == 400
        assert _metric(g, 'seamguard_gateway_key_zombie{key="bob"') == 0
        assert _post(g, chat(), key="bob").status_code == 400
        assert _metric(g, 'seamguard_gateway_key_zombie{key="bob",kind="failing"}') == 1


def test_spend_survives_a_restart(tmp_path: Path) -> None:
    keys = config(tmp_path / "j", [])["gateway"]["keys"]
    keys[0]["budget"] = {"tokens": 300}
    with upstream() as (up, url):
        data = config(tmp_path / "j.sqlite", [("u", url)], keys=keys)
        with gateway(data) as g:
            assert _post(g, chat(max_tokens=16)).status_code == 200
            assert _post(g, chat(max_tokens=16, stream=True)).status_code == 200
            spent = _spent(g)
        assert spent > 0
        with gateway(data) as g:
            assert _spent(g) == spent
            need = 300 - spent + 1 - _prompt(chat(max_tokens=1))
            r = _post(g, chat(max_tokens=need))
            assert r.status_code == 429 and up.knobs.calls == 2


def test_bounded_input_and_clear_errors(tmp_path: Path) -> None:
    data = config(tmp_path / "j.sqlite", [], limits={"max_body_bytes": 2048},
                  tenants=[{"name": "lab", "rate": {"per_s": 0.001, "burst": 3}}, {"name": "ops"}])  # fmt: skip
    with upstream() as (up, url):
        data["gateway"]["upstreams"] = [{"name": "u", "url": url, "models": ["m"]}]
        with gateway(data) as g:
            assert _post(g, chat(text="x" * 5000), key="bob").status_code == 413
            r = httpx.post(g.url + CHAT, content=b"{not json", headers=auth("bob"))
            assert r.status_code == 400 and "invalid request body" in r.json()["error"]["message"]
            r = _post(g, {**chat(), "model": "gpt-9"}, key="bob")
            assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
            assert _post(g, chat(max_tokens=0), key="bob").status_code == 400
            assert [_post(g, chat()).status_code for _ in range(4)] == [
                200,
                200,
                200,
                429,
            ]  # the tenant's burst
            r = _post(g, chat())
            assert r.json()["error"]["code"] == "rate_limit_exceeded" and int(r.headers["retry-after"]) >= 1
            assert up.knobs.calls == 3


def test_the_cli_refuses_a_bad_config_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("gateway:\n  journal: j.sqlite\n  keys: []\n  tenants: [{name: lab}]\n"
                    "  upstreams: [{name: u, url: 'http://x', models: [m]}]\n")  # fmt: skip
    out = CliRunner().invoke(app, ["gateway", "--config", str(path)])
    assert out.exit_code == 2 and "key gateway.keys:" in out.output
    made = CliRunner().invoke(app, ["gateway", "--new-key", "carol"])
    assert made.exit_code == 0 and "sgt_" in made.output and "name: carol" in made.output


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/embeddings"])
def test_completions_and_embeddings_are_metered_too(tmp_path: Path, path: str) -> None:
    with upstream() as (_, url), gateway(config(tmp_path / "j.sqlite", [("u", url)])) as g:
        body = (
            {"model": "m", "prompt": "abcd" * 8}
            if path.endswith("completions")
            else {"model": "m", "input": "abcd" * 8}
        )
        r = _post(g, body, path=path)
        assert r.status_code == 200
        assert _spent(g) == r.json()["usage"]["total_tokens"] > 0


def test_the_served_gateway_turns_nagle_off_for_its_connections(tmp_path: Path) -> None:
    """asyncio sets TCP_NODELAY only on sockets made with proto=IPPROTO_TCP; the server's is not,
    so without it each answer's body waited for the client's delayed ACK (40 ms a request)."""
    import socket

    from seamguard.gateway.serve import start_gateway

    with upstream() as (_, url):
        cfg = tmp_path / "gw.yaml"
        cfg.write_text(json.dumps(config(tmp_path / "j.sqlite", [("u", url)])))
        gw, server = start_gateway(cfg, "127.0.0.1:0")
        try:
            assert server.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            with httpx.Client(base_url=server.url, headers=auth(), timeout=10) as client:
                assert client.post(CHAT, content=json.dumps(chat()).encode()).status_code == 200
        finally:
            server.stop()
            gw.store.close()
