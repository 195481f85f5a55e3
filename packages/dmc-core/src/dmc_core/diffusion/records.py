"""What a sampler returns (per-step Gaussian records for alignment) and the denoiser interface."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

__all__ = ["Denoiser", "SampleResult", "StepRecord", "gaussian_log_prob"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


class Denoiser(Protocol):
    """The network every formulation trains: it regresses the formulation's target.

    The target is the noise eps for DDPM, DDIM and SM (SM's score is -eps_hat / sigma(t)) and the
    velocity eps - x0 for FM. The time input is the same for training and sampling and spreads
    over O(1..1000), since backbones embed the raw value sinusoidally:

    - DDPM, DDIM: the integer diffusion step t in 1..T, a long tensor;
    - SM, FM: 1000 * t for the continuous time t in [0, 1], a float32 tensor.

    Shapes:
        z_t: (B, ...) noisy sample at time t.
        t: (B,) the time input above.
        returns: (B, ...) the predicted target, the shape of `z_t`.
    """

    def __call__(self, z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        """Predict the regression target for `z_t` at time input `t` given the conditioning."""
        ...


def gaussian_log_prob(
    x: Tensor, mean: Tensor, std: Tensor | float, free: Tensor | None = None
) -> Tensor:
    """Log-density of `x` under N(mean, std^2), summed over every non-batch dimension.

    Equal to `torch.distributions.Normal(mean, std).log_prob(x)` summed over dims 1.., but only
    entries where `free` is True are counted (in-painted entries are not random, so they carry no
    density).

    Shapes:
        x, mean: (B, ...).
        std: broadcastable to x; entries must be > 0.
        free: bool, broadcastable to x, or None for all entries.
        returns: (B,).
    """
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device)
    elementwise = -0.5 * ((x - mean) / std) ** 2 - torch.log(std) - _LOG_SQRT_2PI
    elementwise = elementwise.expand_as(x)
    if free is not None:
        elementwise = elementwise * free.to(x.dtype)
    return elementwise.reshape(x.shape[0], -1).sum(dim=1)


@dataclass(frozen=True, eq=False)
class StepRecord:
    """One reverse step z_t -> z_prev drawn from N(mean, std^2).

    `t` is the time being left, in the formulation's units: an int step for DDPM (1..T) and DDIM
    (its timestep), a float in (0, 1] for SM and FM (the denoiser saw `network_time` of it). A
    deterministic step has std 0 and log_prob 0. With in-painting, `log_prob` counts only the
    free entries.

    Shapes:
        z_t, z_prev, mean: (B, ...).
        std: broadcastable to z_t (a 0-d tensor here: one std per step).
        log_prob: (B,).
    """

    t: float
    z_t: Tensor
    z_prev: Tensor
    mean: Tensor
    std: Tensor
    log_prob: Tensor


@dataclass(frozen=True, eq=False)
class SampleResult:
    """The final sample and, if recorded, every reverse step in sampling order (noisiest first).

    Shapes:
        x0: (B, ...).
    """

    x0: Tensor
    steps: tuple[StepRecord, ...]

    @property
    def log_prob(self) -> Tensor:
        """Log-likelihood of the whole chain given z_T: the sum of the steps' log_probs, (B,).

        Raises:
            ValueError: the sampler ran with `record=False`, so there is nothing to sum.
        """
        if not self.steps:
            raise ValueError("no steps were recorded (sample with record=True)")
        return torch.stack([step.log_prob for step in self.steps]).sum(dim=0)
