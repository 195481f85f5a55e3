"""Tasks whose environment is one gymnasium env per copy (MuJoCo locomotion, MetaWorld, PushT).

A family says how to build one env (`_make_env`); the vector env of the evaluation and the action
box follow from it here, the same way for every such family.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import gymnasium
import numpy as np

from dmc_core.errors import ConfigError
from dmc_envs.tasks.base import Task

__all__ = ["GymnasiumTask"]


class GymnasiumTask(Task):
    """A task of one gymnasium env that `_make_env` builds; a subclass's constructor calls
    `_read_action_box` once `_make_env` can run."""

    _action_box: gymnasium.spaces.Box

    @abstractmethod
    def _make_env(self, **render: Any) -> gymnasium.Env:
        """One env of the task; `render` are its rendering arguments (none: no frames)."""

    def make_vector_env(self, num_envs: int) -> gymnasium.vector.VectorEnv:
        """`num_envs` envs stepped in this process; `reset(seed=s)` seeds env i with s + i;
        next-step autoreset."""
        return gymnasium.vector.SyncVectorEnv(
            [self._make_env for _ in range(num_envs)],
            autoreset_mode=gymnasium.vector.AutoresetMode.NEXT_STEP,
        )

    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The env's own action box (before any clipping wrapper widens it)."""
        return self._action_box.low.astype(np.float64), self._action_box.high.astype(np.float64)

    def _read_action_box(self) -> None:
        """Build one env and keep its unwrapped action box (`ClipAction` widens the wrapper's)."""
        probe = self._make_env()
        self._action_box = probe.unwrapped.action_space
        probe.close()

    def _gymnasium_make(self, **render: Any) -> gymnasium.Env:
        """`gymnasium.make` of the task's id, episode limit and `env_kwargs`, plus `render`.

        Raises:
            ConfigError: gymnasium refuses the kwargs (named with the task).
        """
        try:
            return gymnasium.make(
                self.env_id,
                max_episode_steps=self.max_episode_steps,
                **{**self.env_kwargs, **render},
            )
        except TypeError as err:
            raise ConfigError(
                f"task {self.describe()}: gymnasium refuses env_kwargs {self.env_kwargs} ({err})"
            ) from None
