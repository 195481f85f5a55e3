"""Decision Diffuser: a planner over state sequences with an inverse-dynamics action model."""

from __future__ import annotations

import torch
from torch import Tensor

from dmc_core.models.base import Conditioning, ControlModel
from dmc_core.models.inpainting import training_mask
from dmc_core.models.normalizer import RangeNormalizer
from dmc_core.models.spec import ModelSpec
from dmc_core.models.windows import Window
from dmc_core.nets.feedforward import mlp

__all__ = ["DecisionDiffuser"]


class DecisionDiffuser(ControlModel):
    """Generate `[s_0, ..., s_{H-1}]` with `s_0` in-painted; act `a_0 = f(s_0, s_1)`.

    Without return conditioning (the paper's §4.2 setting: the reward comes from alignment, not
    from classifier-free guidance). The inverse-dynamics MLP `f` (two hidden layers, ReLU, as
    in the Decision Diffuser paper) is trained jointly on the window's real transitions; its
    loss is added to the diffusion loss.

    References:
        Ajay et al., "Is Conditional Generative Modeling all you need for Decision-Making?"
        (2023), Sec. 3 and App. B.
    """

    kind = "decision_diffuser"
    role = "planner"

    def __init__(
        self, spec: ModelSpec, obs_normalizer: RangeNormalizer, act_normalizer: RangeNormalizer
    ) -> None:
        """Build the state-trajectory backbone and the inverse-dynamics MLP."""
        super().__init__(spec, obs_normalizer, act_normalizer)
        self.inverse_dynamics = mlp(
            2 * self.obs_dim,
            self.act_dim,
            hidden=spec.inverse_dynamics_hidden,
            layers=2,
            activation=torch.nn.ReLU,
        )

    @property
    def transition_dim(self) -> int:
        """State channels only."""
        return self.obs_dim

    def infer_actions(self, states: Tensor, next_states: Tensor) -> Tensor:
        """Normalised actions from normalised state pairs. Shapes: (..., obs) x2 -> (..., act)."""
        return self.inverse_dynamics(torch.cat([states, next_states], dim=-1))

    def training_loss(self, window: Window, generator: torch.Generator) -> Tensor:
        """Diffusion loss over the states plus the inverse-dynamics regression loss."""
        x0 = self.obs_normalizer.normalize(window.states)
        batch = x0.shape[0]
        mask = training_mask(
            self.spec.inpainting, batch, self.horizon, self.obs_dim, self.obs_dim, generator
        )
        weights = window.state_known[..., None].to(x0.dtype)
        cond, _ = self.condition(window.history)
        diffusion = self.formulation.loss(self.net, x0, cond, generator, mask, weights).mean()
        predicted = self.infer_actions(x0[:, :-1], x0[:, 1:])
        target = self.act_normalizer.normalize(window.actions[:, :-1])
        real = window.steps[:, :-1, None].to(x0.dtype)
        error = ((predicted - target) ** 2 * real).sum() / (real.sum() * self.act_dim).clamp(1.0)
        return diffusion + error

    def condition(self, history: Tensor) -> Conditioning:
        """In-paint the newest observation as `s_0` (see `planner_condition`)."""
        return self.planner_condition(history)

    def decode_actions(self, z0: Tensor) -> Tensor:
        """`a_j = f(s_j, s_{j+1})` for the first `action_exec` steps, raw units."""
        n = self.spec.action_exec
        return self.act_normalizer.unnormalize(self.infer_actions(z0[:, :n], z0[:, 1 : n + 1]))

    def decode_plan(self, z0: Tensor) -> tuple[Tensor, Tensor]:
        """The planned states (B, H, obs_dim) and inferred actions (B, H - 1, act_dim), raw."""
        actions = self.infer_actions(z0[:, :-1], z0[:, 1:])
        return self.obs_normalizer.unnormalize(z0), self.act_normalizer.unnormalize(actions)
