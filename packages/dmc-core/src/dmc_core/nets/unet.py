"""Temporal 1-D U-Net denoiser over (horizon, transition) trajectories (Janner's Diffuser)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dmc_core.nets.embeddings import TimeCondEmbedding, check_denoiser_inputs

__all__ = ["TemporalUNet"]


class _ConvBlock(nn.Module):
    """Conv1d (same padding) -> GroupNorm -> Mish.

    Shapes:
        x: (B, in_channels, L).
        returns: (B, out_channels, L).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int
    ) -> None:
        """Build the three layers."""
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.norm = nn.GroupNorm(n_groups, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block."""
        return nn.functional.mish(self.norm(self.conv(x)))


class _ResidualTemporalBlock(nn.Module):
    """Two conv blocks with a FiLM of the embedding between them, plus a residual path.

    Shapes:
        x: (B, in_channels, L).
        emb: (B, emb_dim), already passed through Mish by the caller.
        returns: (B, out_channels, L).

    References:
        Janner et al. (2022), App. C (residual temporal block); Chi et al., "Diffusion Policy"
        (2023), `ConditionalResidualBlock1D` with `cond_predict_scale=True` (FiLM).
    """

    def __init__(
        self, in_channels: int, out_channels: int, emb_dim: int, kernel_size: int, n_groups: int
    ) -> None:
        """Build the conv blocks, the FiLM projection and the 1x1 residual conv if needed."""
        super().__init__()
        self.block1 = _ConvBlock(in_channels, out_channels, kernel_size, n_groups)
        self.block2 = _ConvBlock(out_channels, out_channels, kernel_size, n_groups)
        self.film = nn.Linear(emb_dim, 2 * out_channels)
        self.residual: nn.Module = (
            nn.Conv1d(in_channels, out_channels, 1)
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """Apply the block to `x` under the embedding `emb`."""
        h = self.block1(x)
        scale, bias = self.film(emb).unsqueeze(-1).chunk(2, dim=1)
        # Chi multiplies by `scale` itself; (1 + scale) is the same family of maps but starts near
        # the identity, so an untrained block passes its features through instead of damping them.
        h = torch.addcmul(bias, h, scale + 1.0)
        return self.block2(h) + self.residual(x)


class TemporalUNet(nn.Module):
    """Diffuser's temporal U-Net with FiLM conditioning on (time embedding ⊕ condition embedding).

    Level i has width dim * dim_mults[i] (not cumulative): two residual temporal blocks, then a
    stride-2 Conv1d downsample except at the last level; two blocks in the middle; the up path
    concatenates the skip of the matching level, applies two blocks and a ConvTranspose1d
    upsample; a final conv block and a 1x1 conv map back to transition_dim channels. As in
    Janner's code the first level's skip is never used (the up path has levels - 1 stages).

    Sizes in the papers: Janner's hopper/walker planner uses dim 32, dim_mults (1, 2, 4, 8),
    horizon 32 (~4M parameters); Chi's low-dim Diffusion Policy U-Net uses down_dims
    (256, 512, 1024), i.e. dim 256, dim_mults (1, 2, 4) (~69M parameters here). The default
    here is dim 32, dim_mults (1, 2, 4) (~1M parameters).

    Shapes:
        x: (B, horizon, transition_dim).
        t: (B,) long or float time values.
        cond: (B, cond_dim), or None when cond_dim = 0.
        returns: (B, horizon, transition_dim).

    References:
        Janner et al., "Planning with Diffusion for Flexible Behavior Synthesis" (2022), App. C;
        Chi et al., "Diffusion Policy: Visuomotor Policy Learning via Action Diffusion" (2023),
        Sec. 3.3 (FiLM conditioning of the 1-D U-Net).
    """

    def __init__(
        self,
        horizon: int,
        transition_dim: int,
        cond_dim: int = 0,
        dim: int = 32,
        dim_mults: Sequence[int] = (1, 2, 4),
        kernel_size: int = 5,
        n_groups: int = 8,
    ) -> None:
        """Build the network; the horizon must be divisible by 2^(levels - 1)."""
        super().__init__()
        mults = tuple(int(m) for m in dim_mults)
        if not mults or min(mults) < 1 or dim < 1:
            raise ValueError(f"dim and dim_mults must be positive, got {dim} and {mults}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same padding), got {kernel_size}")
        widths = [dim * m for m in mults]
        bad = [w for w in widths if w % n_groups]
        if bad:
            raise ValueError(f"channel widths {bad} are not divisible by n_groups={n_groups}")
        levels = len(widths)
        divisor = 2 ** (levels - 1)
        if horizon < 1 or horizon % divisor:
            raise ValueError(
                f"horizon {horizon} must be divisible by {divisor} (2^(levels - 1) for "
                f"{levels} levels of dim_mults {mults})"
            )
        self.horizon, self.transition_dim, self.cond_dim = horizon, transition_dim, cond_dim

        self.embed = TimeCondEmbedding(dim, cond_dim)
        emb = self.embed.out_dim

        def block(c_in: int, c_out: int) -> _ResidualTemporalBlock:
            return _ResidualTemporalBlock(c_in, c_out, emb, kernel_size, n_groups)

        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        c_in = transition_dim
        for i, width in enumerate(widths):
            self.down_blocks.append(nn.ModuleList([block(c_in, width), block(width, width)]))
            if i < levels - 1:
                self.downsamples.append(nn.Conv1d(width, width, 3, stride=2, padding=1))
            c_in = width
        self.mid_blocks = nn.ModuleList([block(widths[-1], widths[-1]) for _ in range(2)])
        self.up_blocks = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for i in range(levels - 1, 0, -1):
            # Input: the running features (widths[i]) concatenated with level i's skip.
            out = widths[i - 1]
            self.up_blocks.append(nn.ModuleList([block(2 * widths[i], out), block(out, out)]))
            self.upsamples.append(nn.ConvTranspose1d(out, out, 4, stride=2, padding=1))
        self.final_block = _ConvBlock(widths[0], widths[0], kernel_size, n_groups)
        self.final_conv = nn.Conv1d(widths[0], transition_dim, 1)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Predict the denoiser target for the noisy trajectories `x` at times `t`."""
        check_denoiser_inputs(x, t, cond, self.horizon, self.transition_dim, self.cond_dim)
        # Every FiLM projection starts with Mish (Chi's `cond_encoder`); it is the same for all
        # blocks, so it is applied once here.
        emb = nn.functional.mish(self.embed(t, cond))
        h = x.transpose(1, 2).contiguous()
        skips: list[Tensor] = []
        for i, (res1, res2) in enumerate(self.down_blocks):
            h = res2(res1(h, emb), emb)
            if i > 0:
                skips.append(h)
            if i < len(self.downsamples):
                h = self.downsamples[i](h)
        for res in self.mid_blocks:
            h = res(h, emb)
        for (res1, res2), upsample in zip(self.up_blocks, self.upsamples, strict=True):
            h = res2(res1(torch.cat([h, skips.pop()], dim=1), emb), emb)
            h = upsample(h)
        h = self.final_conv(self.final_block(h))
        return h.transpose(1, 2).contiguous()
