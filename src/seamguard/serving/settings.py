"""``serving:`` in the config: what the daemon does with the routing controller's plan.

A model only, like the other site sections (``site_config``). ``serving.weights`` absent (the
default): the plan is a hint at ``GET /v1/routing`` and nothing more. Present (``weights: {}``
takes every default): each tick the plan's HAProxy weights become ``set_weight`` decisions on the
replicas, through the operator's controls, the safety layer and the actuators (``serving.weights``,
``docs/serving.md``).
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from seamguard.strict_model import StrictModel


class WeightsConfig(StrictModel):
    min_change: int = Field(
        default=16, ge=1, le=256, description="a replica's weight moves only by this much (or to or from 0)"
    )
    min_interval_s: float = Field(
        default=60.0, ge=0, le=86400, description="at most one weight decision per replica in this long"
    )
    scale: int = Field(
        default=256, ge=1, le=256, description="the weight of each pool's most weighted replica"
    )
    ttft_slo_ms: float = Field(
        default=2000.0, gt=0, le=3.6e6, description="the time-to-first-token objective"
    )
    itl_slo_ms: float = Field(default=100.0, gt=0, le=3.6e6, description="the inter-token latency objective")

    @model_validator(mode="after")
    def _change_within_scale(self) -> Self:
        if self.min_change > self.scale:
            raise ValueError(
                f"min_change: {self.min_change} is over scale {self.scale}: no weight could ever move "
                "but to or from 0; lower min_change or raise scale"
            )
        return self


class ServingConfig(StrictModel):
    weights: WeightsConfig | None = None  # None: the plan is only served as a hint (GET /v1/routing)
