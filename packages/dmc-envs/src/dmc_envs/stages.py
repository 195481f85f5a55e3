"""The pipeline stages of dmc-envs."""

from __future__ import annotations

from dmc_core.cli import Arg, Stage
from dmc_envs.config import MakeDatasetConfig
from dmc_envs.make_dataset import make_dataset

__all__ = ["STAGES"]

STAGES: tuple[Stage, ...] = (
    Stage(
        name="make_dataset",
        summary="Collect one Nav1D dataset (D4RL HDF5 layout) and draw it on the reward field.",
        schema=MakeDatasetConfig,
        args=(
            Arg("--name", "dataset entry of make_dataset.datasets (partial, full, expert, ...)"),
            Arg("--out", "dataset file to write (.hdf5); config and stats are written beside it"),
            Arg("--plot", "PNG of the reward field with a sample of the trajectories"),
        ),
        run=make_dataset,
    ),
)
