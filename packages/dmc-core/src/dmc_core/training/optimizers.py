"""The one place the stages build their Adam optimisers, and the step they take with them."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from dmc_core.training.ema import EMA

__all__ = ["adam", "descend"]


def adam(
    parameters: Iterable[nn.Parameter], lr: float, weight_decay: float | None = None
) -> torch.optim.Optimizer:
    """Adam, or AdamW when `weight_decay` is given, with multi-tensor (`foreach`) steps.

    Multi-tensor steps give the same numbers as one tensor at a time, in a fraction of the time
    for networks of many small tensors on a CPU, where torch does not pick them by itself.
    """
    if weight_decay is None:
        return torch.optim.Adam(parameters, lr=lr, foreach=True)
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, foreach=True)


def descend(
    loss: Tensor,
    optimizer: torch.optim.Optimizer,
    module: nn.Module,
    grad_clip: float,
    ema: EMA | None = None,
) -> None:
    """One step down `loss`: clear the gradients, back-propagate, clip the gradient norm of
    `module` (if `grad_clip` > 0), step the optimiser, then update the EMA of `module`."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
    optimizer.step()
    if ema is not None:
        ema.update(module)
