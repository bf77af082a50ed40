"""The gateway's rules without HTTP: budgets, breaker, retry budget, zombie keys, config, SSE, journal."""

from __future__ import annotations

import json
import math
import re
import sqlite3
from pathlib import Path

import pytest

from seamguard.actuators.guard import Breaker
from seamguard.errors import InputError
from seamguard.gateway.breaker import UpstreamBreaker
from seamguard.gateway.budgets import (
    Ledger,
    Need,
    Reservation,
    completion_cap,
    loads,
    need_of,
    token_ids,
    usage_of_body,
    usage_total,
)
from seamguard.gateway.config import (
    BreakerConfig,
    Estimate,
    Period,
    RetryConfig,
    ZombieConfig,
    gateway_config,
)
from seamguard.gateway.retry import RetryBudget
from seamguard.gateway.sse import read_event, split_events
from seamguard.gateway.zombie import FAILING, WOKE, ZombieWatch
from seamguard.journal.records import GatewaySpendRecord
from seamguard.journal.sqlite import SCHEMA_VERSION, SqliteJournal
from tests.gateway_harness import config

DAY = 86400.0


def _ledger(tokens: int = 1000, period: str = "day") -> Ledger:
    cfg = gateway_config(config(Path("j"), [("u", "http://u")]), "t")
    key = cfg.keys[0].model_copy(update={"budget": cfg.keys[0].budget.model_copy(update={"tokens": tokens,
                                                                                        "period": Period(period)})})  # fmt: skip
    return Ledger((key,))


def test_in_flight_reservations_count_against_the_budget() -> None:
    ledger = _ledger(1000)
    held = [ledger.reserve("alice", Need(100, 200), 10.0) for _ in range(4)]
    assert all(isinstance(h, Reservation) for h in held[:3]) and held[3] == 100  # 3 x 300 held, 100 left
    r = held[0]
    assert isinstance(r, Reservation)
    ledger.settle(r, 120)  # the upstream counted less than the worst case: the rest comes back
    assert ledger.account("alice", 10.0).remaining() == 1000 - 600 - 120


def test_a_stream_is_charged_as_it_flows_and_settled_to_the_usage() -> None:
    ledger = _ledger(1000)
    r = ledger.reserve("alice", Need(50, 100), 0.0)
    assert isinstance(r, Reservation)
    ledger.charge(r, 50)
    ledger.charge(r, 7)
    acc = ledger.account("alice", 0.0)
    assert (acc.spent, acc.reserved) == (57, 93)
    ledger.settle(r, None)  # cut: what streamed stands
    assert (acc.spent, acc.reserved) == (57, 0)
    r2 = ledger.reserve("alice", Need(10, 10), 0.0)
    assert isinstance(r2, Reservation)
    ledger.charge(r2, 15)
    ledger.settle(r2, 18)
    assert acc.spent == 57 + 18 and r2.charged == 18


def test_a_day_budget_refills_at_midnight_utc_and_a_total_one_never() -> None:
    day, total = _ledger(100, "day"), _ledger(100, "total")
    for ledger in (day, total):
        r = ledger.reserve("alice", Need(0, 100), DAY - 1)
        assert isinstance(r, Reservation)
        ledger.settle(r, 100)
    assert isinstance(day.reserve("alice", Need(0, 1), DAY), Reservation)
    assert total.reserve("alice", Need(0, 1), 10 * DAY) == 0


def test_restored_spend_counts_only_in_its_own_period() -> None:
    ledger = _ledger(1000)
    ledger.restore("alice", 0.0, 900)
    assert ledger.account("alice", 100.0).remaining() == 100
    ledger2 = _ledger(1000)
    ledger2.restore("alice", 0.0, 900)
    assert ledger2.account("alice", DAY + 5).remaining() == 1000


def test_completion_cap_names_the_field_and_sets_a_default() -> None:
    assert completion_cap({"max_tokens": 7, "n": 2}, 1024) == (14, {})
    assert completion_cap({}, 64) == (64, {"max_tokens": 64})


