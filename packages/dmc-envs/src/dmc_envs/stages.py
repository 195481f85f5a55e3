"""The pipeline stages of dmc-envs."""

from __future__ import annotations

from dmc_core.cli import Arg, Stage
from dmc_envs.behaviour.datasets import DATASETS_STAGE
from dmc_envs.behaviour.train import TRAIN_STAGE
from dmc_envs.config import MakeDatasetConfig
from dmc_envs.evaluation.config import EvaluateConfig, SummarizeConfig
from dmc_envs.evaluation.evaluate import evaluate
from dmc_envs.evaluation.summarize import summarize
from dmc_envs.import_dataset import IMPORT_STAGE
from dmc_envs.make_dataset import make_dataset
from dmc_envs.roll_out import ROLL_OUT_STAGE

__all__ = ["STAGES"]

STAGES: tuple[Stage, ...] = (
    Stage(
        name="make_dataset",
        summary="Collect one dataset of the pipeline's task (D4RL HDF5 layout) and draw it.",
        schema=MakeDatasetConfig,
        args=(
            Arg("--name", "dataset entry of make_dataset.datasets (partial, full, expert, ...)"),
            Arg(
                "--out",
                "dataset file to write (.hdf5); config and stats are written beside it",
                output=True,
            ),
            Arg("--plot", "PNG of a sample of the episodes", output=True),
        ),
        run=make_dataset,
    ),
    IMPORT_STAGE,
    TRAIN_STAGE,
    DATASETS_STAGE,
    ROLL_OUT_STAGE,
    Stage(
        name="evaluate",
        summary="Roll one model out by the paper's protocol: scores, coherency, entropy, plots.",
        schema=EvaluateConfig,
        args=(
            Arg("--name", "run entry of evaluate.runs (diffuser, policy, ...)"),
            Arg("--model", "model checkpoint (.safetensors) to evaluate"),
            Arg("--dataset", "the dataset it learned from (task, behaviour policy)"),
            Arg("--critic", "critic checkpoint (.safetensors) that ranks candidates"),
            Arg("--out", "results directory: results.json and candidates.json", output=True),
            Arg(
                "--plots",
                "picture directory: episodes per rule, score against candidates",
                output=True,
            ),
        ),
        run=evaluate,
    ),
    Stage(
        name="summarize",
        summary="Gather every evaluation into summary.json, headline metrics and one picture.",
        schema=SummarizeConfig,
        args=(
            Arg("--results", "directory of the evaluate stages' results (<run>/results.json)"),
            Arg("--training", "comma-separated directories of trained runs (<run>/live/ logs)"),
            Arg("--out", "the results contract: summary.json (a list of rows)", output=True),
            Arg(
                "--headline",
                "the same numbers as nested metrics for dvc metrics/exp show",
                output=True,
            ),
            Arg(
                "--plots",
                "picture directory: score against candidates, learning curves",
                output=True,
            ),
        ),
        run=summarize,
    ),
)
