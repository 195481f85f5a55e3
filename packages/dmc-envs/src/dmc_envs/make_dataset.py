"""Stage `make_dataset`: collect one dataset of the pipeline's task, its statistics, a picture.

    python -m dmc_envs make_dataset --name full --out data/datasets/nav1d/full.hdf5 \
        --plot data/plots/nav1d_full.png

The task is `base.task` (a `dmc_envs.tasks` name), built with the `make_dataset` section named
like it if there is one (`make_dataset.nav1d`); the entry's behaviour is one of the task's
recipes (Nav1D: uniform, noisy_optimal; MuJoCo: D4RL's uniform random policy). Writes the
dataset (D4RL HDF5 layout with provenance attributes), `<name>.config.yaml` (the resolved config)
and `<name>.stats.json` (the data's returns, normalised by the task's references) beside it, and
a picture of some of its episodes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import textwrap
from pathlib import Path
from typing import Any

from dmc_core.atomic import atomic_write_text
from dmc_core.config import entry, write_resolved_config
from dmc_core.data import TransitionDataset, write_dataset
from dmc_core.errors import ConfigError
from dmc_envs.config import DatasetSpec, MakeDatasetConfig
from dmc_envs.pictures import draw_episodes, episode_observations
from dmc_envs.statistics import dataset_statistics
from dmc_envs.tasks import CollectSpec, Task, build_task

__all__ = ["make_dataset"]

log = logging.getLogger(__name__)


def make_dataset(config: MakeDatasetConfig, args: argparse.Namespace) -> None:
    """Collect the dataset `args.name` of `config.datasets` and write it to `args.out`."""
    spec = entry(config.datasets, args.name, "make_dataset.datasets", args.params)
    task = build_task(config.base.task, _task_options(config))
    log.info("collecting %s of task %s (%s)", args.name, task.describe(), spec.behaviour)
    collected, recipe = task.collect(_collect_spec(args.name, spec, config, task))
    dataset = TransitionDataset(
        **collected.arrays(), attrs=_provenance(args.name, spec, task, recipe)
    )
    out = Path(args.out)
    write_dataset(out, dataset)
    write_resolved_config(config, out.with_suffix(".config.yaml"), "make_dataset")
    stats = dataset_statistics(dataset, task.returns)
    atomic_write_text(out.with_suffix(".stats.json"), json.dumps(stats, indent=2) + "\n")
    slices = dataset.episode_slices()[: config.plot_trajectories]
    episodes = episode_observations(dataset.observations, dataset.next_observations, slices)
    title = (
        f"'{args.name}': {len(episodes)} of {dataset.num_episodes} episodes\n"
        f"{textwrap.fill(str(recipe.get('behavior_policy', spec.behaviour)), 80)}"
    )
    draw_episodes(task, episodes, Path(args.plot), title)
    log.info(
        "wrote %s: %d transitions, %d episodes, mean return %.3f (normalised score %.1f)",
        out,
        len(dataset),
        dataset.num_episodes,
        stats["return_mean"],
        stats["normalized_score"],
    )


def _task_options(config: MakeDatasetConfig) -> dict[str, Any]:
    """The task's settings: the section named like the task, if the schema has one."""
    section = getattr(config, config.base.task, None)
    return dataclasses.asdict(section) if dataclasses.is_dataclass(section) else {}


def _collect_spec(
    name: str, spec: DatasetSpec, config: MakeDatasetConfig, task: Task
) -> CollectSpec:
    """What the task is asked to collect: the entry's schema knobs and its `options`.

    Raises:
        ConfigError: an option the task does not read (the allowed ones named).
    """
    unknown = sorted(set(spec.options) - set(task.collect_options))
    if unknown:
        allowed = ", ".join(task.collect_options) or "none"
        raise ConfigError(
            f"make_dataset.datasets.{name}.options: task {task.describe()} reads no option "
            f"{', '.join(unknown)} (its options: {allowed})"
        )
    options = {
        "start_low": spec.start_low,
        "start_high": spec.start_high,
        "noise_std": spec.noise_std,
        "random_fraction": spec.random_fraction,
        "optimum_grid_per_step": config.optimum_grid_per_step,
        **spec.options,
    }
    return CollectSpec(spec.behaviour, spec.episodes, spec.transitions, spec.seed, options)


def _provenance(name: str, spec: DatasetSpec, task: Task, recipe: dict[str, Any]) -> dict[str, Any]:
    # The env's action space is recorded so that dmc-core's reader (which knows no task) can
    # refuse actions outside it.
    return {
        **task.provenance(),
        "task": task.name,
        "dataset_kind": name,
        **recipe,
        "seed": spec.seed,
        "collected_by": "dmc_envs make_dataset",
    }
