"""Rewards and episode ends as the critic learns them, and the true returns they add up to.

References:
    Kostrikov, Nair, Levine, "Offline Reinforcement Learning with Implicit Q-Learning", ICLR 2022
    (locomotion rewards scaled by 1000 / (max - min episode return), official code).
"""

from __future__ import annotations

import numpy as np

from dmc_core.data import TransitionDataset
from dmc_core.errors import DatasetError
from dmc_critic.spec import CriticSpec

__all__ = [
    "done_flags",
    "episode_returns",
    "finishing_undervalued",
    "returns_to_go",
    "reward_factor",
    "transform_rewards",
]


def episode_returns(dataset: TransitionDataset) -> np.ndarray:
    """The undiscounted return of every episode, in storage order. Shapes: (num_episodes,)."""
    rewards = np.asarray(dataset.rewards, dtype=np.float64)
    return np.array([rewards[part].sum() for part in dataset.episode_slices()])


def reward_factor(dataset: TransitionDataset, spec: CriticSpec) -> float:
    """The multiplier of `spec.reward_normalization` on this dataset (1 for `none`).

    `trajectory_range` is reward_range_target / (max - min episode return): IQL's locomotion
    preprocessing, which makes the spread of returns, hence of Q, the same on every dataset.

    Raises:
        DatasetError: `trajectory_range` on a dataset whose episodes all return the same.
    """
    if spec.reward_normalization == "none":
        return 1.0
    returns = episode_returns(dataset)
    spread = float(returns.max() - returns.min())
    if spread <= 0.0:
        raise DatasetError(
            f"reward_normalization 'trajectory_range' needs episodes with different returns; "
            f"all {returns.size} episodes of the dataset return {float(returns[0])}"
        )
    return spec.reward_range_target / spread


def transform_rewards(
    dataset: TransitionDataset, spec: CriticSpec, factor: float | None = None
) -> np.ndarray:
    """The training rewards r' = scale * (factor * r) + shift, with the dataset's own factor
    unless one is given. Shapes: (N,) float32."""
    if factor is None:
        factor = reward_factor(dataset, spec)
    rewards = np.asarray(dataset.rewards, dtype=np.float64) * factor
    return (spec.reward_scale * rewards + spec.reward_shift).astype(np.float32)


def finishing_undervalued(
    dataset: TransitionDataset, rewards: np.ndarray, discount: float
) -> str | None:
    """Why Q would rate reaching the end of an episode below never reaching it, or None.

    Episodes whose terminal row carries the largest reward end on success (PushT's coverage, a
    goal reached). The TD target gives a terminal no future; if the other rows pay on average
    more over an endless future (mean / (1 - discount)) than that terminal reward, a state that
    never finishes is worth more than finishing, and Q learns to avoid success. IQL's AntMaze
    recipe (r - 1) shifts the rewards so that the largest is 0, which rules this out.

    Shapes:
        rewards: (N,) the critic's training rewards (`transform_rewards`).
    """
    terminal = np.asarray(dataset.terminals, dtype=bool)
    if not terminal.any() or terminal.all():
        return None
    values = np.asarray(rewards, dtype=np.float64)
    top = float(values.max())
    on_top = np.isclose(values[terminal], top)
    if on_top.mean() < 0.5:
        return None
    going_on = float(values[~terminal].mean())
    endless = np.inf if discount >= 1.0 and going_on > 0 else going_on / max(1.0 - discount, 1e-12)
    if endless <= top:
        return None
    return (
        f"{int(on_top.sum())} of {int(terminal.sum())} episodes end on a terminal with the "
        f"largest reward ({top:.4g}, a success), but going on pays {going_on:.4g} a step: with "
        f"no future after a terminal, Q rates finishing below never finishing. Shift the "
        f"rewards so that the largest is 0 (reward_shift: {-top:.4g}; IQL's AntMaze: r - 1)"
    )


def done_flags(dataset: TransitionDataset, terminal_on_timeout: bool) -> np.ndarray:
    """1 where the TD target must not bootstrap: terminals, and timeouts if they are terminal.

    A timeout is terminal for the critic when time is part of the observation (Nav1D's t/H): the
    next state then truly has no future. Without time in the observation (D4RL locomotion) the
    cut is an artefact of data collection, and the backup should go on through V(s').

    Shapes:
        returns: (N,) float32 of 0/1.
    """
    done = np.asarray(dataset.terminals, dtype=bool)
    if terminal_on_timeout:
        done = done | np.asarray(dataset.timeouts, dtype=bool)
    return done.astype(np.float32)


def returns_to_go(
    dataset: TransitionDataset, discount: float = 1.0, rewards: np.ndarray | None = None
) -> np.ndarray:
    """The discounted sum of rewards from each row to the end of its episode.

    G_i = r_i + discount * G_{i+1} inside an episode, G = r at its last row. `rewards` replaces
    the dataset's (e.g. the transformed training rewards), so that G is in the critic's units.

    Shapes:
        rewards: (N,) or None; returns: (N,) float64.
    """
    values = np.asarray(dataset.rewards if rewards is None else rewards, dtype=np.float64)
    if values.shape != (len(dataset),):
        raise ValueError(f"rewards must have shape ({len(dataset)},), got {values.shape}")
    out = np.empty_like(values)
    for part in dataset.episode_slices():
        running = 0.0
        # Backwards through the episode: each return is its reward plus the discounted next one.
        for row in range(part.stop - 1, part.start - 1, -1):
            running = float(values[row]) + discount * running
            out[row] = running
    return out
