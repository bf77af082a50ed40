"""The base of every config section, in a module of its own so that the sections of sources and
actuators can live beside their code and ``seamguard.config`` can still import them."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Every config section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(v: str) -> str:
    if not v.startswith(("http://", "https://")):
        raise ValueError(f"must start with http:// or https://, got {v!r}")
    return v


HttpUrlText = Annotated[str, AfterValidator(_http_url)]  # a URL kept as written, http(s) only
