"""Evaluation of a baseline policy (`fit_policy`: BC, IQL's AWR): its deterministic mean action.

IQL evaluates its Gaussian policy by its mean; every candidate a `PolicyProposer` gives is that
action, so a baseline's rows are one sample (rule `none`, one candidate per decision).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dmc_critic.policies import GaussianPolicy
from dmc_envs.evaluation.proposers import Proposal

__all__ = ["POLICY_FORMULATION", "PolicyProposer"]

#: The `formulation` of a baseline's rows: a Gaussian policy, no diffusion.
POLICY_FORMULATION = "gaussian"


class PolicyProposer:
    """A trained `GaussianPolicy`: the mean action of each history's newest observation."""

    role = "policy"
    history_len = 1
    action_exec = 1

    def __init__(self, policy: GaussianPolicy) -> None:
        """Wrap `policy` (put in eval mode)."""
        self.policy = policy.eval()
        self.device = next(policy.parameters()).device

    @torch.no_grad()
    def propose(self, history: Tensor, n: int, generator: torch.Generator) -> Proposal:
        """`n` copies of the mean action per history. Shapes: history (B, To, obs_dim);
        returns actions (B, n, 1, act_dim)."""
        mean = self.policy.mean_action(history[:, -1].to(self.device)).cpu()
        return Proposal(actions=mean[:, None, None, :].expand(-1, n, 1, -1))
