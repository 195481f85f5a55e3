"""Training windows cut from whole episodes: the trajectory data every model learns from.

A `WindowSampler` pads the episodes of a `TransitionDataset` into one table and draws random
windows from it with a `torch.Generator`, all in a few vectorised index operations. A window
starts at a transition `k` of an episode (every transition equally likely) and holds:

    history  o_{k-To+1}, ..., o_k          observations up to the start (the first one repeated
                                           where the episode has no earlier step, as Diffusion
                                           Policy pads)
    states   s_k, ..., s_{k+H-1}           the trajectory ahead
    actions  a_k, ..., a_{k+H-1}
    steps    (B, H) bool: transition k+j exists (past the episode's end, entries are padding:
             the last state repeated, zero actions, and left out of every loss)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from dmc_core.data import TransitionDataset

__all__ = ["Window", "WindowSampler", "window_to"]


@dataclass(frozen=True, eq=False)
class Window:
    """A batch of training windows (data units, not normalised).

    Shapes:
        history: (B, To, obs_dim); states: (B, H, obs_dim); actions: (B, H, act_dim).
        steps: (B, H) bool, transition k + j exists.
        state_known: (B, H) bool, state s_{k+j} exists (one more than `steps`: the state after
            the last transition, `next_observations` of the last row, is a real state).
    """

    history: Tensor
    states: Tensor
    actions: Tensor
    steps: Tensor
    state_known: Tensor

    def __len__(self) -> int:
        return int(self.states.shape[0])

    def rows(self, index: Tensor) -> Window:
        """The windows at `index` (a (K,) long or (B,) bool tensor), in that order."""
        return self.map(lambda tensor: tensor[index])

    def map(self, transform: Callable[[Tensor], Tensor]) -> Window:
        """The window with `transform` applied to each of its tensors."""
        return Window(
            **{field.name: transform(getattr(self, field.name)) for field in fields(self)}
        )


class WindowSampler:
    """Draw random `Window`s of `horizon` steps and `history` observations from a dataset."""

    def __init__(self, dataset: TransitionDataset, horizon: int, history: int) -> None:
        """Pad every episode into one table (E, L + horizon, ...) for vectorised gathering.

        Raises:
            ValueError: `horizon` or `history` is below 1, or the dataset has no episode.
        """
        if horizon < 1 or history < 1:
            raise ValueError(f"horizon and history must be >= 1, got {horizon} and {history}")
        slices = dataset.episode_slices()
        if not slices:
            raise ValueError("the dataset holds no complete episode")
        self.horizon = horizon
        self.history = history
        lengths = np.array([s.stop - s.start for s in slices])
        width = int(lengths.max()) + horizon
        obs_dim, act_dim = dataset.observations.shape[1], dataset.actions.shape[1]
        states = np.zeros((len(slices), width + 1, obs_dim), dtype=np.float32)
        actions = np.zeros((len(slices), width, act_dim), dtype=np.float32)
        for row, part in enumerate(slices):
            n = part.stop - part.start
            states[row, :n] = dataset.observations[part]
            # The state after the last transition, then repeated over the padding.
            states[row, n:] = dataset.next_observations[part.stop - 1]
            actions[row, :n] = dataset.actions[part]
        self._states = torch.from_numpy(states)
        self._actions = torch.from_numpy(actions)
        self._lengths = torch.from_numpy(lengths)
        # Every transition is a possible start: its episode and its step within the episode.
        self._episode_of = torch.repeat_interleave(torch.arange(len(slices)), self._lengths)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self._step_of = torch.arange(int(lengths.sum())) - torch.from_numpy(
            np.repeat(starts, lengths)
        )

    @property
    def num_starts(self) -> int:
        """The number of distinct windows (one per transition)."""
        return int(self._episode_of.shape[0])

    def sample(self, batch: int, generator: torch.Generator) -> Window:
        """Draw `batch` windows, starts uniform over all transitions."""
        pick = torch.randint(self.num_starts, (batch,), generator=generator)
        return self.window(pick)

    def window(self, starts: Tensor) -> Window:
        """The windows starting at the given transition indices (0..num_starts - 1)."""
        episode, step = self._episode_of[starts], self._step_of[starts]
        ahead = step[:, None] + torch.arange(self.horizon)
        behind = (step[:, None] + torch.arange(1 - self.history, 1)).clamp(min=0)
        rows = episode[:, None]
        length = self._lengths[episode][:, None]
        return Window(
            history=self._states[rows, behind],
            states=self._states[rows, ahead],
            actions=self._actions[rows, ahead],
            steps=ahead < length,
            state_known=ahead <= length,
        )


def window_to(window: Window, device: torch.device) -> Window:
    """The same window with every tensor on `device`."""
    if window.states.device == device:
        return window
    return window.map(lambda tensor: tensor.to(device))
