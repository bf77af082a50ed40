"""The base of every config section and how its errors read, in a module of its own below both
``seamguard.config`` (the engine's sections) and the site's sections that live beside their code
(sources, actuators, service, safety; gathered by ``seamguard.site_config``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from seamguard.errors import InputError


class StrictModel(BaseModel):
    """Every config section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(v: str) -> str:
    if not v.startswith(("http://", "https://")):
        raise ValueError(f"must start with http:// or https://, got {v!r}")
    return v


HttpUrlText = Annotated[str, AfterValidator(_http_url)]  # a URL kept as written, http(s) only


def format_validation(where: str, exc: ValidationError) -> InputError:
    """A section's validation errors as one InputError naming ``where`` and each key (ten at most)."""
    lines = []
    for err in exc.errors()[:10]:
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        got = err.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"key {key}: {err['msg']}{shown}")
    return InputError(where, "; ".join(lines))
