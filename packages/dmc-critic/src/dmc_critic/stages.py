"""The pipeline stages of dmc-critic."""

from __future__ import annotations

from dmc_core.cli import Arg, Stage
from dmc_critic.fit_critic import FitCriticConfig, fit_critic

__all__ = ["STAGES"]

STAGES: tuple[Stage, ...] = (
    Stage(
        name="fit_critic",
        summary="Train one IQL critic (twin Q + target, expectile V); resumable snapshots.",
        schema=FitCriticConfig,
        args=(
            Arg("--name", "critic entry of fit_critic.critics (full, ...)"),
            Arg("--dataset", "dataset file (.hdf5, D4RL layout) to learn from"),
            Arg(
                "--out",
                "critic directory: critic.safetensors, its sidecar, live/ metrics",
                output=True,
            ),
        ),
        run=fit_critic,
    ),
)
