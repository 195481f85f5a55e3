"""The pipeline stages of dmc-core (the `pretrain` stage arrives with the foundation models)."""

from __future__ import annotations

from dmc_core.cli import Stage

__all__ = ["STAGES"]

STAGES: tuple[Stage, ...] = ()
