"""The base of every config section, in a module of its own so that the sections of sources and
actuators can live beside their code and ``seamguard.config`` can still import them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Every config section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
