"""Residual MLP denoiser for low-dimensional tasks (IDQL's LN-ResNet)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dmc_core.nets.embeddings import TimeCondEmbedding, check_denoiser_inputs

__all__ = ["ResidualMLP"]


class _ResidualBlock(nn.Module):
    """x + Linear(Mish(Linear(LayerNorm(Dropout(x))))), widening by `expansion` inside.

    Shapes:
        x: (B, hidden); returns: (B, hidden).

    References:
        Hansen-Estruch et al., "IDQL" (2023), App. (MLPResNetBlock; dropout before the norm).
    """

    def __init__(self, hidden: int, expansion: int, dropout: float) -> None:
        """Build the block."""
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, expansion * hidden)
        self.fc2 = nn.Linear(expansion * hidden, hidden)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block."""
        return x + self.fc2(nn.functional.mish(self.fc1(self.norm(self.dropout(x)))))


class ResidualMLP(nn.Module):
    """IDQL's residual MLP over the flattened trajectory, time embedding and condition embedding.

    Input flatten(x) ⊕ time embedding ⊕ condition embedding -> Linear(hidden) -> `blocks` residual
    blocks [LayerNorm -> Linear(hidden, expansion hidden) -> Mish -> Linear(hidden)] -> Mish ->
    Linear(horizon * transition_dim) -> (B, horizon, transition_dim). Meant for short horizons
    (a single action, or a few steps) where a convolution or attention over time buys nothing.

    Departures from IDQL: the time embedding is sinusoidal features through a Mish MLP (IDQL
    learns Fourier features), and the condition (IDQL: the raw state) goes through an MLP encoder
    of width `embed_dim` first, like the other backbones here.

    Sizes in the paper: IDQL uses 3 blocks of width 256 with 1024 inside (expansion 4) and
    dropout 0.1 on the locomotion tasks; that is the default here except dropout 0.

    Shapes:
        x: (B, horizon, transition_dim).
        t: (B,) long or float time values.
        cond: (B, cond_dim), or None when cond_dim = 0.
        returns: (B, horizon, transition_dim).

    References:
        Hansen-Estruch et al., "IDQL: Implicit Q-Learning as an Actor-Critic Method with Diffusion
        Policies" (2023), Sec. 5 and App. (LN-ResNet denoiser).
    """

    def __init__(
        self,
        horizon: int,
        transition_dim: int,
        cond_dim: int = 0,
        hidden: int = 256,
        blocks: int = 3,
        expansion: int = 4,
        embed_dim: int = 64,
        dropout: float = 0.0,
    ) -> None:
        """Build the network."""
        super().__init__()
        positive = {"horizon": horizon, "transition_dim": transition_dim, "hidden": hidden}
        positive |= {"expansion": expansion, "embed_dim": embed_dim}
        bad = {k: v for k, v in positive.items() if v < 1} | (
            {"blocks": blocks} if blocks < 0 else {}
        )
        if bad:
            raise ValueError(f"sizes must be >= 1 (blocks >= 0), got {bad}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.horizon, self.transition_dim, self.cond_dim = horizon, transition_dim, cond_dim
        self.embed = TimeCondEmbedding(embed_dim, cond_dim)
        flat = horizon * transition_dim
        self.input = nn.Linear(flat + self.embed.out_dim, hidden)
        self.blocks = nn.Sequential(
            *[_ResidualBlock(hidden, expansion, dropout) for _ in range(blocks)]
        )
        self.output = nn.Linear(hidden, flat)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Predict the denoiser target for the noisy trajectories `x` at times `t`."""
        check_denoiser_inputs(x, t, cond, self.horizon, self.transition_dim, self.cond_dim)
        batch = x.shape[0]
        h = self.input(torch.cat([x.reshape(batch, -1), self.embed(t, cond)], dim=1))
        out = self.output(nn.functional.mish(self.blocks(h)))
        return out.view(batch, self.horizon, self.transition_dim)
