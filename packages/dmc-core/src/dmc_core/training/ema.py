"""Exponential moving average of a module's weights (what a trained diffusion model ships)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["EMA"]


class EMA:
    """A shadow copy of a module's state dict, pulled towards it after every optimiser step.

    The effective decay warms up as min(decay, (1 + n) / (10 + n)) over the n updates so far,
    so the shadow is not stuck near the random initialisation early on; buffers that are not
    floating point (counters) are copied.

    References:
        Ho et al. (2020), App. B (EMA 0.9999); Janner et al. (2022) (EMA 0.995).
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        """Start the shadow at the module's current state."""
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow: dict[str, Tensor] = {
            name: value.detach().clone() for name, value in module.state_dict().items()
        }

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Move the shadow one step towards the module's current state."""
        self.updates += 1
        decay = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        floating_shadows, floating_values = [], []
        for name, value in module.state_dict().items():
            shadow = self.shadow[name]
            if shadow.is_floating_point():
                floating_shadows.append(shadow)
                floating_values.append(value.detach())
            else:
                shadow.copy_(value)
        # one multi-tensor lerp: the same numbers as a lerp_ per tensor, without a kernel launch
        # and a Python round trip for each of the model's dozens of small tensors
        torch._foreach_lerp_(floating_shadows, floating_values, 1.0 - decay)

    def copy_to(self, module: nn.Module) -> None:
        """Load the shadow weights into `module` (same architecture)."""
        module.load_state_dict(self.shadow)
