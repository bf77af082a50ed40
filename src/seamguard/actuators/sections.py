"""``actuators:`` in the config: each backend opt-in, and advising until its ``mode`` says enforce.

Models only, so that loading a config imports no client library (``dispatch`` builds the routes)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from seamguard.actuators.guard import GuardConfig
from seamguard.actuators.haproxy import HaproxyConfig
from seamguard.actuators.kubernetes import KubernetesConfig
from seamguard.actuators.log import ANY_KIND
from seamguard.strict_model import HttpUrlText, StrictModel
from seamguard.telemetry.sources.slurm_commands import SlurmConfig


class WebhookConfig(StrictModel):
    url: HttpUrlText
    secret_env: str = Field(
        default="SEAMGUARD_WEBHOOK_SECRET", description="env var holding the shared secret"
    )
    kinds: tuple[str, ...] = (ANY_KIND,)
    timeout_s: float = Field(default=5.0, gt=0)


class Mode(StrEnum):
    ADVISE = "advise"  # decide and journal, act on nothing
    ENFORCE = "enforce"  # carry actions out


class Routed(StrictModel):
    """What every backend section adds to its own keys: its mode and its guard."""

    mode: Mode = Mode.ADVISE
    guard: GuardConfig = GuardConfig()


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
