"""Stage `make_dataset`: collect one Nav1D dataset, its statistics and its picture.

    python -m dmc_envs make_dataset --name full --out data/datasets/nav1d/full.hdf5 \
        --plot data/plots/nav1d_full.png

Writes the dataset (D4RL HDF5 layout with provenance attributes), `<name>.config.yaml` (the
resolved config) and `<name>.stats.json` (returns of the data against the task's optimum and the
random policy) beside it, and the reward-field picture with a sample of the trajectories.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from dmc_core.atomic import atomic_write_text
from dmc_core.config import entry, write_resolved_config
from dmc_core.data import TransitionDataset, write_dataset
from dmc_envs.config import DatasetSpec, MakeDatasetConfig
from dmc_envs.nav1d import (
    ENV_ID,
    BehaviourPolicy,
    Nav1DEnv,
    Nav1DSolution,
    Nav1DTask,
    NoisyOptimalPolicy,
    UniformPolicy,
    plot_reward_field,
    rollout,
    solve,
)

__all__ = ["episode_positions", "make_dataset"]

log = logging.getLogger(__name__)


def make_dataset(config: MakeDatasetConfig, args: argparse.Namespace) -> None:
    """Collect the dataset `args.name` of `config.datasets` and write it to `args.out`."""
    spec = entry(config.datasets, args.name, "make_dataset.datasets", args.params)
    task = Nav1DTask.from_params(**dataclasses.asdict(config.nav1d))
    solution = solve(task, grid_per_step=config.optimum_grid_per_step)
    behaviour = _behaviour(spec, solution)
    rng = np.random.default_rng(spec.seed)
    starts = rng.uniform(spec.start_low, spec.start_high, size=spec.episodes)
    log.info("collecting %d episodes of %s: %s", spec.episodes, args.name, behaviour.describe())
    arrays = rollout(task, behaviour, starts, rng)
    dataset = TransitionDataset(**arrays, attrs=_provenance(args.name, spec, task, behaviour))
    out = Path(args.out)
    write_dataset(out, dataset)
    write_resolved_config(config, out.with_suffix(".config.yaml"), "make_dataset")
    stats = _statistics(dataset, solution)
    atomic_write_text(out.with_suffix(".stats.json"), json.dumps(stats, indent=2) + "\n")
    positions = episode_positions(dataset)[: config.plot_trajectories]
    title = (
        f"Nav1D '{args.name}': {len(positions)} of {spec.episodes} episodes\n"
        f"{textwrap.fill(behaviour.describe(), 80)}"
    )
    plot_reward_field(task, positions, args.plot, title=title)
    log.info(
        "wrote %s: %d transitions, mean return %.3f (normalised score %.1f)",
        out,
        len(dataset),
        stats["return_mean"],
        stats["normalized_score"],
    )


def episode_positions(dataset: TransitionDataset) -> np.ndarray:
    """Positions `s_0..s_H` of every episode of a Nav1D dataset.

    Shapes:
        returns (episodes, H + 1).
    """
    rows = [
        np.append(dataset.observations[part, 0], dataset.next_observations[part.stop - 1, 0])
        for part in dataset.episode_slices()
    ]
    return np.stack(rows) if rows else np.zeros((0, 1))


def _behaviour(spec: DatasetSpec, solution: Nav1DSolution) -> BehaviourPolicy:
    if spec.behaviour == "noisy_optimal":
        return NoisyOptimalPolicy(solution, spec.noise_std)
    return UniformPolicy()


def _provenance(
    name: str, spec: DatasetSpec, task: Nav1DTask, behaviour: BehaviourPolicy
) -> dict[str, Any]:
    # The env's action space, recorded so that dmc-core's reader (which knows no task) can
    # refuse actions outside it.
    space = Nav1DEnv(**task.params).action_space
    return {
        "env_id": ENV_ID,
        "env_kwargs": dict(task.params),
        "dataset_kind": name,
        "behavior_policy": behaviour.describe(),
        "behavior_policy_spec": behaviour.to_dict(),
        "seed": spec.seed,
        "episodes": spec.episodes,
        "start_low": spec.start_low,
        "start_high": spec.start_high,
        "collected_by": "dmc_envs make_dataset",
        "action_low": [float(bound) for bound in space.low],
        "action_high": [float(bound) for bound in space.high],
    }


def _statistics(dataset: TransitionDataset, solution: Nav1DSolution) -> dict[str, float]:
    returns = np.array([dataset.rewards[part].sum() for part in dataset.episode_slices()])
    return {
        "episodes": int(returns.size),
        "transitions": len(dataset),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "normalized_score": float(solution.normalized_score(returns.mean())),
        "optimal_return": float(solution.optimal_return()),
        "random_return": float(solution.random_return()),
    }
