"""The one place the stages build their Adam optimisers."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["adam"]


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
