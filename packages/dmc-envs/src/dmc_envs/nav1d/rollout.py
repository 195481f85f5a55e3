"""Vectorised Nav1D data collection in the D4RL layout.

The transition reproduces :meth:`dmc_envs.nav1d.env.Nav1DEnv.step` bit for bit: the float32
action is clipped and widened to float64, and the state is kept in float64 throughout.

References:
    Fu et al., "D4RL: Datasets for Deep Data-Driven Reinforcement Learning" (2020): the
    ``observations / actions / rewards / next_observations / terminals / timeouts`` layout.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from dmc_envs.nav1d.behaviour import BehaviourPolicy
from dmc_envs.nav1d.task import Nav1DTask

__all__ = ["rollout"]


def _episode_major(x: NDArray) -> NDArray:
    """Reorder time-major rows so that each episode's rows are contiguous.

    Shapes:
        x: ``(H, B, ...)``; returns ``(B * H, ...)``.
    """
    horizon, batch = x.shape[:2]
    return np.ascontiguousarray(np.swapaxes(x, 0, 1)).reshape(batch * horizon, *x.shape[2:])


def rollout(
    task: Nav1DTask,
    policy: BehaviourPolicy,
    starts: ArrayLike,
    rng: np.random.Generator,
) -> dict[str, NDArray]:
    """Roll out one full episode of ``policy`` from each start state.

    Args:
        task: The task.
        policy: Behaviour policy supplying the actions.
        starts: Start states in ``[-1, 1]``, one per episode.
        rng: Generator passed to ``policy.sample`` (the dynamics are deterministic).

    Returns:
        The D4RL dict, flattened episode-major (episode 0's ``H`` rows first). ``terminals`` is
        all False (Nav1D never terminates early) and ``timeouts`` is True on each episode's
        last row.

    Raises:
        ValueError: If ``starts`` is not 1-D in ``[-1, 1]`` or the policy returns a bad shape.

    Shapes:
        starts: ``(B,)``; observations, next_observations: ``(B * H, 2)`` float32;
        actions: ``(B * H, 1)`` float32; rewards, terminals, timeouts: ``(B * H,)``.
    """
    state = np.array(starts, dtype=np.float64)
    if state.ndim != 1:
        raise ValueError(f"starts must be 1-D, got shape {state.shape}")
    if np.any(~((state >= -1.0) & (state <= 1.0))):
        raise ValueError("starts must lie in [-1, 1]")
    horizon, batch = task.horizon, state.size
    # Time-major buffers make each step a contiguous write; transposed to episode-major below.
    obs = np.empty((horizon, batch, 2), dtype=np.float32)
    next_obs = np.empty((horizon, batch, 2), dtype=np.float32)
    actions = np.empty((horizon, batch, 1), dtype=np.float32)
    rewards = np.empty((horizon, batch), dtype=np.float32)
    for t in range(horizon):
        obs[t] = task.observe(state, t)
        action = np.asarray(policy.sample(state, t, rng), dtype=np.float32)
        if action.shape != (batch, 1):
            raise ValueError(f"policy.sample returned shape {action.shape}, need ({batch}, 1)")
        # Clip in float32 like a float32 action fed to the env, which the env then clips.
        actions[t] = np.clip(action, np.float32(-1.0), np.float32(1.0))
        state = task.next_state(state, actions[t, :, 0].astype(np.float64))
        rewards[t] = task.reward(t, state)
        next_obs[t] = task.observe(state, t + 1)
    timeouts = np.zeros((horizon, batch), dtype=bool)
    timeouts[-1] = True
    return {
        "observations": _episode_major(obs),
        "actions": _episode_major(actions),
        "rewards": _episode_major(rewards),
        "next_observations": _episode_major(next_obs),
        "terminals": np.zeros(batch * horizon, dtype=bool),
        "timeouts": _episode_major(timeouts),
    }
