"""A plain in-memory IQL training loop (tests, notebooks); stages add resuming and logging."""

from __future__ import annotations

import torch

from dmc_core.training import adam
from dmc_critic.batches import TransitionBatch, TransitionSampler
from dmc_critic.iql import IQLCritic
from dmc_critic.spec import CriticTrainSpec

__all__ = ["critic_optimizer", "fit_iql", "train_step"]


def critic_optimizer(critic: IQLCritic, train: CriticTrainSpec) -> torch.optim.Optimizer:
    """One Adam over the online Qs and V (IQL's lr 3e-4 for every network by default)."""
    return adam(critic.trainable_parameters(), train.lr)


def train_step(
    critic: IQLCritic, optimizer: torch.optim.Optimizer, batch: TransitionBatch
) -> dict[str, float]:
    """One gradient step on `critic.loss(batch)`, then the Polyak update; returns the metrics."""
    loss, metrics = critic.loss(batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    critic.update_target()
    return metrics


def fit_iql(
    critic: IQLCritic,
    sampler: TransitionSampler,
    train: CriticTrainSpec,
    generator: torch.Generator,
    steps: int | None = None,
) -> list[float]:
    """Train `critic` for `steps` (default `train.steps`) batches of `train.batch_size`.

    Returns:
        the loss of every step.
    """
    total = train.steps if steps is None else steps
    if total < 0:
        raise ValueError(f"steps must be >= 0, got {total}")
    optimizer = critic_optimizer(critic, train)
    critic.train()
    losses: list[float] = []
    for _ in range(total):
        batch = sampler.sample(train.batch_size, generator)
        losses.append(train_step(critic, optimizer, batch)["loss"])
    critic.eval()
    return losses
