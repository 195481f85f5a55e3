"""Diffuser: a planner over state-action trajectories, conditioned by in-painting the start."""

from __future__ import annotations

import torch
from torch import Tensor

from dmc_core.models.base import Conditioning, ControlModel
from dmc_core.models.inpainting import training_mask
from dmc_core.models.windows import Window

__all__ = ["Diffuser"]


class Diffuser(ControlModel):
    """Generate `[(s_0, a_0), ..., (s_{H-1}, a_{H-1})]` with `s_0` in-painted; act `a_0`.

    Each step of `z_0` is the normalised state followed by the normalised action (Janner's code
    puts the action first; the order is immaterial). The current observation is written into
    `s_0` of z_T and after every denoising step. Training uses the in-painting mode of the spec:
    the known entries are fixed in z_t and left out of the loss, and padding past an episode's
    end is left out too. The first action's error is weighted by `action_weight` (Janner: 10).

    References:
        Janner et al., "Planning with Diffusion for Flexible Behavior Synthesis" (2022), Sec. 3.
    """

    kind = "diffuser"
    role = "planner"

    @property
    def transition_dim(self) -> int:
        """State then action channels."""
        return self.obs_dim + self.act_dim

    def encode(self, states: Tensor, actions: Tensor) -> Tensor:
        """Raw trajectories -> normalised `z_0`. Shapes: (B, H, obs), (B, H, act) -> (B, H, D)."""
        return torch.cat(
            [self.obs_normalizer.normalize(states), self.act_normalizer.normalize(actions)], -1
        )

    def training_loss(self, window: Window, generator: torch.Generator) -> Tensor:
        """Masked, weighted diffusion loss over the window's trajectory."""
        x0 = self.encode(window.states, window.actions)
        batch = x0.shape[0]
        mask = training_mask(
            self.spec.inpainting, batch, self.horizon, self.obs_dim, self.transition_dim, generator
        )
        valid = window.steps[..., None].to(x0.dtype)
        weights = valid * self.loss_weights(x0)
        cond, _ = self.condition(window.history)
        return self.formulation.loss(self.net, x0, cond, generator, mask, weights).mean()

    def loss_weights(self, like: Tensor) -> Tensor:
        """1 everywhere except the first action, which weighs `action_weight`."""
        weights = like.new_ones(self.horizon, self.transition_dim)
        weights[0, self.obs_dim :] = self.spec.action_weight
        return weights

    def condition(self, history: Tensor) -> Conditioning:
        """In-paint the newest observation as `s_0` (see `planner_condition`)."""
        return self.planner_condition(history)

    def decode_actions(self, z0: Tensor) -> Tensor:
        """The first `action_exec` planned actions, in raw units."""
        return self.act_normalizer.unnormalize(z0[:, : self.spec.action_exec, self.obs_dim :])

    def decode_plan(self, z0: Tensor) -> tuple[Tensor, Tensor]:
        """The planned states (B, H, obs_dim) and actions (B, H, act_dim), raw units."""
        states = self.obs_normalizer.unnormalize(z0[..., : self.obs_dim])
        return states, self.act_normalizer.unnormalize(z0[..., self.obs_dim :])
