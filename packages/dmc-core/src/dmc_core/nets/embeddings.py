"""Time and condition embeddings shared by the denoiser backbones, and their input checks."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = [
    "ConditionEncoder",
    "TimeCondEmbedding",
    "TimeEmbedding",
    "check_denoiser_inputs",
    "sinusoidal_embedding",
]

_MAX_PERIOD = 10000.0


def sinusoidal_embedding(t: Tensor, dim: int) -> Tensor:
    """Transformer sinusoidal features of scalar time values: [sin(t w_i), cos(t w_i)].

    The frequencies are w_i = 10000^(-i / (dim // 2)), i = 0..dim // 2 - 1 (Vaswani's
    1 / 10000^(2i / dim)); an odd `dim` gets a trailing zero column. Janner's Diffuser divides by
    dim // 2 - 1 instead, which only shifts the lowest frequency slightly.

    Shapes:
        t: (B,) long or float; cast to float32.
        returns: (B, dim) float32.

    References:
        Vaswani et al., "Attention Is All You Need" (2017), Sec. 3.5; Ho et al., "Denoising
        Diffusion Probabilistic Models" (2020), App. B (timestep embedding).
    """
    if t.ndim != 1:
        raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=t.device) * (
        -math.log(_MAX_PERIOD) / max(half, 1)
    )
    args = t.to(torch.float32)[:, None] * torch.exp(exponent)[None, :]
    parts = [torch.sin(args), torch.cos(args)]
    if dim % 2:
        parts.append(torch.zeros_like(args[:, :1]))
    return torch.cat(parts, dim=1)


class TimeEmbedding(nn.Module):
    """Sinusoidal features of t through a two-layer Mish MLP: dim -> 4 dim -> dim.

    Shapes:
        t: (B,) long or float.
        returns: (B, dim).

    References:
        Janner et al., "Planning with Diffusion for Flexible Behavior Synthesis" (2022), App. C
        (the Diffuser temporal U-Net's time MLP).
    """

    def __init__(self, dim: int) -> None:
        """Build the MLP over `dim` sinusoidal features."""
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.Mish(), nn.Linear(4 * dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        """Embed the time values `t`."""
        return self.mlp(sinusoidal_embedding(t, self.dim))


class ConditionEncoder(nn.Module):
    """Two-layer Mish MLP over a flat condition vector (e.g. a flattened observation history).

    Shapes:
        cond: (B, cond_dim).
        returns: (B, out_dim).
    """

    def __init__(self, cond_dim: int, out_dim: int, hidden: int) -> None:
        """Build Linear(cond_dim, hidden) -> Mish -> Linear(hidden, out_dim)."""
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(cond_dim, hidden), nn.Mish(), nn.Linear(hidden, out_dim))

    def forward(self, cond: Tensor) -> Tensor:
        """Encode the condition vector."""
        return self.mlp(cond)


class TimeCondEmbedding(nn.Module):
    """Time embedding, concatenated with the condition embedding when cond_dim > 0.

    Both embeddings have width `dim`; the condition encoder's hidden width is 4 dim, mirroring the
    time MLP. The output width is `out_dim` (dim, or 2 dim when conditional).

    Shapes:
        t: (B,) long or float.
        cond: (B, cond_dim), or None when cond_dim = 0.
        returns: (B, out_dim).
    """

    def __init__(self, dim: int, cond_dim: int = 0) -> None:
        """Build the time MLP and, for cond_dim > 0, the condition encoder."""
        super().__init__()
        if cond_dim < 0:
            raise ValueError(f"cond_dim must be >= 0, got {cond_dim}")
        self.cond_dim = cond_dim
        self.time = TimeEmbedding(dim)
        self.cond = ConditionEncoder(cond_dim, dim, 4 * dim) if cond_dim > 0 else None
        self.out_dim = 2 * dim if cond_dim > 0 else dim

    def forward(self, t: Tensor, cond: Tensor | None) -> Tensor:
        """Embed `t` and, if conditional, `cond` (already checked by the caller)."""
        emb = self.time(t)
        if self.cond is None:
            return emb
        return torch.cat([emb, self.cond(cond)], dim=1)


def check_denoiser_inputs(
    x: Tensor, t: Tensor, cond: Tensor | None, horizon: int, transition_dim: int, cond_dim: int
) -> None:
    """Raise a ValueError naming the shapes when (x, t, cond) do not fit a backbone.

    Shapes:
        x: (B, horizon, transition_dim).
        t: (B,).
        cond: (B, cond_dim) when cond_dim > 0, else None.
    """
    if x.ndim != 3 or x.shape[1] != horizon or x.shape[2] != transition_dim:
        raise ValueError(
            f"x must have shape (B, {horizon}, {transition_dim}), got {tuple(x.shape)}"
        )
    batch = x.shape[0]
    if t.shape != (batch,):
        raise ValueError(f"t must have shape ({batch},) to match x, got {tuple(t.shape)}")
    if cond_dim == 0:
        if cond is not None:
            raise ValueError(
                f"this backbone is unconditional (cond_dim=0) but got a cond of shape "
                f"{tuple(cond.shape)}; pass cond=None"
            )
        return
    if cond is None:
        raise ValueError(f"this backbone needs a cond of shape ({batch}, {cond_dim}), got None")
    if cond.shape != (batch, cond_dim):
        raise ValueError(
            f"cond must have shape ({batch}, {cond_dim}) to match x {tuple(x.shape)}, "
            f"got {tuple(cond.shape)}"
        )
