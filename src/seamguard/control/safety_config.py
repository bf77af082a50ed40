"""The safety layer's section of the site's config (``safety:``): budgets, the storm brake and
recovery delays. Apart from ``safety.py`` so the layer stays the ledger; the daemon's site config
and the twin read the same section."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, model_validator

from seamguard.config import default_policy
from seamguard.control.budgets import BudgetConfig
from seamguard.control.storm import StormConfig
from seamguard.strict_model import StrictModel, format_validation
from seamguard.yaml_input import merge_mappings


class RecoveryConfig(StrictModel):
    healthy_for_s: float = Field(
        default=900.0, ge=0, description="healthy this long before leaving quarantine"
    )
    repeat_window_s: float = Field(default=7 * 86400.0, gt=0, description="quarantines counted over this")
    repeat_factor: float = Field(default=2.0, ge=1.0, description="the delay grows by this per repeat")
    max_delay_s: float = Field(default=86400.0, gt=0)


_FIXED_BY_TABLE = ("quarantine_kinds", "undo_kinds", "release_kind")


class SafetyConfig(StrictModel):
    """Which kinds are quarantines, undos and the release is not configured: the action-kind
    table says (``model.action_kinds``, docs/actions.md), so no site can leave one unbudgeted."""

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data: Any) -> Any:
        gone = [k for k in _FIXED_BY_TABLE if isinstance(data, dict) and k in data]
        if gone:
            raise ValueError(
                f"{', '.join(gone)} removed: which action kinds take capacity, undo or release is fixed by "
                "the action-kind table (docs/actions.md); delete the key(s)"
            )
        return data

    budgets: BudgetConfig = BudgetConfig()
    storm: StormConfig = StormConfig()
    recovery: RecoveryConfig = RecoveryConfig()


def safety_from_mapping(override: dict[str, Any] | None = None) -> SafetyConfig:
    """The defaults file's ``safety:`` section merged with ``override`` (the twin, tests): the
    daemon reads the same section of the user's file (``site_config``)."""
    data = merge_mappings(default_policy().get("safety") or {}, override or {})
    try:
        return SafetyConfig.model_validate(data)
    except ValidationError as exc:
        raise format_validation("safety", exc) from None
