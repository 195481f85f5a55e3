"""The two IQL losses' building blocks: the expectile loss and the TD target.

References:
    Kostrikov, Nair, Levine, "Offline Reinforcement Learning with Implicit Q-Learning", ICLR 2022,
    Eq. (5)-(6).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["expectile_loss", "td_target"]


def expectile_loss(residual: Tensor, expectile: float) -> Tensor:
    """Asymmetric squared loss L2^tau(u) = |tau - 1(u < 0)| u^2, element by element.

    With u = Q(s, a) - V(s), V is pushed towards the tau-expectile of Q: tau > 0.5 weights the
    actions that beat V more, so V approaches the value of the best in-support actions.

    Shapes:
        residual: any shape; returns: the same shape.
    """
    if not 0.0 < expectile < 1.0:
        raise ValueError(f"expectile must be in (0, 1), got {expectile}")
    weight = torch.where(residual < 0, 1.0 - expectile, expectile)
    return weight * residual.square()


def td_target(reward: Tensor, done: Tensor, next_value: Tensor, discount: float | Tensor) -> Tensor:
    """The backup y = r + discount * (1 - done) * V(s').

    For a row that covers k environment steps (an action chunk), r is the discounted sum of its
    k rewards and `discount` is gamma^k, one per row.

    Shapes:
        reward, done (0/1 float), next_value: (B,); discount: a float or (B,); returns: (B,).
    """
    return reward + discount * (1.0 - done) * next_value
