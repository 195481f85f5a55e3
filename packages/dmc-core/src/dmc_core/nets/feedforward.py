"""A plain multi-layer perceptron builder (inverse dynamics, critics, small heads)."""

from __future__ import annotations

from torch import nn

__all__ = ["mlp"]


def mlp(
    in_dim: int,
    out_dim: int,
    hidden: int,
    layers: int,
    activation: type[nn.Module] = nn.Mish,
) -> nn.Sequential:
    """Linear layers with `activation` between them: `layers` hidden layers of width `hidden`.

    `layers` = 0 gives a single Linear(in_dim, out_dim); the output layer has no activation.

    Shapes:
        input: (..., in_dim).
        returns: (..., out_dim).
    """
    if layers < 0:
        raise ValueError(f"layers must be >= 0, got {layers}")
    modules: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), activation()]
        width = hidden
    modules.append(nn.Linear(width, out_dim))
    return nn.Sequential(*modules)
