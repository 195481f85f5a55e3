"""Behaviour policies for Nav1D data collection with exactly known action densities.

The densities are exact (not estimated) so that downstream metrics, e.g. a coherency score of
generated actions under the data-collecting policy, can be computed without approximation.

References:
    Devroye, "Non-Uniform Random Variate Generation" (1986), §II.2: the inversion method, used
    to sample the truncated normal of :class:`NoisyOptimalPolicy` from the caller's generator.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from dmc_envs.nav1d.solve import Nav1DSolution, solve
from dmc_envs.nav1d.task import Nav1DTask

__all__ = ["BehaviourPolicy", "NoisyOptimalPolicy", "UniformPolicy", "policy_from_dict"]


@runtime_checkable
class BehaviourPolicy(Protocol):
    """A stochastic state-and-time-conditioned action distribution with a known density."""

    def sample(self, states: ArrayLike, t: int, rng: np.random.Generator) -> NDArray[np.float32]:
        """Draw one action per state.

        Shapes:
            states: ``(B,)``; returns ``(B, 1)`` float32 in ``[-1, 1]``.
        """
        ...

    def density(self, states: ArrayLike, t: int, actions: ArrayLike) -> NDArray[np.float64]:
        """Exact pdf of ``actions`` given ``states`` at step ``t`` (0 outside the support).

        Shapes:
            states: ``(B,)``; actions: ``(B,)`` or ``(B, 1)``; returns ``(B,)``. A trailing
            action axis of size 1 is dropped, then states and actions broadcast (so one state
            with many actions works too).
        """
        ...

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able description: a ``"type"`` tag plus the parameters."""
        ...

    def describe(self) -> str:
        """Return a human-readable sentence describing the policy."""
        ...


def _action_values(states: ArrayLike, actions: ArrayLike) -> tuple[NDArray, NDArray]:
    """Convert states and actions, dropping a trailing action axis of size 1.

    Shapes:
        states: ``(B,)`` (or anything broadcastable with the actions, e.g. a scalar);
        actions: ``(B,)`` or ``(B, 1)``; returns ``states`` as given and actions ``(B,)``.
    """
    s = np.asarray(states, dtype=np.float64)
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim == s.ndim + 1 and a.shape[-1] == 1:
        a = a[..., 0]
    return s, a


