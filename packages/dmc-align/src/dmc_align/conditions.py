"""The conditions c an alignment pass samples for: observation histories from the data.

Every transition of the dataset gives one history (the model's `To` observations up to it, padded
at an episode's start as training pads them). A fixed random subset is held out: the tracked
objective of the schedule is measured on it and training never samples it. Online fine-tuning
adds the histories its rollouts visit to the training pool.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dmc_core.data import TransitionDataset
from dmc_core.models import WindowSampler

__all__ = ["ConditionPool"]


class ConditionPool:
    """Training and held-out observation histories of one dataset.

    Shapes:
        histories: (N, To, obs_dim) raw observations.
    """

    def __init__(self, histories: Tensor, held_out: int, generator: torch.Generator) -> None:
        """Split `histories` into `held_out` held-out ones (drawn with `generator`) and the rest.

        Raises:
            ValueError: fewer than `held_out` + 1 histories.
        """
        if histories.shape[0] <= held_out:
            raise ValueError(
                f"{histories.shape[0]} conditions cannot hold out {held_out} and train on the rest"
            )
        order = torch.randperm(histories.shape[0], generator=generator)
        self.held_out = histories[order[:held_out]]
        self._train = histories[order[held_out:]]
        self._drawn = len(self)  # from the data; the rest were added by `extend`

    @classmethod
    def from_dataset(
        cls, dataset: TransitionDataset, history: int, held_out: int, generator: torch.Generator
    ) -> ConditionPool:
        """One history per transition of `dataset` (To = `history`)."""
        windows = WindowSampler(dataset, horizon=1, history=history)
        return cls(windows.window(torch.arange(windows.num_starts)).history, held_out, generator)

    def __len__(self) -> int:
        """Training conditions."""
        return int(self._train.shape[0])

    def sample(self, batch: int, generator: torch.Generator) -> Tensor:
        """`batch` training histories drawn uniformly with replacement."""
        pick = torch.randint(len(self), (batch,), generator=generator)
        return self._train[pick]

    def extend(self, histories: Tensor) -> None:
        """Add visited histories (online fine-tuning) to the training pool."""
        self._train = torch.cat([self._train, histories.to(self._train.dtype)])

    def added(self) -> Tensor:
        """The histories `extend` added, in order (what a pass snapshot keeps of the pool)."""
        return self._train[self._drawn :]
