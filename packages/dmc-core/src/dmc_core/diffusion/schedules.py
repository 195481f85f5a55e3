"""Discrete-time noise schedules (betas) and the derived quantities every sampler needs.

Step indices are 1-based (t = 1..T) throughout the package; the tensors here are 0-based, so the
value for step t lives at index t - 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["NoiseSchedule", "cosine_betas", "linear_betas", "make_betas", "vp_betas"]


def _check_steps(T: int) -> None:
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")


def vp_betas(T: int, beta_min: float = 0.1, beta_max: float = 20.0) -> Tensor:
    """Betas of the VP-SDE discretised into T steps (the schedule of IDQL and Diffusion-QL).

    beta_t = 1 - exp(-beta_min / T - 0.5 (beta_max - beta_min) (2t - 1) / T^2), t = 1..T, i.e.
    alpha_t is the exact VP-SDE decay over the interval [(t - 1) / T, t / T].

    Shapes:
        returns: (T,) float64.

    References:
        Song et al., "Score-Based Generative Modeling through SDEs" (2021), Eq. 33 (VP-SDE);
        Wang et al., "Diffusion Policies as an Expressive Policy Class" (2023), Sec. 4 (the schedule
        in discrete form); Hansen-Estruch et al., "IDQL" (2023), App. (same schedule).
    """
    _check_steps(T)
    t = torch.arange(1, T + 1, dtype=torch.float64)
    log_alpha = -beta_min / T - 0.5 * (beta_max - beta_min) * (2.0 * t - 1.0) / T**2
    return -torch.expm1(log_alpha)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Betas of the cosine schedule (Improved DDPM).

    alpha-bar(t) = f(t) / f(0) with f(t) = cos^2((t/T + s) / (1 + s) * pi/2), and
    beta_t = min(1 - alpha-bar(t) / alpha-bar(t - 1), max_beta); the clip stops the final step
    from being pure noise (alpha-bar(T) = 0 would make beta_T = 1).

    Shapes:
        returns: (T,) float64.

    References:
        Nichol & Dhariwal, "Improved Denoising Diffusion Probabilistic Models" (2021), Eq. 17.
    """
    _check_steps(T)
    t = torch.arange(0, T + 1, dtype=torch.float64)
    f = torch.cos((t / T + s) / (1.0 + s) * math.pi / 2.0) ** 2
    alpha_bar = f / f[0]
    return (1.0 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


def linear_betas(T: int, start: float = 1e-4, end: float = 2e-2) -> Tensor:
    """Betas evenly spaced from `start` to `end` (the original DDPM schedule, for T = 1000).

    Shapes:
        returns: (T,) float64.

    References:
        Ho et al., "Denoising Diffusion Probabilistic Models" (2020), Sec. 4.
    """
    _check_steps(T)
    return torch.linspace(start, end, T, dtype=torch.float64)


_SCHEDULES: dict[str, Callable[[int], Tensor]] = {
    "vp": vp_betas,
    "cosine": cosine_betas,
    "linear": linear_betas,
}


def make_betas(name: str, T: int) -> Tensor:
    """Return the betas of the schedule called `name` ("vp", "cosine" or "linear") with defaults.

    Raises:
        ValueError: `name` is not a known schedule.
    """
    try:
        build = _SCHEDULES[name]
    except KeyError:
        known = ", ".join(sorted(_SCHEDULES))
        raise ValueError(f"unknown noise schedule {name!r}; known: {known}") from None
    return build(T)


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """Betas and the derived per-step terms, all (T,) float64 with step t at index t - 1.

    `alphas_cumprod_prev` is alpha-bar at step t - 1 (alpha-bar_0 = 1), and `posterior_variance`
    is the variance of q(z_{t-1} | z_t, x_0): beta_t (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t),
    which is 0 at t = 1.

    References:
        Ho et al., "Denoising Diffusion Probabilistic Models" (2020), Eqs. 4, 6, 7.
    """

    betas: Tensor
    alphas: Tensor
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    sqrt_alphas_cumprod: Tensor
    sqrt_one_minus_alphas_cumprod: Tensor
    posterior_variance: Tensor

    @property
    def num_steps(self) -> int:
        """The number of diffusion steps."""
        return int(self.betas.shape[0])

    @classmethod
    def from_betas(cls, betas: Tensor) -> NoiseSchedule:
        """Build the schedule from 1-D betas in (0, 1) (converted to float64).

        Raises:
            ValueError: `betas` is not 1-D and non-empty, or has a value outside (0, 1).
        """
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().clone()
        if betas.ndim != 1 or betas.numel() == 0:
            raise ValueError(
                f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}"
            )
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must lie in (0, 1)")
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
        return cls(
            betas=betas,
            alphas=alphas,
            alphas_cumprod=alphas_cumprod,
            alphas_cumprod_prev=alphas_cumprod_prev,
            sqrt_alphas_cumprod=alphas_cumprod.sqrt(),
            sqrt_one_minus_alphas_cumprod=(1.0 - alphas_cumprod).sqrt(),
            posterior_variance=betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        )
