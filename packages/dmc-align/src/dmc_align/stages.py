"""The pipeline stages of dmc-align."""

from __future__ import annotations

from dmc_align.align import align
from dmc_align.spec import AlignConfig
from dmc_core.cli import Arg, Stage

__all__ = ["STAGES"]

STAGES: tuple[Stage, ...] = (
    Stage(
        name="align",
        summary="Run one alignment pass (LoRA; ppo, qvpg, dpo or sft) under the auto schedule.",
        schema=AlignConfig,
        args=(
            Arg("--name", "pass entry of align.passes"),
            Arg("--foundation", "the foundation model's checkpoint (model.safetensors)"),
            Arg("--init", "directory the pass starts from: the foundation's or a pass's"),
            Arg("--dataset", "dataset file the conditions and BC data come from"),
            Arg("--critic", "critic checkpoint that gives r(z_0)"),
            Arg("--out", "pass directory: merged model, adapters, metrics.json, live/"),
        ),
        run=align,
    ),
)
