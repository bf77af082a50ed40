"""``actuators:`` in the config: each backend opt-in, and advising until its ``mode`` says enforce.

Models only, so that loading a config imports no client library (``dispatch`` builds the routes)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, field_validator

from seamguard.actuators.guard import GuardConfig
from seamguard.actuators.haproxy import HaproxyConfig
from seamguard.actuators.kubernetes import KubernetesConfig
from seamguard.actuators.log import ANY_KIND
from seamguard.model.action_kinds import ActionKind
from seamguard.strict_model import HttpUrlText, StrictModel
from seamguard.telemetry.sources.slurm_commands import SlurmConfig

_KNOWN = frozenset(k.value for k in ActionKind)


class WebhookConfig(StrictModel):
    url: HttpUrlText
    secret_env: str = Field(
        default="SEAMGUARD_WEBHOOK_SECRET", description="env var holding the shared secret"
    )
    kinds: tuple[str, ...] = (ANY_KIND,)
    timeout_s: float = Field(default=5.0, gt=0)

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, kinds: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [k for k in kinds if k != ANY_KIND and k not in _KNOWN]
        if unknown:
            raise ValueError(
                f"unknown action kind(s) {', '.join(map(repr, unknown))}; known: {ANY_KIND!r} (every kind), "
                + ", ".join(k.value for k in ActionKind)
            )
        return kinds


class Mode(StrEnum):
    ADVISE = "advise"  # decide and journal, act on nothing
    ENFORCE = "enforce"  # carry actions out
    APPROVE = "approve"  # carry actions out once an operator approves each (``seamguard ctl approve``)


class Routed(StrictModel):
    """What every backend section adds to its own keys: its mode and its guard."""

    mode: Mode = Mode.ADVISE
    guard: GuardConfig = GuardConfig()
    # ``approve`` mode: an action nobody approved within this long is dropped (journaled ``rejected``);
    # its cause, still unwell, is decided again at the next takeover or relapse.
    approve_within_s: float = Field(default=3600.0, gt=0, le=7 * 86400.0, allow_inf_nan=False)


class WebhookSection(WebhookConfig, Routed):
    pass


class HaproxySection(HaproxyConfig, Routed):
    pass


class KubernetesSection(KubernetesConfig, Routed):
    pass


class SlurmSection(SlurmConfig, Routed):
    pass


class ActuatorsConfig(StrictModel):
    """``actuators:`` in the config. The log actuator is always there; each backend is opt-in, and in
    advise mode until its ``mode`` says ``enforce``."""

    webhook: WebhookSection | None = None
    haproxy: HaproxySection | None = None
    kubernetes: KubernetesSection | None = None
    slurm: SlurmSection | None = None
