"""The training-side checkpoint client: a training loop asks it, once a step, whether to save,
how and where (``docs/agent.md``)."""

from seamguard.agent.advisor import Advisor
from seamguard.agent.http_source import HttpSource
from seamguard.agent.instruction import MEMORY, Fallback, Instruction
from seamguard.agent.sources import ControllerSource, RiskSource, SourceError, StaticSource
from seamguard.agent.throughput import Measurement

__all__ = [
    "MEMORY",
    "Advisor",
    "ControllerSource",
    "Fallback",
    "HttpSource",
    "Instruction",
    "Measurement",
    "RiskSource",
    "SourceError",
    "StaticSource",
]
