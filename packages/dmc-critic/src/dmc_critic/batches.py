"""Random minibatches of transitions, with the critic's rewards and done flags precomputed.

A critic of action chunks (`CriticSpec.action_chunk` = k > 1) learns from rows that each start
at a dataset row t and cover the k actions a_t..a_t+k-1 of its episode: the discounted sum of
their rewards, the observation after the last of them, and gamma^k as the row's discount. A
chunk that would run past its episode's end stops there (fewer steps, gamma to that power, the
end's done flag) and repeats the episode's last action to fill the chunk.
"""

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

    `steps` is how many environment steps each row covers (1 for single actions; up to the
    critic's `action_chunk` for chunks), so that its backup discounts by gamma^steps.

    Shapes:
        obs, next_obs: (B, obs_dim); act: (B, action_chunk * act_dim); reward, done (0/1
        float), steps: (B,).
    """

    obs: Tensor
    act: Tensor
    reward: Tensor
    next_obs: Tensor
    done: Tensor
    steps: Tensor

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
        return TransitionBatch(*(getattr(self, f).to(device) for f in _FIELDS))


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
        rows = chunk_rows(
            dataset,
            transform_rewards(dataset, spec, self.reward_factor),
            done_flags(dataset, spec.terminal_on_timeout),
            spec.action_chunk,
            spec.discount,
        )
        self.obs = _tensor(dataset.observations, self.device)
        self.act, self.reward, self.next_obs, self.done, self.steps = (
            _tensor(array, self.device) for array in rows
        )

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
        return TransitionBatch(*(getattr(self, f)[rows] for f in _FIELDS))


_FIELDS = ("obs", "act", "reward", "next_obs", "done", "steps")


def chunk_rows(
    dataset: TransitionDataset, reward: np.ndarray, done: np.ndarray, chunk: int, discount: float
) -> tuple[np.ndarray, ...]:
    """What the row starting at each dataset row t backs up over its `chunk` actions (see the
    module docstring): actions, discounted reward sum, next observation, done flag, steps.

    Shapes:
        reward, done: (N,); returns act (N, chunk * act_dim), reward (N,), next_obs
        (N, obs_dim), done (N,), steps (N,).
    """
    count = len(dataset)
    end = np.empty(count, dtype=np.int64)
    for part in dataset.episode_slices():
        end[part] = part.stop - 1
    start = np.arange(count)
    offsets = start[:, None] + np.arange(chunk)[None, :]
    inside = offsets <= end[:, None]
    index = np.minimum(offsets, end[:, None])
    weights = inside * discount ** np.arange(chunk, dtype=np.float64)[None, :]
    last = index[:, -1]
    actions = np.asarray(dataset.actions)[index].reshape(count, -1)
    summed = (weights * np.asarray(reward, dtype=np.float64)[index]).sum(axis=1)
    steps = last - start + 1
    return actions, summed, dataset.next_observations[last], done[last], steps


def _tensor(array: np.ndarray, device: torch.device) -> Tensor:
    return torch.as_tensor(np.asarray(array, dtype=np.float32), device=device)
