"""DDPM: epsilon-prediction training and ancestral sampling with the hooks alignment needs."""

from __future__ import annotations

import torch
from torch import Tensor

from dmc_core.diffusion._loop import (
    ChainSampler,
    per_sample,
    predict_x0,
)
from dmc_core.diffusion.schedules import NoiseSchedule

__all__ = ["DDPM"]


class DDPM(ChainSampler):
    """Denoising diffusion probabilistic model over a fixed noise schedule (epsilon prediction).

    Sampling (`sample`, from `ChainSampler`) is ancestral over all T steps: each step draws
    z_{t-1} ~ N(mu(z_t, eps_hat), std_t^2), mu the posterior mean of q(z_{t-1} | z_t, x0_hat) and
    std_t the "small" posterior std sqrt(beta_t (1 - abar_{t-1}) / (1 - abar_t)), exact when the
    data is a point mass and 0 at t = 1 (so the last step is deterministic unless a std floor is
    given).

    References:
        Ho et al., "Denoising Diffusion Probabilistic Models" (2020), Eqs. 4, 5, 7 and Alg. 1-2.
    """

    name = "ddpm"

    def __init__(self, schedule: NoiseSchedule) -> None:
        """Keep the schedule and cache its per-step coefficients as Python floats."""
        self.schedule = schedule
        s = schedule
        self._alpha_bar = s.alphas_cumprod.tolist()
        # Posterior mean of q(z_{t-1} | z_t, x0) = coef_x0 * x0 + coef_z * z_t (Eq. 7).
        self._coef_x0 = (s.alphas_cumprod_prev.sqrt() * s.betas / (1 - s.alphas_cumprod)).tolist()
        self._coef_z = (
            s.alphas.sqrt() * (1 - s.alphas_cumprod_prev) / (1 - s.alphas_cumprod)
        ).tolist()
        self._posterior_std = s.posterior_variance.sqrt().tolist()

    @property
    def timesteps(self) -> list[int]:  # type: ignore[override]
        """All steps T, ..., 1 in sampling order."""
        return list(range(self.num_steps, 0, -1))

    @property
    def num_steps(self) -> int:
        """The number of diffusion steps T, which is also the number of reverse steps taken."""
        return self.schedule.num_steps

    def draw_times(
        self, batch: int, generator: torch.Generator | None, device: torch.device | str
    ) -> Tensor:
        """Training steps drawn uniformly from 1..T: what `loss(t=...)` takes.

        Shapes:
            returns: (batch,) long.
        """
        return torch.randint(1, self.num_steps + 1, (batch,), generator=generator, device=device)

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio abar_t / (1 - abar_t) at integer steps t in 1..T (float32).

        Shapes:
            t, returns: (B,).

        References:
            Kingma et al., "Variational Diffusion Models" (2021), Eq. 2 (SNR).
        """
        index = t.to(device=self.schedule.betas.device, dtype=torch.long) - 1
        abar = self.schedule.alphas_cumprod[index]
        return (abar / (1.0 - abar)).to(device=t.device, dtype=torch.float32)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Draw z_t ~ q(z_t | x0) = N(sqrt(abar_t) x0, (1 - abar_t) I) with the given noise.

        Shapes:
            x0, noise, returns: (B, ...).
            t: (B,) long, steps in 1..T.

        References:
            Ho et al. (2020), Eq. 4.
        """
        if t.is_floating_point() or t.is_complex():
            raise ValueError(f"t must be integer steps in 1..{self.num_steps}, got {t.dtype}")
        if t.numel() and (int(t.min()) < 1 or int(t.max()) > self.num_steps):
            raise ValueError(f"t must lie in 1..{self.num_steps}")
        index = t.to(device=self.schedule.betas.device, dtype=torch.long) - 1
        scale = self.schedule.sqrt_alphas_cumprod[index].to(device=x0.device, dtype=x0.dtype)
        sigma = self.schedule.sqrt_one_minus_alphas_cumprod[index].to(x0.device, x0.dtype)
        return per_sample(scale, x0.ndim) * x0 + per_sample(sigma, x0.ndim) * noise

    def _step_gaussian(
        self, clip_x0: float | None, index: int, z_t: Tensor, eps: Tensor
    ) -> tuple[Tensor, float]:
        """The Gaussian of step t = T - index: posterior mean at x0_hat, posterior std."""
        t = self.num_steps - index
        x0 = predict_x0(z_t, eps, self._alpha_bar[t - 1], clip_x0)
        mean = self._coef_x0[t - 1] * x0 + self._coef_z[t - 1] * z_t
        return mean, self._posterior_std[t - 1]
