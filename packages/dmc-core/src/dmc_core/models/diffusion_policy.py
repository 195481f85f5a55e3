"""Diffusion Policy: an action chunk conditioned on the recent observations."""

from __future__ import annotations

import torch
from torch import Tensor

from dmc_core.models.base import Conditioning, ControlModel
from dmc_core.models.windows import Window

__all__ = ["DiffusionPolicy"]


class DiffusionPolicy(ControlModel):
    """Generate `a_{t:t+Hp}` given `o_{t-To+1:t}`; execute the first `action_exec` actions.

    The observation history (normalised, flattened) is the network's condition input
    (`obs_as_global_cond`); nothing is in-painted. Padding past an episode's end is left out of
    the loss.

    References:
        Chi et al., "Diffusion Policy: Visuomotor Policy Learning via Action Diffusion" (2023),
        Sec. III.
    """

    kind = "diffusion_policy"
    role = "policy"

    @property
    def transition_dim(self) -> int:
        """Action channels only."""
        return self.act_dim

    @property
    def cond_dim(self) -> int:
        """The flattened observation history (with its Fourier features)."""
        return self.condition_width(self.history_len)

    def training_loss(self, window: Window, generator: torch.Generator) -> Tensor:
        """Diffusion loss of the action chunk given the window's history."""
        x0 = self.act_normalizer.normalize(window.actions)
        cond, _ = self.condition(window.history)
        weights = window.steps[..., None].to(x0.dtype)
        return self.formulation.loss(self.net, x0, cond, generator, None, weights).mean()

    def condition(self, history: Tensor) -> Conditioning:
        """The normalised history, flattened, with `condition_fourier` features."""
        return self.observation_condition(history), None

    def decode_actions(self, z0: Tensor) -> Tensor:
        """The first `action_exec` actions of the chunk, raw units."""
        return self.act_normalizer.unnormalize(z0[:, : self.spec.action_exec])
