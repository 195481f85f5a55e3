"""What evaluation rolls out: a proposer of candidate actions (a diffusion model, or a baseline).

A proposer turns a batch of observation histories into `n` candidates per history, in one batch
through the network, so evaluation cost grows with decisions x denoising steps and not with
episodes x candidates. A selection rule (`dmc_critic.select_candidates`) then picks one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from dmc_core.models import ControlModel

__all__ = ["ModelProposer", "Proposal", "Proposer"]


@dataclass(frozen=True)
class Proposal:
    """Candidates for a batch of decisions, raw units.

    `plan_states` / `plan_actions` are the planned trajectories of planners (None otherwise);
    evaluation measures their dynamics coherency.

    Shapes:
        actions: (B, n, action_exec, act_dim); plan_states: (B, n, H, obs_dim);
        plan_actions: (B, n, H or H - 1, act_dim).
    """

    actions: Tensor
    plan_states: Tensor | None = None
    plan_actions: Tensor | None = None


class Proposer(Protocol):
    """Anything evaluation can roll out."""

    role: str  # "planner" or "policy"
    history_len: int
    action_exec: int
    device: torch.device  # where its sampling generator must live

    def propose(self, history: Tensor, n: int, generator: torch.Generator) -> Proposal:
        """`n` candidates per history. Shapes: history (B, To, obs_dim)."""
        ...


class ModelProposer:
    """A trained `ControlModel`: `n` samples per history, all in one sampler batch."""

    def __init__(self, model: ControlModel) -> None:
        """Wrap `model` (put in eval mode)."""
        self.model = model.eval()
        self.role = model.role
        self.history_len = model.history_len
        self.action_exec = model.spec.action_exec
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def propose(self, history: Tensor, n: int, generator: torch.Generator) -> Proposal:
        """Sample `n` plans or action chunks per history and decode them."""
        batch = history.shape[0]
        repeated = history.to(self.device).repeat_interleave(n, dim=0)
        z0 = self.model.sample(repeated, generator, record=False).x0
        actions = self.model.decode_actions(z0)
        proposal = Proposal(actions=actions.reshape(batch, n, *actions.shape[1:]).cpu())
        if self.role != "planner":
            return proposal
        states, plan_actions = self.model.decode_plan(z0)  # type: ignore[attr-defined]
        return Proposal(
            actions=proposal.actions,
            plan_states=states.reshape(batch, n, *states.shape[1:]).cpu(),
            plan_actions=plan_actions.reshape(batch, n, *plan_actions.shape[1:]).cpu(),
        )