class UniformPolicy:
    """Actions uniform on ``[low, high]``, independent of the state.

    Args:
        low: Lower end of the support, ``>= -1``.
        high: Upper end of the support, ``<= 1`` and ``> low``.
    """

    def __init__(self, low: float = -1.0, high: float = 1.0) -> None:
        if not -1.0 <= float(low) < float(high) <= 1.0:
            raise ValueError(f"need -1 <= low < high <= 1, got low={low!r}, high={high!r}")
        self.low, self.high = float(low), float(high)

    def sample(self, states: ArrayLike, t: int, rng: np.random.Generator) -> NDArray[np.float32]:
        """Draw ``U[low, high]`` actions.

        Shapes:
            states: ``(B,)``; returns ``(B, 1)`` float32.
        """
        size = np.shape(states)[0]
        draws = rng.uniform(self.low, self.high, size=(size, 1)).astype(np.float32)
        # float32 rounding may step just past the support's ends (where the density is 0), so
        # clip to the float32 values nearest the ends from the inside.
        low, high = np.float32(self.low), np.float32(self.high)
        if float(low) < self.low:  # compare in float64: NEP 50 would compare in float32
            low = np.nextafter(low, np.float32(np.inf))
        if float(high) > self.high:
            high = np.nextafter(high, np.float32(-np.inf))
        return np.clip(draws, low, high)

    def density(self, states: ArrayLike, t: int, actions: ArrayLike) -> NDArray[np.float64]:
        """Return ``1 / (high - low)`` inside the support, else 0.

        Shapes:
            states: ``(B,)``; actions: ``(B,)`` or ``(B, 1)``; returns ``(B,)``.
        """
        s, a = _action_values(states, actions)
        inside = (a >= self.low) & (a <= self.high)
        return np.broadcast_to(
            np.where(inside, 1.0 / (self.high - self.low), 0.0),
            np.broadcast_shapes(s.shape, a.shape),
        ).copy()

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"type": "uniform", "low": ..., "high": ...}``."""
        return {"type": "uniform", "low": self.low, "high": self.high}

    def describe(self) -> str:
        """Describe the policy in one sentence."""
        return f"uniform random actions on [{self.low:g}, {self.high:g}]"


class NoisyOptimalPolicy:
    """DP-optimal action plus Gaussian noise, truncated to ``[-1, 1]``.

    The action given ``(s, t)`` is a normal with mean ``solution.optimal_action(s, t)`` and
    standard deviation ``noise_std``, conditioned on lying in ``[-1, 1]``.

    Args:
        solution: The DP solution supplying the mean actions.
        noise_std: Standard deviation of the (untruncated) noise, ``> 0``.
    """

    def __init__(self, solution: Nav1DSolution, noise_std: float) -> None:
        if not float(noise_std) > 0.0 or not np.isfinite(noise_std):
            raise ValueError(f"noise_std must be a finite number > 0, got {noise_std!r}")
        self.solution = solution
        self.noise_std = float(noise_std)

    def _bounds(self, states: NDArray, t: int) -> tuple[NDArray, NDArray, NDArray]:
        """Return the mean action and the standardised truncation bounds.

        Shapes:
            states: ``(B,)``; returns three ``(B,)`` arrays.
        """
        mean = self.solution.optimal_action(states, t)
        return mean, (-1.0 - mean) / self.noise_std, (1.0 - mean) / self.noise_std

    def sample(self, states: ArrayLike, t: int, rng: np.random.Generator) -> NDArray[np.float32]:
        """Draw truncated-normal actions by inverting the CDF of uniforms from ``rng``.

        scipy's truncated-normal quantile is used (rather than ``ndtri`` of a CDF difference)
        because it stays accurate when a bound lies deep in a tail, i.e. for small noise.

        Shapes:
            states: ``(B,)``; returns ``(B, 1)`` float32.
        """
        s = np.asarray(states, dtype=np.float64)
        mean, low, high = self._bounds(s, t)
        u = rng.uniform(size=s.shape)
        from scipy.stats import truncnorm  # here: importing scipy.stats costs every stage ~1.6 s

        draws = truncnorm.ppf(u, low, high, loc=mean, scale=self.noise_std)
        return np.clip(draws, -1.0, 1.0).astype(np.float32)[:, None]

    def density(self, states: ArrayLike, t: int, actions: ArrayLike) -> NDArray[np.float64]:
        """Return the truncated-normal pdf, 0 outside ``[-1, 1]``.

        Shapes:
            states: ``(B,)``; actions: ``(B,)`` or ``(B, 1)``; returns ``(B,)``.
        """
        s, a = _action_values(states, actions)
        # The mean depends on the state only: solve for the given states, then broadcast.
        mean, low, high = self._bounds(s, t)
        from scipy.stats import truncnorm

        pdf = truncnorm.pdf(a, low, high, loc=mean, scale=self.noise_std)
        return np.asarray(pdf, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """Return the type tag, noise level, grid resolution and the task's parameters."""
        return {
            "type": "noisy_optimal",
            "noise_std": self.noise_std,
            "grid_per_step": self.solution.grid_per_step,
            "task_params": dict(self.solution.task.params),
        }

    def describe(self) -> str:
        """Describe the policy in one sentence."""
        return (
            f"DP-optimal actions (grid_per_step={self.solution.grid_per_step}) plus Gaussian "
            f"noise with std {self.noise_std:g}, truncated to [-1, 1]"
        )


def policy_from_dict(d: dict[str, Any], task: Nav1DTask) -> BehaviourPolicy:
    """Rebuild a policy from :meth:`BehaviourPolicy.to_dict` output.

    Args:
        d: The dictionary, e.g. loaded back from JSON.
        task: The task the policy acts in (re-solved for the noisy optimal policy).

    Returns:
        The policy.

    Raises:
        ValueError: If the type tag is unknown, or the stored task parameters differ from
            ``task.params`` (the densities would silently refer to another task).
    """
    kind = d.get("type")
    if kind == "uniform":
        return UniformPolicy(low=d["low"], high=d["high"])
    if kind == "noisy_optimal":
        stored = d.get("task_params")
        if stored is not None and dict(stored) != task.params:
            raise ValueError(
                f"policy was built for task {stored!r}, but was given task {task.params!r}"
            )
        solution = solve(task, grid_per_step=int(d["grid_per_step"]))
        return NoisyOptimalPolicy(solution, noise_std=d["noise_std"])
    raise ValueError(f"unknown behaviour policy type {kind!r}")
