"""The pipeline stages of dmc-critic (none yet: they arrive with their issues)."""

from __future__ import annotations

from dmc_core.cli import Stage

__all__ = ["STAGES"]

STAGES: tuple[Stage, ...] = ()
