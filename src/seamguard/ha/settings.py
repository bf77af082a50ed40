"""The ``ha`` section of the site config: where etcd is and how long a leadership lasts.

Safe only if a leader that cannot renew stops acting before its lease can have expired: it acts
until ``renew_deadline_s`` after it last sent a renewal that etcd accepted (measured on the
monotonic clock), while etcd keeps the lease ``ttl_s`` after it received that renewal. Two retries
must fit between the two (``renew_deadline_s + 2 * retry_s < ttl_s``): the retry that might have
saved the lease, and the action already under way when the deadline passed.
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from seamguard.strict_model import StrictModel


class HaConfig(StrictModel):
    endpoints: list[str] = Field(
        min_length=1, max_length=16, description="etcd client URLs (http:// or https://), tried in order"
    )
    key: str = Field(
        default="/seamguard/leader", pattern=r"^/[A-Za-z0-9_./-]{1,200}$", description="the election key"
    )
    name: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.:@-]{1,128}$", description="this replica (default: host:pid)"
    )
    ttl_s: int = Field(default=10, ge=2, le=3600, description="the lease etcd keeps without a renewal")
    renew_deadline_s: float = Field(
        default=6.0, gt=0, description="acting stops this long after the last renewal"
    )
    retry_s: float = Field(default=1.5, gt=0, description="between renewals, and between campaigns")
    request_timeout_s: float = Field(default=1.0, gt=0, description="one etcd request")
    ca_file: str | None = None  # TLS to etcd: the CA that signed its certificate
    cert_file: str | None = None  # client certificate, when etcd asks for one
    key_file: str | None = None

    @model_validator(mode="after")
    def _safe(self) -> Self:
        if not self.renew_deadline_s + 2 * self.retry_s < self.ttl_s:
            raise ValueError(
                f"renew_deadline_s ({self.renew_deadline_s:g}) + 2 x retry_s ({self.retry_s:g}) must be "
                f"under ttl_s ({self.ttl_s}): a leader that cannot renew must stop acting before its lease "
                "can have expired"
            )
        if self.request_timeout_s > self.retry_s:
            raise ValueError(
                f"request_timeout_s ({self.request_timeout_s:g}) must be at most retry_s ({self.retry_s:g}): "
                "a renewal may not outlast the interval it is sent in"
            )
        for url in self.endpoints:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"endpoints: {url!r} must start with http:// or https://")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self
