"""Errors that carry where the bad input was, so users can fix it without reading code."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input (config, inventory, jobs, telemetry, CLI): says what and where."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem

    def __reduce__(self) -> tuple[type[InputError], tuple[str, str]]:
        # Rebuilt from both parts, not from the message: it crosses process boundaries (twin workers).
        return type(self), (self.where, self.problem)