def test_the_completion_cap_cannot_be_played_down() -> None:
    """Both caps given: the larger is reserved (upstreams differ in which one they honour); the
    newer alone: max_tokens set to it too, for an upstream that knows only max_tokens."""
    assert completion_cap({"max_completion_tokens": 9, "max_tokens": 1}, 1024) == (9, {})
    assert completion_cap({"max_completion_tokens": 1, "max_tokens": 100_000}, 1024) == (100_000, {})
    assert completion_cap({"max_completion_tokens": 9}, 1024) == (9, {"max_tokens": 9})
    assert completion_cap({"max_tokens": 10, "n": 100}, 1024) == (1000, {})
    # /v1/completions: every prompt of a list is completed, best_of sequences each
    body = {"prompt": ["a", "b", "c"], "max_tokens": 10, "n": 2, "best_of": 5}
    assert completion_cap(body, 1024, completions=True) == (150, {})
    assert completion_cap({"prompt": [1, 2, 3], "max_tokens": 10}, 1024, completions=True) == (10, {})
    assert completion_cap({"prompt": [[1, 2], [3]], "max_tokens": 10}, 1024, completions=True) == (20, {})
    for bad in (
        {"max_tokens": -5},
        {"max_tokens": 1.5},
        {"max_tokens": True},
        {"n": "2"},
        {"max_tokens": None, "max_completion_tokens": 0},
    ):
        with pytest.raises(ValueError):
            completion_cap(bad, 1024, completions=True)
    with pytest.raises(ValueError, match="best_of"):
        completion_cap({"best_of": 0}, 1024, completions=True)


def test_malformed_usage_counts_nothing_and_json_constants_and_deep_nesting_are_refused() -> None:
    assert usage_total({"total_tokens": -5, "prompt_tokens": 3, "completion_tokens": 4}) == 7
    assert usage_total({"total_tokens": "12"}) is None
    assert usage_total({"total_tokens": 10**400}) is None  # would overflow the metrics' floats
    assert usage_total({"prompt_tokens": 10**13, "completion_tokens": 1}) is None
    assert usage_total({"total_tokens": 12.0, "prompt_tokens": 5, "completion_tokens": 7}) == 12
    for bad in (b'{"max_tokens": NaN}', b'{"a": Infinity}', b"[" * 100_000 + b"]" * 100_000):
        with pytest.raises(ValueError):
            loads(bad)
    assert usage_of_body(b"[" * 100_000) is None


def test_a_prompt_of_token_ids_is_reserved_a_token_an_id() -> None:
    est = Estimate()
    body = {"model": "m", "input": [[7] * 1000, [8] * 500]}
    raw = len(json.dumps(body).encode())  # about 3 bytes an id: under one token an id at 4 bytes a token
    assert need_of(raw, 0, est, token_ids(body)).prompt == 1500
    assert token_ids({"prompt": [1, 2, 3]}) == 3 and token_ids({"prompt": "1, 2, 3"}) == 0
    assert need_of(400, 10, est).total == 110
    with pytest.raises(ValueError, match="max_tokens"):
        completion_cap({"max_tokens": "7"}, 1)
    with pytest.raises(ValueError, match=r"^n:"):
        completion_cap({"n": 0}, 1)


def test_breaker_opens_at_the_threshold_and_half_open_probes_are_bounded() -> None:
    b = UpstreamBreaker("u", BreakerConfig(failures_to_open=3, recovery_s=10.0, half_open_probes=2))
    t = b.acquire(0.0)
    assert t is not None
    assert b.failure(t, 0.0) is None and b.failure(t, 0.0) is None
    assert b.failure(t, 1.0) is Breaker.OPEN and b.state(1.0) is Breaker.OPEN
    assert b.acquire(10.9) is None  # open: nothing sent
    p1, p2 = b.acquire(11.0), b.acquire(11.0)
    assert p1 is not None and p2 is not None and p1.probe and b.acquire(11.0) is None  # two probes at most
    assert b.success(p1, 11.5) is None and b.state(11.5) is Breaker.HALF_OPEN
    assert b.acquire(11.5) is None  # one ok, one out: still two in all
    assert b.success(p2, 12.0) is Breaker.CLOSED


def test_a_failed_probe_opens_the_breaker_again() -> None:
    b = UpstreamBreaker("u", BreakerConfig(failures_to_open=1, recovery_s=5.0, half_open_probes=1))
    t = b.acquire(0.0)
    assert t is not None and b.failure(t, 0.0) is Breaker.OPEN
    probe = b.acquire(5.0)
    assert probe is not None and b.failure(probe, 5.0) is Breaker.OPEN
    assert b.state(9.9) is Breaker.OPEN and b.state(10.0) is Breaker.HALF_OPEN


def test_retry_budget_is_a_share_of_requests_plus_a_floor_within_its_window() -> None:
    budget = RetryBudget(RetryConfig(ttl_s=10.0, min_per_s=0.5, percent=20.0))
    for _ in range(100):
        budget.request(100.0)
    taken = sum(budget.try_retry(100.5) for _ in range(100))
    assert taken == 20 + 5  # 20 % of 100 requests plus 0.5/s over 10 s
    assert not budget.try_retry(105.0)
    assert budget.try_retry(111.0)  # the window moved on: only the floor is left
    assert sum(budget.try_retry(111.0) for _ in range(10)) == 4


