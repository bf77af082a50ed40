"""Token budgets: reserved at admission, charged as a stream flows, settled from the upstream's usage.

Gateways that count tokens only when an answer ends let a hundred concurrent requests on one key
pass a check that each of them alone would pass, and charge a stream only once it is over (a stream
cut short is never charged). Here a request is admitted only if the key's spent tokens, plus every
reservation still in flight, plus its own worst case fit the budget; the reservation moves into the
spent tokens as chunks are relayed and is settled to the upstream's count at the end. The ledger
is touched only from the event loop's thread and never across an ``await``, so check-and-reserve
is atomic without a lock.

A request's worst case is an estimate of its prompt (its body's bytes / ``bytes_per_token``: the
JSON around the messages is counted too, so it overstates an English prompt; at 1 byte a token it
bounds any byte-level BPE tokenizer) plus its completion cap (``completion_cap``: the larger of
``max_completion_tokens`` and ``max_tokens``, times the sequences generated; the gateway sets
``max_tokens`` when a request has none). The overshoot past a budget is what upstreams count
beyond that estimate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from seamguard.gateway.config import Estimate, KeyEntry


@dataclass(frozen=True)
class Need:
    """What a request may cost: its prompt estimate and its completion cap (tokens)."""

    prompt: int
    completion: int

    @property
    def total(self) -> int:
        return self.prompt + self.completion


def completion_cap(
    body: Mapping[str, Any], default: int, *, completions: bool = False
) -> tuple[int, dict[str, int]]:
    """(tokens the answer may take, the fields to set in the body sent upstream).

    The cap is the larger of ``max_completion_tokens`` and ``max_tokens`` when both are given
    (upstreams differ in which one they honour), times the sequences generated: ``n`` (for
    ``/v1/completions`` the larger of ``n`` and ``best_of``, times the prompts of a list of
    prompts: each is completed). A request with neither cap gets ``max_tokens`` set to ``default``;
    one with ``max_completion_tokens`` alone gets ``max_tokens`` set to it too, so an upstream that
    knows only ``max_tokens`` is held to what was reserved. Raises ValueError naming the field when
    a cap, ``n`` or ``best_of`` is not a positive integer."""
    seqs = 1
    for field in ("n", "best_of") if completions else ("n",):
        v = body.get(field)
        if v is None:
            continue
        if not _positive_int(v):
            raise ValueError(f"{field}: expected a positive integer, got {v!r}")
        seqs = max(seqs, int(v))
    if completions:
        seqs *= _prompts(body.get("prompt"))
    caps: dict[str, int] = {}
    for field in ("max_completion_tokens", "max_tokens"):
        cap = body.get(field)
        if cap is not None:
            if not _positive_int(cap):
                raise ValueError(f"{field}: expected a positive integer, got {cap!r}")
            caps[field] = int(cap)
    if not caps:
        return default * seqs, {"max_tokens": default}
    if "max_tokens" not in caps:
        return caps["max_completion_tokens"] * seqs, {"max_tokens": caps["max_completion_tokens"]}
    return max(caps.values()) * seqs, {}


def _prompts(prompt: object) -> int:
    """Prompts in a ``/v1/completions`` request: a list of strings or of token lists is several,
    a string or one token list (integers) one."""
    if isinstance(prompt, list) and prompt and not all(isinstance(p, int) for p in prompt):
        return len(prompt)
    return 1


def _positive_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def need_of(body_bytes: int, completion: int, estimate: Estimate, token_ids: int = 0) -> Need:
    """The prompt estimated from the body's bytes, or its token ids when it has more of them."""
    return Need(max(math.ceil(body_bytes / estimate.bytes_per_token), token_ids), completion)


def token_ids(body: Mapping[str, Any]) -> int:
    """Token ids a prompt gives as such (``prompt`` of ``/v1/completions``, ``input`` of
    ``/v1/embeddings``: a list of integers, or a list of them): each is a token, however few bytes
    it takes in the JSON (``"7,"`` is two)."""
    n = 0
    for field in ("prompt", "input"):
        v = body.get(field)
        if isinstance(v, list):
            for item in v:
                if isinstance(item, int):
                    n += 1
                elif isinstance(item, list):
                    n += sum(1 for t in item if isinstance(t, int))
    return n


