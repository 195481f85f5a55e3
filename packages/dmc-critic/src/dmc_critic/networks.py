"""The MLPs the critic's heads (Q and V) and the baseline policies are made of."""

from __future__ import annotations

from torch import Tensor, nn

from dmc_core.nets.fourier import FourierFeatures

__all__ = ["ScalarMLP", "mlp"]


def mlp(
    in_dim: int,
    hidden: int,
    layers: int,
    fourier_frequencies: int,
    layer_norm: bool,
    out_dim: int = 1,
) -> nn.Sequential:
    """Fourier features, then `layers` x (Linear, optional LayerNorm, ReLU), then Linear(., out).

    Every hidden layer is activated, including the last one before the output layer (a port of
    IDQL's MLP without that activation lost performance, CleanDiffuser #26; IQL's MLP has
    `activate_final` too); the output is linear. LayerNorm follows the Linear as in jaxrl5's MLP,
    which IDQL's critic uses.

    Shapes:
        input: (..., in_dim), already normalised; returns: (..., out_dim).
    """
    if layers < 1:
        raise ValueError(f"layers must be >= 1, got {layers}")
    features = FourierFeatures(fourier_frequencies)
    modules: list[nn.Module] = [features]
    width = features.out_dim(in_dim)
    for _ in range(layers):
        modules.append(nn.Linear(width, hidden))
        if layer_norm:
            modules.append(nn.LayerNorm(hidden))
        modules.append(nn.ReLU())
        width = hidden
    modules.append(nn.Linear(width, out_dim))
    return nn.Sequential(*modules)


class ScalarMLP(nn.Module):
    """`mlp` with one output, squeezed: every critic head.

    Shapes:
        input: (..., in_dim), already normalised.
        returns: (...,).

    References:
        Hansen-Estruch et al., "IDQL: Implicit Q-Learning as an Actor-Critic Method with
        Diffusion Policies", 2023 (LayerNorm in the IQL critic).
    """

    def __init__(
        self, in_dim: int, hidden: int, layers: int, fourier_frequencies: int, layer_norm: bool
    ) -> None:
        """Build the layers; `layers` >= 1 hidden layers of width `hidden`."""
        super().__init__()
        self.net = mlp(in_dim, hidden, layers, fourier_frequencies, layer_norm)

    def forward(self, x: Tensor) -> Tensor:
        """The scalar output per row. Shapes: x (..., in_dim) -> (...,)."""
        return self.net(x).squeeze(-1)
