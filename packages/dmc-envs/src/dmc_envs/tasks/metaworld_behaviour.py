"""MetaWorld's scripted policies with exploration noise: sampling and the exact density.

The behaviour that collects a MetaWorld `expert` or `medium` dataset draws each action as

    a ~ (1 - rho) TN(mu(s), sigma^2 I; [-1, 1]^4) + rho U([-1, 1]^4),
    mu(s) = clip(scripted(s), -1, 1),

where `scripted` is the task's scripted policy shipped with metaworld (`Sawyer...V3Policy`,
a stateless function of the observation), TN is a Gaussian with independent coordinates
conditioned on the action box (drawn by inverting its CDF), sigma is `noise_std` and rho is
`random_fraction`. Its density is therefore known exactly:

    p(a | s) = (1 - rho) prod_j phi((a_j - mu_j) / sigma) / (sigma Z_j) + rho / 2^4,
    Z_j = Phi((1 - mu_j) / sigma) - Phi((-1 - mu_j) / sigma),

which policy coherency (paper Eq. 16) evaluates on the dataset's rows. The scripted policies
aim at the box (the env clips an action to it anyway), so the mean is the clipped aim: the
noise spreads around what the arm would do. The mean is computed from the observation rounded
to float32, as datasets store it, so the density read back from a file is the one sampled.

References:
    Yu et al., "Meta-World: A Benchmark and Evaluation for Multi-Task and Meta Reinforcement
    Learning" (CoRL 2019; arXiv:1910.10897): the tasks and their scripted policies
    (metaworld/policies); "Maximize Your Diffusion", Eq. 16 (policy coherency).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from dmc_core.errors import ConfigError

__all__ = ["SPEC_TYPE", "NoisyScriptedPolicy", "scripted_policy"]

#: `behavior_policy_spec["type"]` of data collected by a noisy scripted policy.
SPEC_TYPE = "metaworld_scripted"

# metaworld's `move` warns whenever a scripted gain asks for more than the box allows; the
# behaviour clips the aim to the box on purpose, so the warning says nothing here.
_GAIN_WARNING = r"Constant\(s\) may be too high"


def scripted_policy(env_name: str) -> Any:
    """metaworld's scripted policy of `env_name` (`button-press-v3`, ...): its
    `get_action(obs)` maps one observation (39,) to an action (4,)."""
    policies = importlib.import_module("metaworld.policies")
    return policies.ENV_POLICY_MAP[env_name]()


class NoisyScriptedPolicy:
    """The scripted policy of `env_name` with truncated Gaussian noise, mixed with uniform
    actions (see the module docstring for the law and its density)."""

    def __init__(
        self,
        env_name: str,
        noise_std: float,
        random_fraction: float,
        low: Sequence[float],
        high: Sequence[float],
    ) -> None:
        """Keep the law's parameters and build the scripted policy.

        Raises:
            ConfigError: a noise that has no density, or a fraction that is no probability.
        """
        if not (np.isfinite(noise_std) and noise_std > 0.0):
            raise ConfigError(f"noise_std must be a finite number > 0, got {noise_std!r}")
        if not 0.0 <= random_fraction <= 1.0:
            raise ConfigError(f"random_fraction must lie in [0, 1], got {random_fraction!r}")
        self.env_name = env_name
        self.noise_std = float(noise_std)
        self.random_fraction = float(random_fraction)
        self.low = np.asarray(low, dtype=np.float64)
        self.high = np.asarray(high, dtype=np.float64)
        self.scripted = scripted_policy(env_name)

    @property
    def volume(self) -> float:
        """The action box's volume (16 for [-1, 1]^4)."""
        return float(np.prod(np.subtract(self.high, self.low)))

    def means(self, observations: np.ndarray) -> np.ndarray:
        """The scripted actions clipped to the box, from float32-rounded observations (each
        distinct observation asked once: policy coherency repeats them per candidate).

        Shapes: observations (N, 39) -> (N, 4)."""
        obs = np.asarray(observations, dtype=np.float32).astype(np.float64)
        if not len(obs):
            return np.zeros((0, self.low.size))
        distinct, rows = np.unique(obs, axis=0, return_inverse=True)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_GAIN_WARNING)
            aims = np.stack([self.scripted.get_action(row) for row in distinct])
        return np.clip(aims[rows.reshape(-1)], self.low, self.high)

    def sample(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One action per observation. Shapes: observations (N, 39) -> (N, 4) float64."""
        mean = self.means(observations)
        lower, upper = self._standardised_bounds(mean)
        # Inverse CDF: uniforms between the bounds' CDF values, mapped back by the quantile.
        # The bounds straddle 0 (the mean lies in the box), so neither CDF value is a tail.
        u = rng.uniform(ndtr(lower), ndtr(upper))
        noisy = np.clip(mean + self.noise_std * ndtri(u), self.low, self.high)
        uniform = rng.uniform(self.low, self.high, size=mean.shape)
        replaced = rng.uniform(size=(mean.shape[0], 1)) < self.random_fraction
        return np.where(replaced, uniform, noisy)

    def density(self, observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """p(a | s), 0 outside the box. Shapes: observations (N, 39), actions (N, 4) -> (N,)."""
        mean = self.means(observations)
        a = np.asarray(actions, dtype=np.float64)
        lower, upper = self._standardised_bounds(mean)
        z = (a - mean) / self.noise_std
        per_coordinate = np.exp(-0.5 * z**2) / (
            np.sqrt(2.0 * np.pi) * self.noise_std * (ndtr(upper) - ndtr(lower))
        )
        noisy = np.prod(per_coordinate, axis=-1)
        mixed = (1.0 - self.random_fraction) * noisy + self.random_fraction / self.volume
        inside = np.all((a >= self.low) & (a <= self.high), axis=-1)
        return np.where(inside, mixed, 0.0)

    def to_dict(self) -> dict[str, Any]:
        """The `behavior_policy_spec` a dataset records."""
        return {
            "type": SPEC_TYPE,
            "env_name": self.env_name,
            "policy": type(self.scripted).__name__,
            "noise_std": self.noise_std,
            "random_fraction": self.random_fraction,
            "low": self.low.tolist(),
            "high": self.high.tolist(),
            "metaworld_version": importlib.metadata.version("metaworld"),
        }

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> NoisyScriptedPolicy:
        """The policy a `to_dict` spec describes (read back from a dataset)."""
        return cls(
            env_name=str(spec["env_name"]),
            noise_std=float(spec["noise_std"]),
            random_fraction=float(spec["random_fraction"]),
            low=spec["low"],
            high=spec["high"],
        )

    def describe(self) -> str:
        """One sentence, as `behavior_policy` records it."""
        name = type(self.scripted).__name__
        return (
            f"metaworld's scripted {name} (its action clipped to the box) plus Gaussian noise "
            f"with std {self.noise_std:g} truncated to the box, replaced by a uniform random "
            f"action with probability {self.random_fraction:g}"
        )

    def _standardised_bounds(self, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The box's corners in units of the noise around `mean`. Shapes: (N, 4) -> 2 x (N, 4)."""
        return (self.low - mean) / self.noise_std, (self.high - mean) / self.noise_std
