"""Reference proposers for Nav1D: the optimal policy (score 100) and uniform random actions
(score about 0). They pin the two ends of the normalised score and check the evaluation."""

from __future__ import annotations

import torch
from torch import Tensor

from dmc_envs.evaluation.proposers import Proposal
from dmc_envs.nav1d.solve import Nav1DSolution

__all__ = ["OptimalProposer", "RandomProposer"]


class OptimalProposer:
    """The dynamic-programming policy of a Nav1D task, every candidate the same."""

    role = "policy"
    history_len = 1
    action_exec = 1
    device = torch.device("cpu")

    def __init__(self, solution: Nav1DSolution) -> None:
        """Act greedily on the solution's value table."""
        self.solution = solution

    def propose(self, history: Tensor, n: int, generator: torch.Generator) -> Proposal:
        """Shapes: history (B, To, 2) observations (s, t / H); returns (B, n, 1, 1)."""
        newest = history[:, -1].double()
        t = round(float(newest[0, 1]) * self.solution.task.horizon)
        action = torch.from_numpy(self.solution.optimal_action(newest[:, 0].numpy(), t))
        return Proposal(actions=action.float()[:, None, None, None].expand(-1, n, 1, 1))


class RandomProposer:
    """Uniform random actions on [-1, 1]: the behaviour of Nav1D's random datasets."""

    role = "policy"
    history_len = 1
    action_exec = 1
    device = torch.device("cpu")

    def propose(self, history: Tensor, n: int, generator: torch.Generator) -> Proposal:
        """Shapes: history (B, To, obs_dim); returns (B, n, 1, 1)."""
        draws = torch.rand(history.shape[0], n, 1, 1, generator=generator)
        return Proposal(actions=2.0 * draws - 1.0)
