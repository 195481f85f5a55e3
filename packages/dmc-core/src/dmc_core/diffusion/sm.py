"""SM: a continuous-time VP-SDE score model (noise-parameterised) with SDE and ODE samplers."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dmc_core.diffusion._loop import (
    ChainSampler,
    per_sample,
    predict_x0,
)

__all__ = ["SM", "SM_SAMPLERS"]

SM_SAMPLERS = ("ode", "sde")
"""The samplers `SM` knows: the reverse SDE (Euler-Maruyama) and the probability-flow ODE."""

# The denoiser sees 1000 * t so that a sinusoidal time embedding spreads over O(1..1000), like
# the integer steps of the discrete formulations (see `Denoiser`).
TIME_SCALE = 1000.0


class SM(ChainSampler):
    """Score-based model on the VP-SDE dx = -beta(t) x / 2 dt + sqrt(beta(t)) dW, t in [t_eps, 1].

    beta(t) = beta_min + t (beta_max - beta_min), so x_t = alpha(t) x0 + sigma(t) eps with
    log alpha(t) = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2 and sigma^2 = 1 - alpha^2. The
    network predicts eps; the score is -eps_hat / sigma(t), and training is denoising score
    matching with weight sigma^2, i.e. the eps-MSE at t ~ U(t_eps, 1).

    Sampling (`sample`, from `ChainSampler`) starts at z ~ N(0, I) (the t = 1 marginal up to
    alpha(1) ~ 7e-3) and visits `sample_steps` grid points t_k evenly spaced from 1 down to t_eps.
    From each grid point but the last it takes one Euler step of length h = t_k - t_{k+1}:

    - "sde": reverse-SDE Euler-Maruyama, z' ~ N(z + h beta (z / 2 - eps_hat / sigma), beta h);
    - "ode": probability-flow Euler, z' = z + h beta (z - eps_hat / sigma) / 2, std 0.

    From the last grid point t_eps the chain lands on x0 with the Tweedie (posterior-mean) step
    x0_hat = (z - sigma(t_eps) eps_hat) / alpha(t_eps), std 0: it removes the residual noise of
    scale sigma(t_eps) instead of leaving it in the sample. So `num_steps` = `sample_steps`
    denoiser calls (with sample_steps = 1 the one step is the Tweedie step from t = 1). A
    `std_floor` > 0 makes the ODE and the landing step stochastic too. Records carry t_k as `t`.

    References:
        Song et al., "Score-Based Generative Modeling through Stochastic Differential Equations"
        (2021), Eqs. 6, 13, 29, 33 and App. C (VP-SDE, reverse SDE, probability flow, denoising
        step); Efron, "Tweedie's Formula and Selection Bias" (2011).
    """

    name = "sm"

    def __init__(
        self,
        sample_steps: int,
        sampler: str = "sde",
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        t_eps: float = 1e-3,
    ) -> None:
        """Validate the arguments and fix the sampling grid.

        Raises:
            ValueError: a bad `sample_steps` (< 1), `sampler` (not "sde" or "ode"), betas
                (need 0 <= beta_min <= beta_max, beta_max > 0) or `t_eps` (not in (0, 1));
                the message names which.
        """
        if sample_steps < 1:
            raise ValueError(f"sample_steps must be >= 1, got {sample_steps}")
        if sampler not in SM_SAMPLERS:
            known = ", ".join(SM_SAMPLERS)
            raise ValueError(f"unknown SM sampler {sampler!r}; known: {known}")
        if not (0.0 <= beta_min <= beta_max and beta_max > 0.0):
            raise ValueError(
                f"betas must satisfy 0 <= beta_min <= beta_max, beta_max > 0; got beta_min "
                f"{beta_min}, beta_max {beta_max}"
            )
        if not 0.0 < t_eps < 1.0:
            raise ValueError(f"t_eps must lie in (0, 1), got {t_eps}")
        self.sample_steps = sample_steps
        self.sampler = sampler
        self.beta_min = beta_min
        self.beta_max = beta_max
        self.t_eps = t_eps
        grid = torch.linspace(1.0, t_eps, sample_steps, dtype=torch.float64)
        self.timesteps: list[float] = grid.tolist()
        log_alpha = self._log_alpha(grid)
        self._alpha_bar = torch.exp(2.0 * log_alpha).tolist()
        self._sigma = torch.sqrt(-torch.expm1(2.0 * log_alpha)).tolist()
        self._beta = self.beta(grid).tolist()

    @property
    def num_steps(self) -> int:
        """The number of reverse steps (denoiser calls) the sampler takes: `sample_steps`."""
        return self.sample_steps

    def beta(self, t: Tensor) -> Tensor:
        """The noise rate beta(t) = beta_min + t (beta_max - beta_min).

        Shapes:
            t, returns: any shape.
        """
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _log_alpha(self, t: Tensor) -> Tensor:
        # log alpha(t) = -1/2 * integral_0^t beta(s) ds (Song et al. 2021, Eq. 33).
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """alpha(t) and sigma(t) of q(x_t | x0) = N(alpha x0, sigma^2 I), in float64.

        Shapes:
            t, returns: any shape (the same).
        """
        log_alpha = self._log_alpha(t.to(torch.float64))
        # expm1 keeps sigma accurate at small t, where 1 - alpha^2 cancels.
        return torch.exp(log_alpha), torch.sqrt(-torch.expm1(2.0 * log_alpha))

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio alpha(t)^2 / sigma(t)^2, decreasing in t (float32).

        Shapes:
            t, returns: (B,).

        References:
            Kingma et al., "Variational Diffusion Models" (2021), Eq. 2.
        """
        log_alpha = self._log_alpha(t.to(torch.float64))
        return (torch.exp(2.0 * log_alpha) / -torch.expm1(2.0 * log_alpha)).to(torch.float32)

    def network_time(self, t: Tensor) -> Tensor:
        """The denoiser's time input: 1000 * t as float32 (see `Denoiser`)."""
        return t.to(torch.float32) * TIME_SCALE

    def draw_times(
        self, batch: int, generator: torch.Generator | None, device: torch.device | str
    ) -> Tensor:
        """Training times drawn uniformly from [t_eps, 1]: what `loss(t=...)` takes.

        Shapes:
            returns: (batch,) float32.
        """
        u = torch.rand(batch, generator=generator, device=device)
        return self.t_eps + (1.0 - self.t_eps) * u

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Draw x_t = alpha(t) x0 + sigma(t) noise with the given noise.

        Shapes:
            x0, noise, returns: (B, ...).
            t: (B,) float, times in (0, 1].

        Raises:
            ValueError: `t` is not floating or has a value outside (0, 1].
        """
        if not t.is_floating_point():
            raise ValueError(f"t must be float times in (0, 1], got {t.dtype}")
        if t.numel() and (float(t.min()) <= 0.0 or float(t.max()) > 1.0):
            raise ValueError("t must lie in (0, 1]")
        alpha, sigma = self.marginal(t)
        alpha = per_sample(alpha.to(x0.dtype), x0.ndim)
        return alpha * x0 + per_sample(sigma.to(x0.dtype), x0.ndim) * noise

    def _step_gaussian(
        self, clip_x0: float | None, index: int, z_t: Tensor, eps: Tensor
    ) -> tuple[Tensor, float]:
        """The Gaussian of the step leaving timesteps[index] (see the class docstring)."""
        alpha_bar, sigma = self._alpha_bar[index], self._sigma[index]
        last = index == self.sample_steps - 1
        if last or clip_x0 is not None:
            x0 = predict_x0(z_t, eps, alpha_bar, clip_x0)
            if last:
                return x0, 0.0
            # Keep the score consistent with the clamped x0.
            eps = (z_t - math.sqrt(alpha_bar) * x0) / sigma
        h = self.timesteps[index] - self.timesteps[index + 1]
        beta = self._beta[index]
        if self.sampler == "sde":
            return z_t + h * beta * (0.5 * z_t - eps / sigma), math.sqrt(beta * h)
        return z_t + 0.5 * h * beta * (z_t - eps / sigma), 0.0
