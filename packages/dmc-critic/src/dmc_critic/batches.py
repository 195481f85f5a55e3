"""Random minibatches of transitions, with the critic's rewards and done flags precomputed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from dmc_core.data import TransitionDataset
from dmc_critic.rewards import done_flags, returns_to_go, reward_factor, transform_rewards
from dmc_critic.spec import CriticSpec

__all__ = ["TransitionBatch", "TransitionSampler", "returns_to_go"]


@dataclass(frozen=True)
class TransitionBatch:
    """A minibatch of transitions in raw (unnormalised) units, rewards already transformed.

    Shapes:
        obs, next_obs: (B, obs_dim); act: (B, act_dim); reward, done (0/1 float): (B,).
    """

    obs: Tensor
    act: Tensor
    reward: Tensor
    next_obs: Tensor
    done: Tensor

    def __len__(self) -> int:
        return int(self.reward.shape[0])

    @classmethod
    def concatenate(cls, *batches: TransitionBatch) -> TransitionBatch:
        """The rows of every batch, in order."""
        return cls(
            *(torch.cat([getattr(b, f) for b in batches]) for f in _FIELDS),
        )

    def to(self, device: str | torch.device) -> TransitionBatch:
        """The same batch on `device`."""
        return TransitionBatch(
            obs=self.obs.to(device),
            act=self.act.to(device),
            reward=self.reward.to(device),
            next_obs=self.next_obs.to(device),
            done=self.done.to(device),
        )


class TransitionSampler:
    """Uniform random minibatches (with replacement) of a dataset's transitions.

    The reward transformation of `spec` (normalisation, scale, shift) and the done flags
    (terminals, plus timeouts if `spec.terminal_on_timeout`) are computed once here.
    """

    def __init__(
        self,
        dataset: TransitionDataset,
        spec: CriticSpec,
        device: str | torch.device = "cpu",
        factor: float | None = None,
    ) -> None:
        """Copy the dataset's arrays to `device` as float32 tensors. `factor` replaces the
        dataset's own reward normalisation factor (rows that join another dataset's)."""
        if len(dataset) == 0:
            raise ValueError("cannot sample from an empty dataset")
        self.reward_factor = reward_factor(dataset, spec) if factor is None else factor
        self.device = torch.device(device)
        self.obs = _tensor(dataset.observations, self.device)
        self.act = _tensor(dataset.actions, self.device)
        self.next_obs = _tensor(dataset.next_observations, self.device)
        self.reward = _tensor(transform_rewards(dataset, spec, self.reward_factor), self.device)
        self.done = _tensor(done_flags(dataset, spec.terminal_on_timeout), self.device)

    def __len__(self) -> int:
        return int(self.reward.shape[0])

    def sample(self, batch_size: int, generator: torch.Generator) -> TransitionBatch:
        """Draw `batch_size` rows uniformly with `generator` (on any device)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        rows = torch.randint(
            len(self), (batch_size,), generator=generator, device=generator.device
        ).to(self.device)
        return self.batch(rows)

    def batch(self, rows: Tensor) -> TransitionBatch:
        """The transitions at `rows`. Shapes: rows (B,) long."""
        return TransitionBatch(
            obs=self.obs[rows],
            act=self.act[rows],
            reward=self.reward[rows],
            next_obs=self.next_obs[rows],
            done=self.done[rows],
        )


_FIELDS = ("obs", "act", "reward", "next_obs", "done")


def _tensor(array: np.ndarray, device: torch.device) -> Tensor:
    return torch.as_tensor(np.asarray(array, dtype=np.float32), device=device)
