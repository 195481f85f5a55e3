"""The pipeline stages of dmc-core."""

from __future__ import annotations

from dmc_core.check_params import CheckParamsConfig, check_params
from dmc_core.cli import Arg, Stage
from dmc_core.pretrain import PretrainConfig, pretrain

__all__ = ["STAGES"]

STAGES: tuple[Stage, ...] = (
    Stage(
        name="check_params",
        summary="Check that every name a params section uses for another's entry exists.",
        schema=CheckParamsConfig,
        args=(
            Arg(
                "--out",
                "the check's mark (constant content): every stage depends on it",
                output=True,
            ),
        ),
        run=check_params,
    ),
    Stage(
        name="pretrain",
        summary="Train one foundation model (EMA, resumable snapshots, DDP under torchrun).",
        schema=PretrainConfig,
        args=(
            Arg("--name", "model entry of pretrain.models (diffuser, policy, ...)"),
            Arg("--dataset", "dataset file (.hdf5, D4RL layout) to learn from"),
            Arg(
                "--out",
                "model directory: model.safetensors, its sidecar, live/ metrics",
                output=True,
            ),
        ),
        run=pretrain,
    ),
)
