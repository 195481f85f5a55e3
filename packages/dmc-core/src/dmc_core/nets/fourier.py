"""Fourier features of normalised inputs, so that small networks can fit sharp functions of them.

A plain MLP on Nav1D's (s, t/H, a) fits its narrow Gaussian rewards poorly; sin/cos features at a
few octaves lift the critic's greedy score markedly (shared/reference/nav1d-lessons.md). The
diffusion models use them on their observation condition (`ModelSpec.condition_fourier`): the
best action changes sharply from one step t to the next, and a network fed t/H raw blurs it.

References:
    Tancik et al., "Fourier Features Let Networks Learn High Frequency Functions in Low
    Dimensional Domains", NeurIPS 2020.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["FourierFeatures", "fourier_features"]


def fourier_features(x: Tensor, frequencies: int) -> Tensor:
    """Map x to [x, sin(pi 2^k x) for k < F, cos(pi 2^k x) for k < F], octave-major.

    The sines (then the cosines) come in blocks of D, one block per k = 0..F-1; F = 0 returns x.

    Shapes:
        x: (..., D).
        returns: (..., D * (1 + 2F)).
    """
    if frequencies < 0:
        raise ValueError(f"frequencies must be >= 0, got {frequencies}")
    if frequencies == 0:
        return x
    scales = math.pi * 2.0 ** torch.arange(frequencies, dtype=x.dtype, device=x.device)
    angles = (x.unsqueeze(-2) * scales.unsqueeze(-1)).flatten(-2)  # (..., F * D)
    return torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=-1)


class FourierFeatures(nn.Module):
    """`fourier_features` as a layer (no parameters, nothing saved).

    Shapes:
        input: (..., D).
        returns: (..., D * (1 + 2F)).
    """

    def __init__(self, frequencies: int) -> None:
        """Keep the number of octaves F (0 = identity)."""
        super().__init__()
        if frequencies < 0:
            raise ValueError(f"frequencies must be >= 0, got {frequencies}")
        self.frequencies = frequencies

    def out_dim(self, in_dim: int) -> int:
        """The feature width for `in_dim` inputs."""
        return in_dim * (1 + 2 * self.frequencies)

    def forward(self, x: Tensor) -> Tensor:
        """See `fourier_features`."""
        return fourier_features(x, self.frequencies)
