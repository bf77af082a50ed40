"""seamguard: a seam-aware reliability orchestrator for GPU clusters."""

__version__ = "0.1.0"
