"""A scalar energy f(z_t, t, c) and the noise predictor that is its gradient (EDA's BDM).

`EnergyDenoiser` wraps any registered backbone: the backbone's (B, horizon, transition_dim)
output is summed into one scalar per sample, f, and the denoiser returns
eps(z_t, t, c) = -sigma_t * grad_{z_t} f(z_t, t, c). Trained with the ordinary eps-MSE, f learns
the log-density of the noised data up to a constant per condition and time (Chen et al. 2024,
Eq. 9), which is what EDA's alignment loss compares between two networks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["EnergyDenoiser", "NoiseStd"]

NoiseStd = Callable[[Tensor], Tensor]
"""(B,) denoiser time inputs -> (B,) the noise std sigma_t of the forward process there."""


class EnergyDenoiser(nn.Module):
    """eps = -sigma_t * grad f, f the summed output of `backbone` (see the module docstring).

    The gradient is taken with autograd inside `forward`, whatever the caller's grad mode, so
    that samplers running under `torch.no_grad()` get their noise predictions:

    - under grad mode (training, gradient-based alignment) the input gradient is built with
      `create_graph=True`, so a loss on eps back-propagates into the weights (and into z_t when
      z_t is part of a graph: samplers' last differentiable steps);
    - under `no_grad` only the input gradient is computed, and eps comes back detached.

    The sum of an action-shaped output as the scalar is the released EDA network's bottleneck
    (its MLP-ResNet output summed over the action dimensions).

    Shapes:
        z_t: (B, horizon, transition_dim); t: (B,) time input; cond: (B, cond_dim) or None.
        energy returns (B,); forward returns z_t's shape.

    References:
        Chen et al., "Aligning Diffusion Behaviors with Q-functions for Efficient Continuous
        Control" (NeurIPS 2024), Sec. 3.1, Eq. 9 (bottleneck diffusion model).
    """

    def __init__(self, backbone: nn.Module, noise_std: NoiseStd) -> None:
        """Keep the backbone and the map from time input to sigma_t."""
        super().__init__()
        self.backbone = backbone
        self.noise_std = noise_std

    def energy(self, z_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        """f(z_t, t, c): the backbone's output summed over every non-batch dimension."""
        return self.backbone(z_t, t, cond).reshape(z_t.shape[0], -1).sum(dim=1)

    def forward(self, z_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        """The noise prediction -sigma_t * grad_{z_t} f(z_t, t, c) (see the class docstring)."""
        build_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            # A z_t that is already in a graph keeps it (gradients flow on into the chain);
            # otherwise a detached leaf is enough to differentiate f by.
            x = z_t if z_t.requires_grad else z_t.detach().requires_grad_(True)
            f = self.energy(x, t, cond)
            (grad,) = torch.autograd.grad(f.sum(), x, create_graph=build_graph)
        sigma = self.noise_std(t).to(device=z_t.device, dtype=z_t.dtype)
        eps = -sigma.reshape(-1, *([1] * (z_t.ndim - 1))) * grad
        return eps if build_graph else eps.detach()
