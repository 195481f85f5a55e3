"""What every alignment method gets and offers: the context of a pass and the `Method` protocol.

A method alternates two calls, driven by the pass loop (`dmc_align.schedule`): `collect` samples
and labels a batch for a set of conditions (no gradients), and `loss` returns one update's loss on
what was collected, `updates_per_batch` times before the next `collect`. The loop owns the
optimiser, the clipping, the objective, the rollbacks and the stopping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from dmc_align.lora import trainable_parameters
from dmc_align.rewards import RewardModel, entropy_bonus
from dmc_align.spec import PassSpec
from dmc_core.models import ControlModel, WindowSampler

__all__ = [
    "AlignContext",
    "CollapseError",
    "Method",
    "no_update",
    "standardise_per_condition",
]


class CollapseError(RuntimeError):
    """Training produced something unusable (a non-finite value, a spike): roll back."""

    def __init__(self, kind: str, detail: str) -> None:
        """`kind` names the event in the pass's metrics (non_finite_reward, loss_spike, ...)."""
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass
class AlignContext:
    """What a method works with: the adapted model, the reward, the pass's knobs, the data."""

    model: ControlModel
    reward: RewardModel
    spec: PassSpec
    windows: WindowSampler

    def score(self, z0: Tensor, history: Tensor, groups: int) -> Tensor:
        """r(z_0) plus the entropy bonus, for `groups` conditions of consecutive samples.

        Raises:
            CollapseError: a reward is NaN or infinite.
        """
        reward = self.reward(self.model, z0, history)
        if not bool(torch.isfinite(reward).all()):
            raise CollapseError(
                "non_finite_reward", f"{int((~torch.isfinite(reward)).sum())} samples"
            )
        return reward + entropy_bonus(z0, groups, self.spec.entropy_weight)


class Method(Protocol):
    """One alignment method (see the module docstring)."""

    updates_per_batch: int
    #: False when the loss has no scale to compare against (a zero-mean surrogate): the schedule
    #: then does not look for loss spikes, only for non-finite values and reward drops.
    loss_has_scale: bool

    def collect(self, history: Tensor, generator: torch.Generator) -> dict[str, float]:
        """Sample and label a batch for these conditions; return metrics (mean reward, ...)."""
        ...

    def loss(self, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """One update's scalar loss on the collected batch, and its metrics."""
        ...


def no_update(model: ControlModel) -> Tensor:
    """A zero loss on the trained parameters: a batch left with nothing to learn from."""
    return torch.stack([p.sum() for p in trainable_parameters(model)]).sum() * 0.0


def standardise_per_condition(
    rewards: Tensor, candidates: int, std_floor: float, clip: float
) -> Tensor:
    """Advantages: rewards standardised within each condition's group of samples, clipped.

    A = clip((r - mean_c) / max(std_c, std_floor), -clip, clip). The floor keeps a group of
    near-equal rewards from turning noise into large advantages.

    Shapes:
        rewards: (groups * candidates,), consecutive groups; returns the same.

    References:
        Black et al., "Training Diffusion Models with Reinforcement Learning" (2023), per-prompt
        stat tracking and adv_clip_max 5.
    """
    grouped = rewards.reshape(-1, candidates)
    std = grouped.std(dim=1, unbiased=False, keepdim=True).clamp(min=std_floor)
    advantages = (grouped - grouped.mean(dim=1, keepdim=True)) / std
    return advantages.clamp(-clip, clip).reshape(-1)
