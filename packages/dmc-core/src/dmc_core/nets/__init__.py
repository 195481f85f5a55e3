"""Denoiser backbones over (horizon, transition_dim) trajectories and a registry to build them.

Every backbone is built as `Backbone(horizon, transition_dim, cond_dim=0, **sizes)` and called
as `net(x, t, cond)` with x (B, horizon, transition_dim), t (B,) long or float time values and
cond (B, cond_dim) or None (cond_dim = 0); it returns a (B, horizon, transition_dim) tensor.
They use only nn.Linear, nn.Conv1d, nn.ConvTranspose1d, nn.GroupNorm and nn.LayerNorm, so LoRA
adapters (peft) can wrap their Linear and Conv1d layers.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from dmc_core.nets.dit import DiT1d
from dmc_core.nets.embeddings import (
    ConditionEncoder,
    TimeCondEmbedding,
    TimeEmbedding,
    check_denoiser_inputs,
    sinusoidal_embedding,
)
from dmc_core.nets.energy import EnergyDenoiser
from dmc_core.nets.feedforward import mlp
from dmc_core.nets.fourier import FourierFeatures, fourier_features
from dmc_core.nets.residual_mlp import ResidualMLP
from dmc_core.nets.unet import TemporalUNet

__all__ = [
    "BACKBONES",
    "ConditionEncoder",
    "DiT1d",
    "EnergyDenoiser",
    "FourierFeatures",
    "ResidualMLP",
    "TemporalUNet",
    "TimeCondEmbedding",
    "TimeEmbedding",
    "backbone_sizes",
    "build_backbone",
    "check_denoiser_inputs",
    "fourier_features",
    "mlp",
    "sinusoidal_embedding",
]

BACKBONES: dict[str, type[nn.Module]] = {
    "unet": TemporalUNet,
    "dit": DiT1d,
    "mlp": ResidualMLP,
}

_INTERFACE = ("horizon", "transition_dim", "cond_dim")


def backbone_sizes(name: str) -> dict[str, Any]:
    """The size keywords of backbone `name` with their defaults (the constructor's signature)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(BACKBONES)}")
    params = inspect.signature(BACKBONES[name]).parameters.values()
    return {
        p.name: p.default
        for p in params
        if p.name not in _INTERFACE and p.kind is not inspect.Parameter.VAR_KEYWORD
    }


def build_backbone(
    name: str, *, horizon: int, transition_dim: int, cond_dim: int, **sizes: Any
) -> nn.Module:
    """Build backbone `name` with the given size keywords (the others keep their defaults).

    Raises:
        ValueError: `name` is not in BACKBONES, or a size keyword is not one the backbone takes.
    """
    accepted = backbone_sizes(name)
    unknown = [key for key in sizes if key not in accepted]
    if unknown:
        raise ValueError(
            f"backbone {name!r} takes no size keyword {unknown[0]!r}; "
            f"accepted: {', '.join(accepted)}"
        )
    return BACKBONES[name](
        horizon=horizon, transition_dim=transition_dim, cond_dim=cond_dim, **sizes
    )
