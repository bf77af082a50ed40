"""The webhook actuator: each action as a signed JSON POST to any URL (a ticketing system, a runbook bot).

Signature: ``X-Seamguard-Signature: sha256=<hex>``, the HMAC-SHA256 under a shared secret of
``<timestamp>.<body>``, with the timestamp (unix seconds) in ``X-Seamguard-Timestamp``. The
timestamp is inside the signed bytes so that a captured request cannot be replayed later with a
fresh timestamp; a receiver rejects a timestamp outside its tolerance (``verify_signature``).
``Idempotency-Key`` carries the action key: a receiver that sees it twice must act once.

Answers: 2xx done; 409 already; 408, 425, 429 and 5xx failed (retried by the guard); other 4xx
refused (the receiver will not take it; retrying would not help).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os

import httpx

from seamguard.actuators.base import before_side_effect
from seamguard.actuators.sections import WebhookConfig
from seamguard.errors import InputError
from seamguard.model.actions import Action, ActionResult, ActionStatus

SIGNATURE_HEADER = "X-Seamguard-Signature"
TIMESTAMP_HEADER = "X-Seamguard-Timestamp"
_RETRYABLE = frozenset({408, 425, 429})


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(
    secret: bytes, timestamp: str, body: bytes, header: str, now: float, tolerance_s: float = 300.0
) -> bool:
    """What a receiver checks: the signature matches and the timestamp is recent."""
    try:
        fresh = abs(now - float(timestamp)) <= tolerance_s
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), header)


def payload(action: Action, now: float) -> bytes:
    return json.dumps(
        {
            "kind": action.kind,
            "target": action.target,
            "reason": action.reason,
            "state": action.state,
            "decided_at": action.decided_at,
            "epoch": action.epoch,
            "params": dict(action.params),
            "key": action.key,
            "sent_at": now,
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()


class WebhookActuator:
    def __init__(self, config: WebhookConfig, secret: bytes, *, name: str = "webhook") -> None:
        if not secret:
            raise InputError(f"actuators.{name}.secret_env", "the webhook secret is empty")
        self.name = name
        self.kinds = frozenset(config.kinds)
        self.config = config
        self._secret = secret
        self._client = httpx.Client(timeout=config.timeout_s)

    @classmethod
    def from_config(cls, config: WebhookConfig, name: str = "webhook") -> WebhookActuator:
        secret = os.environ.get(config.secret_env, "")
        if not secret:
            raise InputError(
                f"actuators.{name}.secret_env", f"environment variable {config.secret_env} is not set"
            )
        return cls(config, secret.encode(), name=name)

    def apply(self, action: Action, now: float) -> ActionResult:
        body = payload(action, now)
        ts = str(int(now))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: ts,
            SIGNATURE_HEADER: sign(self._secret, ts, body),
            "Idempotency-Key": action.key,
        }
        before_side_effect()
        try:
            resp = self._client.post(self.config.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return ActionResult(
                action, self.name, ActionStatus.FAILED, f"POST {self.config.url}: {exc!r}", now
            )
        code = resp.status_code
        text = f"POST {self.config.url}: HTTP {code} {resp.text[:200].strip()}".strip()
        if 200 <= code < 300:
            status = ActionStatus.DONE
        elif code == 409:
            status = ActionStatus.ALREADY
        elif code >= 500 or code in _RETRYABLE:
            status = ActionStatus.FAILED
        else:
            status = ActionStatus.REFUSED
        return ActionResult(action, self.name, status, text, now)

    def close(self) -> None:
        self._client.close()
