"""Divergence of the aligned model from the reference, per denoising step (spec §4.1).

Both transitions are Gaussians, so their KL is closed form; with the std floors of this project
both usually share one std, where it is ||mu_p - mu_q||^2 / (2 sigma^2).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["gaussian_kl"]


def gaussian_kl(
    mean_p: Tensor,
    std_p: Tensor | float,
    mean_q: Tensor,
    std_q: Tensor | float,
    free: Tensor | None = None,
) -> Tensor:
    """KL(N(mean_p, std_p^2) || N(mean_q, std_q^2)) summed over every non-batch dimension.

    Entries where `free` is False (in-painted, not drawn) are left out.

    Shapes:
        mean_p, mean_q: (B, ...); stds broadcastable; free: bool, broadcastable. returns (B,).
    """
    std_p = torch.as_tensor(std_p, dtype=mean_p.dtype, device=mean_p.device)
    std_q = torch.as_tensor(std_q, dtype=mean_p.dtype, device=mean_p.device)
    elementwise = (
        torch.log(std_q / std_p) + (std_p**2 + (mean_p - mean_q) ** 2) / (2.0 * std_q**2) - 0.5
    )
    elementwise = elementwise.expand_as(mean_p)
    if free is not None:
        elementwise = elementwise * free.to(mean_p.dtype)
    return elementwise.reshape(mean_p.shape[0], -1).sum(dim=1)
