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

__all__ = ["DecodingModel", "ModelProposer", "Proposal", "Proposer", "decode_proposal"]


@dataclass(frozen=True)
class Proposal:
    """Candidates for a batch of decisions, raw units.

    `plan_states` / `plan_actions` are the planned trajectories of planners (None otherwise);
    evaluation measures their dynamics coherency. `z0` is the model's sample itself (normalised),
    which a cascade refines (None for proposers that are no diffusion model).

    Shapes:
        actions: (B, n, action_exec, act_dim); plan_states: (B, n, H, obs_dim);
        plan_actions: (B, n, H or H - 1, act_dim); z0: (B, n, H, transition_dim).
    """

    actions: Tensor
    plan_states: Tensor | None = None
    plan_actions: Tensor | None = None
    z0: Tensor | None = None

    @property
    def scored_actions(self) -> Tensor:
        """What a critic of action chunks scores (`dmc_core.models.scored_actions`): the
        planned actions of planners, the executed chunk otherwise. Shapes: (B, n, L, act_dim)."""
        return self.actions if self.plan_actions is None else self.plan_actions


class Proposer(Protocol):
    """Anything evaluation can roll out."""

    role: str  # "planner" or "policy"
    history_len: int
    action_exec: int
    device: torch.device  # where its sampling generator must live

    def propose(self, history: Tensor, n: int, generator: torch.Generator) -> Proposal:
        """`n` candidates per history. Shapes: history (B, To, obs_dim)."""
        ...


class DecodingModel(Protocol):
    """What turns samples into a proposal: a `ControlModel` or a cascade."""

    role: str

    def decode_actions(self, z0: Tensor) -> Tensor:
        """The actions to execute, raw units. Shapes: (B, H, D) -> (B, action_exec, act_dim)."""
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
        return decode_proposal(self.model, z0, batch, n)


def decode_proposal(model: DecodingModel, z0: Tensor, batch: int, n: int) -> Proposal:
    """The proposal of `batch * n` samples `z0` (grouped by history): actions, plans, z0.

    Shapes:
        z0: (batch * n, H, transition_dim) normalised.
    """
    actions = model.decode_actions(z0)
    grouped = z0.reshape(batch, n, *z0.shape[1:]).cpu()
    actions = actions.reshape(batch, n, *actions.shape[1:]).cpu()
    if model.role != "planner":
        return Proposal(actions=actions, z0=grouped)
    states, plan_actions = model.decode_plan(z0)  # type: ignore[attr-defined]
    return Proposal(
        actions=actions,
        plan_states=states.reshape(batch, n, *states.shape[1:]).cpu(),
        plan_actions=plan_actions.reshape(batch, n, *plan_actions.shape[1:]).cpu(),
        z0=grouped,
    )
