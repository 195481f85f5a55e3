"""Evaluation of a cascade (spec §4.4): the refined model's candidates, refined once or twice.

A `CascadeProposer` asks a base proposer (the model the cascade refines) for its `n` candidates
per history and passes every candidate through the cascade `passes` times, each pass refining
the previous pass's sample under the same observation history. The selection rules and the
coherency measures then see the refined candidates (a planner's refined plans, a policy's
refined actions).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dmc_core.models.cascade import CascadeModel
from dmc_envs.evaluation.proposers import Proposal, Proposer, decode_proposal

__all__ = ["MAX_CASCADE_PASSES", "CascadeProposer"]

#: The paper found high variance after two passes (§3.5); more are allowed for study.
MAX_CASCADE_PASSES = 4


class CascadeProposer:
    """Candidates of `base`, each refined `passes` times by `cascade`."""

    def __init__(self, base: Proposer, cascade: CascadeModel, passes: int = 1) -> None:
        """Wrap the base proposer (its samples must carry `z0`) and the cascade (eval mode)."""
        if not 1 <= passes <= MAX_CASCADE_PASSES:
            raise ValueError(f"cascade passes must lie in 1..{MAX_CASCADE_PASSES}, got {passes}")
        if base.role != cascade.role or base.history_len != cascade.history_len:
            raise ValueError(
                f"a {cascade.role} cascade (history {cascade.history_len}) cannot refine a "
                f"{base.role} proposer (history {base.history_len})"
            )
        self.base, self.cascade, self.passes = base, cascade.eval(), passes
        self.role = cascade.role
        self.history_len = cascade.history_len
        self.action_exec = cascade.spec.action_exec
        self.device = base.device

    @torch.no_grad()
    def propose(self, history: Tensor, n: int, generator: torch.Generator) -> Proposal:
        """`n` refined candidates per history. Shapes: history (B, To, obs_dim)."""
        proposal = self.base.propose(history, n, generator)
        if proposal.z0 is None:
            raise ValueError("the base proposer gives no samples z0 to refine")
        batch = history.shape[0]
        device = next(self.cascade.parameters()).device
        repeated = history.to(device).repeat_interleave(n, dim=0)
        z = proposal.z0.to(device).reshape(batch * n, *proposal.z0.shape[2:])
        z = self.cascade.refine(repeated, z, generator, self.passes)
        return decode_proposal(self.cascade, z, batch, n)
