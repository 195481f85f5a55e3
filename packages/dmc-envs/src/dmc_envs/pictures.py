"""Pictures of episodes: the task's own where it has one, else its first observation dimensions
over time (one line per episode)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dmc_core.atomic import atomic_path
from dmc_envs.tasks.base import Task

__all__ = ["draw_episodes", "episode_observations"]

#: Observation dimensions the generic picture draws.
DRAWN_DIMENSIONS = 3


def draw_episodes(task: Task, observations: list[np.ndarray], path: Path, title: str) -> Path:
    """Draw episodes (each (T + 1, obs_dim)) into the PNG `path`, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if task.plot_episodes(observations, path, title):
        return path
    from matplotlib.figure import Figure  # here: matplotlib costs every stage's start-up

    dims = min(DRAWN_DIMENSIONS, observations[0].shape[1]) if observations else 1
    fig = Figure(figsize=(7.0, 1.8 + 1.6 * dims), layout="constrained")
    axes = fig.subplots(dims, 1, sharex=True, squeeze=False)[:, 0]
    for d, axis in enumerate(axes):
        for episode in observations:
            axis.plot(episode[:, d], linewidth=0.8, alpha=0.6)
        axis.set_ylabel(f"obs[{d}]")
    axes[-1].set_xlabel("step")
    fig.suptitle(f"{task.env_id}: {title}", fontsize="medium")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def episode_observations(
    observations: np.ndarray, next_observations: np.ndarray, slices: list[slice]
) -> list[np.ndarray]:
    """Each episode's observations with the one after its last step appended.

    Shapes:
        observations, next_observations: (N, obs_dim) -> list of (T_i + 1, obs_dim).
    """
    return [
        np.concatenate([observations[part], next_observations[part.stop - 1 : part.stop]])
        for part in slices
    ]
