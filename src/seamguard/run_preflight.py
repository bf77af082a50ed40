"""``seamguard run``'s checks of what it was given, before it contacts any source or actuator.

Starting a daemon contacts the outside early: the jobs Slurm runs are read at start (scontrol,
each call with its timeout), sources connect, actuators are built. A mistake that the command
line, the config and the environment alone reveal must not wait behind that: with Slurm out of
reach, a webhook secret missing from the environment was reported only after some 30 s of
scontrol timeouts. These checks read files and variables only; ``run_daemon`` checks the same
things again where it uses them, so a caller that skips this module loses speed, not safety.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from pydantic import BaseModel

from seamguard.errors import InputError
from seamguard.kube_connection import require_client
from seamguard.site_config import SiteConfig, load_daemon_config


def check_run(
    *,
    config_path: Path,
    inventory: Path,
    jobs: Path | None,
    listen: str | None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Raise ``InputError`` for the first thing that would make the run fail or be useless."""
    site = load_daemon_config(config_path).site
    for path, what in ((inventory, "inventory"), (jobs, "jobs file")):
        if path is not None and not path.exists():
            raise InputError(str(path), f"{what} not found")
    if site.sources.push is not None and not listen:
        raise InputError(
            "--listen",
            "sources.push is configured, but nothing can push to a daemon that serves no HTTP API: "
            "give --listen HOST:PORT (or remove sources.push from the config)",
        )
    env = os.environ if environ is None else environ
    for key, variable in secret_variables(site):
        if not env.get(variable):
            raise InputError(key, f"environment variable {variable} is not set")
    for key, configured in (
        ("sources.kubernetes", site.sources.kubernetes),
        ("actuators.kubernetes", site.actuators.kubernetes),
    ):
        if configured is not None:
            require_client(key)  # the `kubernetes` extra (deploy/README.md)


def secret_variables(site: SiteConfig) -> list[tuple[str, str]]:
    """(config key, environment variable) of every secret the config names by variable: any
    field called ``secret_env`` or ending in ``_secret_env``, in whichever section (today the
    webhook's), so that a backend added later with one is checked here too."""
    return sorted(_secret_fields(site, ""))


def _secret_fields(model: BaseModel, prefix: str) -> Iterator[tuple[str, str]]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        key = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            yield from _secret_fields(value, f"{key}.")
        elif isinstance(value, list | tuple):  # e.g. one entry per endpoint or device
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from _secret_fields(item, f"{key}.{i}.")
        elif isinstance(value, str) and (name == "secret_env" or name.endswith("_secret_env")):
            yield key, value