def test_zombie_keys_woken_after_idle_and_failing_in_a_row() -> None:
    watch = ZombieWatch(ZombieConfig(idle_s=14 * DAY, failures=3, hold_s=60.0), {"alice": 0.0})
    assert watch.used("bob", 1.0) is None  # never seen before: not a zombie
    flag = watch.used("alice", 15 * DAY)
    assert flag is not None and flag.kind == WOKE and watch.flagged(15 * DAY) == ["alice"]
    assert watch.used("alice", 15 * DAY + 1) is None
    assert watch.flag("alice", 15 * DAY + 61) is None  # the flag held its time
    assert [watch.result("bob", False, 2.0) for _ in range(2)] == [None, None]
    watch.result("bob", True, 2.0)  # a success breaks the run
    flags = [watch.result("bob", False, 3.0) for _ in range(3)]
    assert flags[:2] == [None, None] and flags[2] is not None and flags[2].kind == FAILING
    # failing on in a loop: the flag is prolonged, not raised (journaled) anew every 3 failures
    more = [watch.result("bob", False, 4.0 + i) for i in range(300)]
    assert more == [None] * 300 and watch.flagged(303.0) == ["bob"]
    later = [watch.result("bob", False, 400.0) for _ in range(3)]  # once its hold ran out: anew
    assert later[2] is not None and later[2].kind == FAILING


def test_sse_events_split_and_read() -> None:
    est = Estimate()
    raw = (b'data: {"choices":[{"index":0,"delta":{"content":"hello world!"}}],"usage":null}\n\n'
           b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}\r\n\r\n'
           b"data: [DONE]\n\ndata: {\"partial")  # fmt: skip
    events, rest = split_events(raw)
    assert len(events) == 3 and rest == b'data: {"partial'
    first, usage, done = (read_event(e, est) for e in events)
    assert first.tokens == math.ceil(12 / 4) and first.usage is None and not first.usage_only
    assert usage.usage == 7 and usage.usage_only and done.done


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"keys": [{"name": "x", "tenant": "nobody", "digest": "sha256:" + "1" * 64, "budget": {"tokens": 5}}]},
         "gateway.keys.0.tenant"),
        ({"keys": [{"name": "x", "tenant": "lab", "digest": "sha256:" + "1" * 64, "budget": {"tokens": 0}}]},
         "gateway.keys.0.budget.tokens"),
        ({"keys": [{"name": "x", "tenant": "lab", "digest": "s3cret", "budget": {"tokens": 5}}]},
         "gateway.keys.0.digest"),
        ({"retry": {"percent": 150}}, "gateway.retry.percent"),
        ({"breaker": {"half_open_probe": 1}}, "gateway.breaker.half_open_probe"),
        ({"upstreams": [{"name": "u", "url": "ftp://x", "models": ["m"]}]}, "gateway.upstreams.0.url"),
    ],
)  # fmt: skip
def test_a_bad_config_names_the_field(change: dict[str, object], named: str) -> None:
    data = config(Path("j"), [("u", "http://u")], **change)
    with pytest.raises(InputError, match="^f\\.yaml: key " + re.escape(named) + ": "):
        gateway_config(data, "f.yaml")


def test_a_duplicate_key_digest_is_refused_naming_both() -> None:
    data = config(Path("j"), [("u", "http://u")])
    data["gateway"]["keys"][1]["digest"] = data["gateway"]["keys"][0]["digest"]
    with pytest.raises(InputError, match=r"key gateway\.keys\.1\.digest: the same digest as keys\.0"):
        gateway_config(data, "f.yaml")


def test_the_journal_keeps_gateway_spend_and_an_older_journal_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with SqliteJournal(path):
        pass
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE gateway_spend; UPDATE meta SET value = '7' WHERE key = 'schema_version';")
    db.close()
    with SqliteJournal(path) as j:
        assert j.get_meta("schema_version") == str(SCHEMA_VERSION) == "8"
        j.append_gateway_spend([GatewaySpendRecord(5.0, "alice", "lab", 0.0, 30),
                                GatewaySpendRecord(9.0, "alice", "lab", 0.0, 12),
                                GatewaySpendRecord(7.0, "bob", "ops", DAY, 4)])  # fmt: skip
        assert j.gateway_spend() == [GatewaySpendRecord(9.0, "alice", "lab", 0.0, 42),
                                     GatewaySpendRecord(7.0, "bob", "ops", DAY, 4)]  # fmt: skip
