"""The daemon's configuration: the engine's policy and the site's sections, from one file.

A user writes one YAML file (``docs/config.md``). The engine's sections are validated by
``seamguard.config`` (a leaf every engine package imports); the sections that describe the site
the daemon runs in (what it reads, what carries actions out, how far it may go, who may call its
API) are validated here, beside the daemon, so that the engine's config imports none of the
sources, actuators, safety layer or service. A key that neither knows is refused, named with its
file and path, as before.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from pydantic import ValidationError, model_validator

from seamguard.actuators.sections import ActuatorsConfig
from seamguard.config import SITE_SECTIONS, Config, default_policy, engine_config, read_policy
from seamguard.control.safety_config import SafetyConfig
from seamguard.ha.settings import HaConfig
from seamguard.service.access import CONSOLE_ASSETS, VIEWER_PATHS
from seamguard.service.sections import ServiceConfig
from seamguard.serving.settings import ServingConfig
from seamguard.strict_model import StrictModel, format_validation
from seamguard.telemetry.sources.sections import SourcesConfig
from seamguard.yaml_input import merge_mappings

# The service's own routes: a push path on one of them would shadow it (or be shadowed).
TAKEN_PATHS = frozenset({"/healthz", "/readyz", *VIEWER_PATHS, *CONSOLE_ASSETS})
TAKEN_PREFIXES = ("/v1/jobs/", "/v1/ops/", "/v1/fleet/", "/v1/entities/", "/console/")


class SiteConfig(StrictModel):
    """The daemon's site sections (``config.SITE_SECTIONS`` names the same keys)."""

    sources: SourcesConfig = SourcesConfig()  # what the daemon reads (docs/sources.md, docs/facilities.md)
    safety: SafetyConfig = SafetyConfig()  # budgets, storm brake, recovery (docs/safety.md)
    actuators: ActuatorsConfig = ActuatorsConfig()  # what carries actions out (docs/actuators.md)
    service: ServiceConfig = ServiceConfig()  # who may call the HTTP API, over what (docs/security.md)
    ha: HaConfig | None = None  # several replicas, one leader through etcd (docs/ha.md); None: alone
    serving: ServingConfig = ServingConfig()  # the routing plan's weights as decisions (docs/serving.md)

    @model_validator(mode="after")
    def _push_path_free(self) -> Self:
        push = self.sources.push
        if push is not None and (push.path in TAKEN_PATHS or push.path.startswith(TAKEN_PREFIXES)):
            raise ValueError(
                f"sources.push.path: {push.path!r} is a path the service already serves; "
                "choose another (default /v1/push)"
            )
        return self


@dataclass(frozen=True)
class DaemonConfig:
    """What ``seamguard run`` runs on: the engine's policy and the site around it."""

    policy: Config  # the engine's sections
    site: SiteConfig

    def sha256(self) -> str:
        """A digest of both, journaled so that a run can be matched to the policy it ran."""
        text = self.policy.model_dump_json() + self.site.model_dump_json()
        return hashlib.sha256(text.encode()).hexdigest()


def _validated(data: dict[str, Any], where: str) -> DaemonConfig:
    policy = engine_config(data, where)
    try:
        site = SiteConfig.model_validate({k: v for k, v in data.items() if k in SITE_SECTIONS})
    except ValidationError as exc:
        raise format_validation(where, exc) from None
    return DaemonConfig(policy, site)


def load_daemon_config(path: Path | None = None) -> DaemonConfig:
    """Defaults merged with ``path``; raises InputError naming the file and key on bad input."""
    return _validated(*read_policy(path))


def daemon_config_from_mapping(override: dict[str, Any]) -> DaemonConfig:
    """Defaults merged with an in-memory override (tests)."""
    return _validated(merge_mappings(default_policy(), override), "config")
