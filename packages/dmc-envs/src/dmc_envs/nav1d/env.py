"""Gymnasium environment wrapping :class:`~dmc_envs.nav1d.task.Nav1DTask`.

References:
    "Maximize Your Diffusion", §4.1 (Nav1D).
"""

from __future__ import annotations

from typing import Any, ClassVar, SupportsFloat

import gymnasium
import numpy as np
from gymnasium import spaces
from numpy.typing import NDArray

from dmc_envs.nav1d.task import Nav1DTask

__all__ = ["ENV_ID", "Nav1DEnv", "register_nav1d"]

ENV_ID = "dmc/Nav1D-v0"


class Nav1DEnv(gymnasium.Env[NDArray[np.float32], NDArray[np.float32]]):
    """One-dimensional navigation towards a moving Gaussian reward bump.

    The observation is ``(s_t, t / H)``; the episode is truncated (never terminated) after
    ``H`` steps, and stepping past that point raises until :meth:`reset` is called.

    Args:
        horizon: Episode length ``H``.
        step_size: ``gamma``, the largest move per step.
        reward_width: Base width of the reward bumps.
        reward_width_spread: Relative spread of the widths in ``[0, 1)``.
        reward_seed: Seed of the (episode-independent) reward field.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self,
        horizon: int = 16,
        step_size: float = 0.2,
        reward_width: float = 0.15,
        reward_width_spread: float = 0.0,
        reward_seed: int = 0,
    ) -> None:
        self.task = Nav1DTask.from_params(
            horizon=horizon,
            step_size=step_size,
            reward_width=reward_width,
            reward_width_spread=reward_width_spread,
            reward_seed=reward_seed,
        )
        self.observation_space = spaces.Box(
            low=np.array([-1.0, 0.0], dtype=np.float32),
            high=np.array([1.0, 1.0], dtype=np.float32),
            dtype=np.float32,
        )
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self._state: float | None = None
        self._t = 0

    def _info(self) -> dict[str, Any]:
        """Return the info dict exposing the exact (float64) state and step index."""
        return {"state": self._state, "t": self._t}

    def _obs(self) -> NDArray[np.float32]:
        """Return the current observation."""
        return self.task.observe(self._state, self._t)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        """Start an episode, from ``options["start"]`` if given, else uniform on ``[-1, 1]``.

        Raises:
            ValueError: If the given start lies outside ``[-1, 1]``.
        """
        super().reset(seed=seed)
        start = None if options is None else options.get("start")
        if start is None:
            # Always consume the generator the same way so seeded resets are reproducible.
            state = float(self.np_random.uniform(-1.0, 1.0))
        else:
            state = float(start)
            if not -1.0 <= state <= 1.0:
                raise ValueError(f"options['start'] must be in [-1, 1], got {start!r}")
        self._state, self._t = state, 0
        return self._obs(), self._info()

    def step(
        self, action: NDArray[np.float32]
    ) -> tuple[NDArray[np.float32], SupportsFloat, bool, bool, dict[str, Any]]:
        """Move by ``step_size * clip(action, -1, 1)`` and collect the step's reward.

        Raises:
            RuntimeError: If called before :meth:`reset` or after the episode was truncated.
            ValueError: If the action does not hold exactly one number.
        """
        if self._state is None:
            raise RuntimeError("Nav1DEnv.step called before reset()")
        if self._t >= self.task.horizon:
            raise RuntimeError(
                f"Nav1DEnv episode is over (truncated after {self.task.horizon} steps); "
                "call reset() before stepping again"
            )
        flat = np.asarray(action, dtype=np.float64).reshape(-1)
        if flat.size != 1:
            raise ValueError(f"action must hold exactly one value, got shape {np.shape(action)}")
        next_state = float(self.task.next_state(self._state, flat[0]))
        reward = float(self.task.reward(self._t, next_state))
        self._state, self._t = next_state, self._t + 1
        truncated = self._t == self.task.horizon
        return self._obs(), reward, False, truncated, self._info()


def register_nav1d() -> None:
    """Register :data:`ENV_ID` with gymnasium; calling it again is a no-op.

    ``max_episode_steps`` is left unset because the environment truncates itself.
    """
    if ENV_ID in gymnasium.registry:
        return
    gymnasium.register(id=ENV_ID, entry_point="dmc_envs.nav1d.env:Nav1DEnv", max_episode_steps=None)
