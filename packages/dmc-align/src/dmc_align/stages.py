"""The pipeline stages of dmc-align."""

from __future__ import annotations

import argparse

from dmc_align.fit_cascade import FitCascadeConfig, fit_cascade
from dmc_align.spec import AlignConfig
from dmc_core.cli import Arg, Stage

__all__ = ["STAGES"]


def align(config: AlignConfig, args: argparse.Namespace) -> None:
    """`dmc_align.align.align`, imported when it runs: peft (with transformers) takes ~6 s to
    import, which the other stages and `--help` need not pay."""
    from dmc_align.align import align as run_pass

    run_pass(config, args)


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
            Arg(
                "--out", "pass directory: merged model, adapters, metrics.json, live/", output=True
            ),
        ),
        run=align,
    ),
    Stage(
        name="fit_cascade",
        summary="Train a cascade that refines one model's samples into better ones (spec 4.4).",
        schema=FitCascadeConfig,
        args=(
            Arg("--name", "cascade entry of fit_cascade.cascades"),
            Arg("--model", "checkpoint of the model whose samples it refines"),
            Arg("--foundation", "checkpoint of the foundation it is warm-started from"),
            Arg("--dataset", "dataset file the observation histories come from"),
            Arg("--critic", "critic checkpoint whose Q(s, a_0) orders the pairs"),
            Arg(
                "--out",
                "cascade directory: model.safetensors (+ the refined model), metrics",
                output=True,
            ),
        ),
        run=fit_cascade,
    ),
)
