"""Policy extraction by advantage-weighted regression, and behaviour cloning as its beta = 0.

L(pi) = -mean_i w_i log pi(a_i | s_i) over dataset transitions, with w_i = 1 for behaviour
cloning and w_i = min(exp(beta (Q(s_i, a_i) - V(s_i))), max_weight) for IQL's policy: Q is the
min of the critic's twin target Qs and V its expectile value, both fixed. IQL trains its actor
beside the critic, but the critic's losses never see the actor, so fitting the actor to a
finished critic is the same extraction.

References:
    Kostrikov, Nair, Levine, "Offline Reinforcement Learning with Implicit Q-Learning", ICLR 2022,
    Eq. (7) and the official `actor.py` (weights clipped at 100).
    Peng et al., "Advantage-Weighted Regression", 2019.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor

from dmc_critic.batches import TransitionBatch
from dmc_critic.policies.gaussian import GaussianPolicy
from dmc_critic.policies.spec import PolicySpec

__all__ = ["Advantage", "advantage_weights", "regression_loss"]


class Advantage(Protocol):
    """What the weights need of a critic: Q(s, a) and V(s) (an `IQLCritic`)."""

    def q(self, obs: Tensor, act: Tensor) -> Tensor: ...
    def v(self, obs: Tensor) -> Tensor: ...


@torch.no_grad()
def advantage_weights(
    critic: Advantage, batch: TransitionBatch, beta: float, max_weight: float
) -> Tensor:
    """min(exp(beta (Q(s, a) - V(s))), max_weight) for every transition. Shapes: (B,).

    The exponent is clipped at log(max_weight) before `exp`, which gives the same weights
    without overflowing to inf on large advantages.
    """
    advantage = critic.q(batch.obs, batch.act) - critic.v(batch.obs)
    return torch.exp((beta * advantage).clamp(max=math.log(max_weight)))


def regression_loss(
    policy: GaussianPolicy, batch: TransitionBatch, critic: Advantage, spec: PolicySpec
) -> tuple[Tensor, dict[str, float]]:
    """The weighted negative log-likelihood of the batch's actions, and its metrics (loss,
    mean and max weight, mean log-likelihood)."""
    if spec.kind == "awr":
        weights = advantage_weights(critic, batch, spec.beta, spec.max_weight)
    else:
        weights = torch.ones_like(batch.reward)
    log_prob = policy.log_prob(batch.obs, batch.act)
    loss = -(weights * log_prob).mean()
    metrics = {
        "loss": float(loss.detach()),
        "log_prob": float(log_prob.detach().mean()),
        "weight_mean": float(weights.mean()),
        "weight_max": float(weights.max()),
    }
    return loss, metrics
