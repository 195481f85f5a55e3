"""The baselines' policy: a Gaussian whose mean is squashed by tanh, as in IQL's official code.

The policy works in normalised units: observations and actions pass through range normalisers
fitted on the dataset (saved in its weights, like the critic's), the mean is `tanh` of an MLP's
output, so it stays inside the data's action range, and the log-std is one parameter per action
dimension, independent of the state, clipped to [-5, 2]. Its log-density is that of a plain
Gaussian around the squashed mean (not a tanh-squashed distribution, which IQL does not use).

References:
    Kostrikov, Nair, Levine, "Offline Reinforcement Learning with Implicit Q-Learning", ICLR 2022
    (official code: `NormalTanhPolicy(state_dependent_std=False, tanh_squash_distribution=False,
    log_std_min=-5)`; evaluation acts with the mean).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from dmc_core.data import TransitionDataset
from dmc_core.models.normalizer import RangeNormalizer
from dmc_critic.described import Described
from dmc_critic.networks import mlp
from dmc_critic.policies.spec import PolicySpec

__all__ = ["LOG_STD_RANGE", "GaussianPolicy", "build_policy"]

#: The log-std is clipped to this range (IQL's official actor).
LOG_STD_RANGE = (-5.0, 2.0)


class GaussianPolicy(Described):
    """pi(a | s) = N(tanh(f(s)), exp(log_std)^2) in normalised action units.

    Shapes:
        obs: (B, obs_dim); act: (B, act_dim); log_prob: (B,); mean_action: (B, act_dim).
    """

    def __init__(
        self, spec: PolicySpec, obs_normalizer: RangeNormalizer, act_normalizer: RangeNormalizer
    ) -> None:
        """Build the untrained mean network; the log-std starts at 0 (std 1), as IQL's."""
        super().__init__()
        self.spec = spec
        self.obs_normalizer = obs_normalizer
        self.act_normalizer = act_normalizer
        self.mean_net = mlp(
            obs_normalizer.dim,
            spec.hidden,
            spec.layers,
            spec.fourier_frequencies,
            layer_norm=False,
            out_dim=act_normalizer.dim,
        )
        self.log_std = nn.Parameter(torch.zeros(act_normalizer.dim))

    @property
    def kind(self) -> str:  # type: ignore[override]
        """How it was trained: `bc` or `awr`."""
        return self.spec.kind

    def _mean(self, obs: Tensor) -> Tensor:
        """The squashed mean in normalised action units. Shapes: (B, obs_dim) -> (B, act_dim)."""
        if obs.ndim < 1 or obs.shape[-1] != self.obs_dim:
            raise ValueError(f"obs must have shape (..., {self.obs_dim}), got {tuple(obs.shape)}")
        return torch.tanh(self.mean_net(self.obs_normalizer.normalize(obs)))

    def log_prob(self, obs: Tensor, act: Tensor) -> Tensor:
        """log pi(a | s), summed over action dimensions (normalised units)."""
        log_std = self.log_std.clamp(*LOG_STD_RANGE)
        normal = torch.distributions.Normal(self._mean(obs), log_std.exp())
        return normal.log_prob(self.act_normalizer.normalize(act)).sum(dim=-1)

    def mean_action(self, obs: Tensor) -> Tensor:
        """The deterministic action, the mean, in raw units (what evaluation executes)."""
        return self.act_normalizer.unnormalize(self._mean(obs))


def build_policy(spec: PolicySpec, dataset: TransitionDataset) -> GaussianPolicy:
    """An untrained policy whose normalisers are fitted to the dataset's ranges (the critic's
    way). Weights are initialised from torch's global RNG (seed it first)."""
    obs = RangeNormalizer.fit(np.asarray(dataset.observations))
    act = RangeNormalizer.fit(np.asarray(dataset.actions))
    return GaussianPolicy(spec, obs, act)
