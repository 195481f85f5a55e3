"""The Nav1D task: dynamics, reward field and observation encoding.

Nav1D is the one-dimensional navigation problem of §4.1 of "Maximize Your Diffusion": an agent
at position ``s_t`` in ``[-1, 1]`` moves by ``step_size * a_t`` per step and is rewarded, at
every step, by how close its next position is to a moving target.

References:
    "Maximize Your Diffusion", §4.1 (Nav1D).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["Nav1DTask"]

# The first target mean and every target increment are drawn from this range, and the means
# are kept inside +-_MEAN_BOUND, so following the means needs |a| <= 0.8 < 1: always feasible.
_MEAN_DRAW = 0.8
_MEAN_BOUND = 0.9


def _check_params(
    horizon: int,
    step_size: float,
    reward_width: float,
    reward_width_spread: float,
    reward_seed: int,
) -> None:
    """Raise ``ValueError`` naming the first invalid generating parameter."""
    if isinstance(horizon, bool) or not isinstance(horizon, numbers.Integral) or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
    # Written as `not (a < x <= b)` so that NaN is rejected too.
    if not 0.0 < float(step_size) <= 2.0:
        raise ValueError(f"step_size must be in (0, 2], got {step_size!r}")
    if not (float(reward_width) > 0.0 and math.isfinite(float(reward_width))):
        raise ValueError(f"reward_width must be a finite number > 0, got {reward_width!r}")
    if not 0.0 <= float(reward_width_spread) < 1.0:
        raise ValueError(f"reward_width_spread must be in [0, 1), got {reward_width_spread!r}")
    if isinstance(reward_seed, bool) or not isinstance(reward_seed, numbers.Integral):
        raise ValueError(f"reward_seed must be an integer, got {reward_seed!r}")
    if reward_seed < 0:
        raise ValueError(f"reward_seed must be >= 0, got {reward_seed!r}")


@dataclass(frozen=True, eq=False)
class Nav1DTask:
    """A fixed Nav1D reward field together with the deterministic dynamics.

    ``reward_means[t]`` and ``reward_widths[t]`` parameterise the reward of step ``t``
    (``t = 0..H-1``), i.e. the paper's ``mu_{t+1}`` and ``sigma_{t+1}`` that score the state
    ``s_{t+1}`` reached by that step. Build instances with :meth:`from_params`; the arrays are
    made read-only so the frozen dataclass really is immutable. Equality is identity (arrays
    make field-wise equality ambiguous); compare ``params`` to compare tasks.

    Attributes:
        horizon: Number of steps ``H`` per episode.
        step_size: ``gamma``, the largest distance moved in one step.
        reward_means: Target means ``mu_1..mu_H``, shape ``(H,)``.
        reward_widths: Target widths ``sigma_1..sigma_H``, shape ``(H,)``.
        params: The JSON-able keyword arguments of :meth:`from_params` that rebuild this task.
    """

    horizon: int
    step_size: float
    reward_means: NDArray[np.float64]
    reward_widths: NDArray[np.float64]
    params: dict[str, Any]

    def __post_init__(self) -> None:
        """Validate shapes and freeze the arrays."""
        means = np.array(self.reward_means, dtype=np.float64)
        widths = np.array(self.reward_widths, dtype=np.float64)
        if means.shape != (self.horizon,) or widths.shape != (self.horizon,):
            raise ValueError(
                f"reward_means and reward_widths must have shape ({self.horizon},), "
                f"got {means.shape} and {widths.shape}"
            )
        if np.any(widths <= 0.0):
            raise ValueError("reward_widths must all be > 0")
        means.setflags(write=False)
        widths.setflags(write=False)
        # object.__setattr__ is the sanctioned way to normalise fields of a frozen dataclass.
        object.__setattr__(self, "reward_means", means)
        object.__setattr__(self, "reward_widths", widths)
        object.__setattr__(self, "params", dict(self.params))

    @classmethod
    def from_params(
        cls,
        horizon: int = 16,
        step_size: float = 0.2,
        reward_width: float = 0.15,
        reward_width_spread: float = 0.0,
        reward_seed: int = 0,
    ) -> Nav1DTask:
        """Draw the reward field from ``reward_seed`` and build the task.

        The draws happen in a fixed order (first mean, mean increments, width factors) and the
        width factors are drawn even when the spread is 0, so the means depend only on
        ``(horizon, step_size, reward_seed)``.

        Args:
            horizon: Episode length ``H >= 1``.
            step_size: ``gamma`` in ``(0, 2]``.
            reward_width: Base width of the reward bumps, ``> 0``.
            reward_width_spread: Relative spread of the widths in ``[0, 1)``; each width is
                ``reward_width * (1 + spread * v)`` with ``v ~ U[-1, 1]``.
            reward_seed: Seed of ``np.random.default_rng`` for the reward field.

        Returns:
            The task.

        Raises:
            ValueError: If a parameter is out of range (the message names it).
        """
        _check_params(horizon, step_size, reward_width, reward_width_spread, reward_seed)
        horizon, step_size = int(horizon), float(step_size)
        rng = np.random.default_rng(int(reward_seed))
        first = rng.uniform(-_MEAN_DRAW, _MEAN_DRAW)
        increments = rng.uniform(-_MEAN_DRAW, _MEAN_DRAW, size=horizon - 1)
        factors = rng.uniform(-1.0, 1.0, size=horizon)
        means = np.empty(horizon)
        means[0] = first
        # Sequential because the clip feeds back into the next mean; H is small.
        for t in range(1, horizon):
            means[t] = np.clip(
                means[t - 1] + step_size * increments[t - 1], -_MEAN_BOUND, _MEAN_BOUND
            )
        widths = float(reward_width) * (1.0 + float(reward_width_spread) * factors)
        params = {
            "horizon": horizon,
            "step_size": step_size,
            "reward_width": float(reward_width),
            "reward_width_spread": float(reward_width_spread),
            "reward_seed": int(reward_seed),
        }
        return cls(horizon, step_size, means, widths, params)

    def next_state(self, s: ArrayLike, a: ArrayLike) -> NDArray[np.float64]:
        """Apply the dynamics ``s' = clip(s + gamma * clip(a, -1, 1), -1, 1)``.

        Shapes:
            s, a: broadcastable, e.g. ``(B,)`` and ``(B,)``; returns their broadcast shape.
        """
        action = np.clip(np.asarray(a, dtype=np.float64), -1.0, 1.0)
        return np.clip(np.asarray(s, dtype=np.float64) + self.step_size * action, -1.0, 1.0)

    def reward(self, t: ArrayLike, s_next: ArrayLike) -> NDArray[np.float64]:
        """Reward of step ``t`` for reaching ``s_next``: ``exp(-(s' - mu)^2 / (2 sigma^2))``.

        Args:
            t: Step index in ``0..H-1`` (int or int array).
            s_next: State reached by step ``t``.

        Returns:
            Rewards in ``(0, 1]``.

        Raises:
            ValueError: If a step index is outside ``0..H-1``.

        Shapes:
            t, s_next: broadcastable; returns their broadcast shape.
        """
        steps = np.asarray(t)
        if not np.issubdtype(steps.dtype, np.integer):
            raise ValueError(f"t must be integer, got dtype {steps.dtype}")
        if np.any(steps < 0) or np.any(steps >= self.horizon):
            raise ValueError(f"t must be in [0, {self.horizon - 1}]")
        z = (np.asarray(s_next, dtype=np.float64) - self.reward_means[steps]) / (
            self.reward_widths[steps]
        )
        return np.exp(-0.5 * z * z)

    def observe(self, s: ArrayLike, t: ArrayLike) -> NDArray[np.float32]:
        """Encode states as observations ``(s, t / H)``.

        Shapes:
            s, t: broadcastable to ``(...)``; returns ``(..., 2)`` float32.
        """
        state, step = np.broadcast_arrays(
            np.asarray(s, dtype=np.float64), np.asarray(t, dtype=np.float64)
        )
        return np.stack([state, step / self.horizon], axis=-1).astype(np.float32)
