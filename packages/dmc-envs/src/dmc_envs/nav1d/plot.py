"""Plot the Nav1D reward field with trajectories drawn over it.

Only the object-oriented matplotlib API is used (no pyplot), so plotting is safe in headless
and multi-threaded code regardless of the selected backend. matplotlib is imported when a figure
is drawn, not with `dmc_envs.nav1d`: the stages that never plot (alignment, cascades) skip it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from dmc_core.atomic import atomic_path
from dmc_envs.nav1d.task import Nav1DTask

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_reward_field"]

_FIELD_ROWS = 401


def _draw(task: Nav1DTask, positions: np.ndarray, title: str) -> Figure:
    """Draw the reward heat map, the trajectories and the means on a new figure.

    Shapes:
        positions: ``(n_traj, H + 1)``.
    """
    horizon = task.horizon
    ys = np.linspace(-1.0, 1.0, _FIELD_ROWS)
    steps = np.arange(horizon)
    # Column t-1 is the reward of step t-1, i.e. of being at s at time t = 1..H.
    field = task.reward(steps[None, :], ys[:, None])
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    time_edges = np.arange(horizon + 1) + 0.5
    y_edges = np.concatenate([[-1.0], 0.5 * (ys[1:] + ys[:-1]), [1.0]])
    mesh = ax.pcolormesh(time_edges, y_edges, field, cmap="viridis", vmin=0.0, vmax=1.0)
    fig.colorbar(mesh, ax=ax, label="reward")
    times = np.arange(horizon + 1)
    if positions.shape[0]:
        # Many overlapping trajectories: thin translucent lines keep the density readable.
        ax.plot(times, positions.T, color="white", linewidth=0.6, alpha=0.35)
        ax.scatter(np.zeros(positions.shape[0]), positions[:, 0], s=6, color="white", alpha=0.6)
    ax.plot(times[1:], task.reward_means, "--", color="red", linewidth=1.2, label="reward mean")
    ax.set_xlim(-0.5, horizon + 0.5)
    ax.set_ylim(-1.0, 1.0)
    ax.set_xlabel("time step t")
    ax.set_ylabel("position s")
    ax.legend(loc="upper right", fontsize="small")
    if title:
        ax.set_title(title, fontsize="medium")
    return fig


def plot_reward_field(
    task: Nav1DTask,
    positions: ArrayLike,
    path: str | os.PathLike[str],
    title: str = "",
) -> Path:
    """Save a heat map of ``r_t(s)`` (time on x, position on y) with trajectories on top.

    The PNG is written atomically (`dmc_core.atomic`), so readers never see a partial image
    and a failed rendering leaves no file behind.

    Args:
        task: The task whose reward field is drawn.
        positions: Trajectories ``s_0..s_H``, one per row (zero rows, of any width, draw
            the field alone).
        path: Destination PNG file (its folder is created if needed).
        title: Optional axes title.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: If ``positions`` does not have shape ``(n_traj, H + 1)``.

    Shapes:
        positions: ``(n_traj, H + 1)``.
    """
    traj = np.asarray(positions, dtype=np.float64)
    if traj.ndim == 2 and traj.shape[0] == 0:
        traj = np.empty((0, task.horizon + 1))  # nothing to draw: the width is irrelevant
    if traj.ndim != 2 or traj.shape[1] != task.horizon + 1:
        raise ValueError(
            f"positions must have shape (n_traj, {task.horizon + 1}), got {traj.shape}"
        )
    fig = _draw(task, traj, title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return Path(path)