def tokens_in_text(chars: int, estimate: Estimate) -> int:
    """Tokens charged for ``chars`` characters streamed (at least one per non-empty delta)."""
    return max(1, math.ceil(chars / estimate.bytes_per_token)) if chars else 0


MAX_USAGE = 10**12  # tokens one request can plausibly have used; a count past it is malformed


def _count(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_USAGE


def usage_total(usage: object) -> int | None:
    """``total_tokens`` of an OpenAI ``usage`` object (else prompt + completion), None if absent
    or malformed (not integers, negative, past ``MAX_USAGE``): what was charged then stands."""
    if not isinstance(usage, dict):
        return None
    total = usage.get("total_tokens")
    if _count(total):
        return total
    p, c = usage.get("prompt_tokens"), usage.get("completion_tokens", 0)  # embeddings: no completion
    if _count(p) and _count(c):  # a usage with neither a total nor a prompt count is no count (not 0)
        return p + c
    return None


def loads(raw: bytes | str) -> Any:
    """JSON as the gateway reads it: ValueError for what does not parse, for NaN and Infinity
    (not JSON; an upstream may read them otherwise) and for nesting too deep to read."""
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def usage_of_body(raw: bytes) -> int | None:
    """The ``usage`` total of a non-streamed answer's JSON body, None if it has none."""
    try:
        doc = loads(raw)
    except ValueError:
        return None
    return usage_total(doc.get("usage")) if isinstance(doc, dict) else None


@dataclass
class Account:
    """One key's ledger in its current period."""

    key: KeyEntry
    period: float  # the period's unix start (0: a fixed allowance)
    spent: int = 0  # charged this period (settled and streamed so far)
    reserved: int = 0  # worst cases of requests in flight, less what they were already charged

    @property
    def limit(self) -> int:
        return self.key.budget.tokens

    def remaining(self) -> int:
        return self.limit - self.spent - self.reserved


@dataclass
class Reservation:
    """One admitted request's hold on its key's budget."""

    account: Account
    period: float
    held: int  # reserved and not yet charged
    charged: int = 0
    settled: bool = False


class Ledger:
    """Every key's account; ``reserve`` / ``charge`` / ``settle`` from the event loop's thread."""

    def __init__(self, keys: tuple[KeyEntry, ...]) -> None:
        self._accounts = {k.name: Account(k, -1.0) for k in keys}

    def account(self, name: str, now: float) -> Account:
        """The key's account, rolled over to a new period when ``now`` is past its end."""
        acc = self._accounts[name]
        start = acc.key.budget.period.start(now)
        if start != acc.period:
            acc.period, acc.spent = start, 0  # reservations in flight stay: they were admitted
        return acc

    def restore(self, name: str, period: float, tokens: int) -> None:
        """Spent tokens read back from the journal at start (other periods than now's are ignored)."""
        acc = self._accounts.get(name)
        if acc is None:
            return  # a key since removed from the config
        if acc.period < 0:
            acc.period = period
        if acc.period == period:
            acc.spent += tokens

    def reserve(self, name: str, need: Need, now: float) -> Reservation | int:
        """A reservation of ``need.total`` tokens, or the tokens left when they do not fit."""
        acc = self.account(name, now)
        left = acc.remaining()
        if need.total > left:
            return max(0, left)
        acc.reserved += need.total
        return Reservation(acc, acc.period, need.total)

    def charge(self, r: Reservation, tokens: int) -> None:
        """Charge tokens streamed so far, taken from the reservation first (then beyond it)."""
        if r.settled or tokens <= 0:
            return
        taken = min(tokens, r.held)
        r.held -= taken
        r.charged += tokens
        if r.account.period == r.period:
            r.account.reserved -= taken
            r.account.spent += tokens
        else:  # the period rolled over while the request ran: its held part was admitted there
            r.account.reserved -= taken

    def settle(self, r: Reservation, actual: int | None) -> int:
        """End the request: charge ``actual`` (the upstream's count; None: what was charged so
        far stands) and release the rest; the tokens this settlement added or refunded."""
        if r.settled:
            return 0
        r.settled = True
        r.account.reserved -= r.held
        r.held = 0
        delta = 0 if actual is None else actual - r.charged
        if r.account.period == r.period:
            r.account.spent += delta
        r.charged += delta
        return delta
