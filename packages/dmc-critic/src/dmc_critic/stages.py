"""The pipeline stages of dmc-critic."""

from __future__ import annotations

from dmc_core.cli import Arg, Stage
from dmc_critic.fit_critic import FitCriticConfig, fit_critic
from dmc_critic.fit_policy import FitPolicyConfig, fit_policy

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
    Stage(
        name="fit_policy",
        summary="Train one baseline policy: behaviour cloning or IQL's AWR; resumable snapshots.",
        schema=FitPolicyConfig,
        args=(
            Arg("--name", "policy entry of fit_policy.policies (bc, iql, ...)"),
            Arg("--dataset", "dataset file (.hdf5, D4RL layout) to learn from"),
            Arg("--critic", "critic checkpoint of that dataset (AWR's weights; logged advantage)"),
            Arg(
                "--out",
                "model directory: model.safetensors (a policy), its sidecar, live/ metrics",
                output=True,
            ),
        ),
        run=fit_policy,
    ),
)
