"""A scenario's disaggregated serving section (``serving:``), read by ``twin.serving``.

Without the section the twin's online jobs keep their per-replica model (``twin.jobs``: a
replica's requests count while its pace meets the objective). With it, the named prefill and
decode jobs form one disaggregated deployment: requests arrive at ``rate_rps``, queue at a
prefill replica, move their KV cache to a decode replica over the fabric and stream from there,
and a router picks the pair (``docs/twin.md``, "Disaggregated serving").
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaselineRouter(_Strict):
    """Least outstanding requests with passive outlier ejection, as Envoy does (its defaults)."""

    consecutive_failures: int = Field(default=5, ge=1, description="Envoy consecutive_5xx")
    base_ejection_s: float = Field(default=30.0, gt=0, description="times the host's ejections so far")
    max_ejection_pct: float = Field(default=10.0, ge=0, le=100, description="at least one host may go")


class PathDegradation(_Strict):
    """What ``kv_path_degraded`` does at severity 1, full progress, to a transfer across the leaf."""

    latency_rise: float = Field(default=4.0, ge=0, description="transfer time x(1 + this)")
    jitter_ms: float = Field(default=60.0, ge=0, description="added standard deviation")
    failure_rate: float = Field(default=0.15, ge=0, le=1, description="share of transfers failing")


class Serving(_Strict):
    prefill: tuple[str, ...] = Field(min_length=1, description="online_prefill jobs: the prefill pools")
    decode: tuple[str, ...] = Field(min_length=1, description="online_decode jobs: the decode pools")
    router: Literal["auto", "baseline", "seamguard"] = Field(
        default="auto", description="auto: seamguard's router under a seamguard policy, else the baseline"
    )
    rate_rps: float = Field(default=60.0, gt=0, description="offered requests per second")
    rate_swing: float = Field(default=0.1, ge=0, lt=1, description="hourly sinusoid, share of the rate")
    rate_noise: float = Field(default=0.03, ge=0, lt=1, description="per-tick noise, share of the rate")
    prefill_ms: float = Field(default=150.0, gt=0, description="a request's prefill at nominal pace")
    prefill_parallel: int = Field(default=4, ge=1, description="requests a prefill replica runs at once")
    output_tokens: int = Field(default=200, ge=1)
    itl_ms: float = Field(default=20.0, gt=0, description="inter-token latency on an idle decode replica")
    decode_slots: int = Field(default=96, ge=1, description="streams a decode replica batches at once")
    itl_gain: float = Field(default=1.0, ge=0, description="ITL x(1 + this x batch share)")
    kv_mb: float = Field(default=300.0, gt=0, description="a request's KV cache moved prefill -> decode")
    path_gbps: float = Field(default=200.0, gt=0, description="a transfer's bandwidth within a leaf")
    cross_leaf_share: float = Field(default=0.8, gt=0, le=1, description="of it, across the spine")
    hop_ms: float = Field(default=0.5, ge=0, description="per switch crossed")
    jitter_share: float = Field(default=0.1, ge=0, description="healthy jitter (sd) over the mean")
    kv_timeout_ms: float = Field(default=500.0, ge=0, description="a failed transfer is noticed after")
    error_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="of failed transfers, those the router sees as an error (retried)",
    )
    recompute_factor: float = Field(default=1.5, gt=0, description="prefill on a decode replica is slower")
    ttft_slo_ms: float = Field(default=600.0, gt=0)
    itl_slo_ms: float = Field(default=50.0, gt=0)
    baseline: BaselineRouter = BaselineRouter()
    degradation: PathDegradation = PathDegradation()

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        both = set(self.prefill) & set(self.decode)
        if both:
            raise ValueError(f"serving: job(s) {', '.join(sorted(both))} in both pools")
        return self
