"""DDPM: epsilon-prediction training and ancestral sampling with the hooks alignment needs."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from dmc_core.diffusion._loop import SamplerOptions, predict_x0, run_reverse_chain
from dmc_core.diffusion.records import Denoiser, SampleResult
from dmc_core.diffusion.schedules import NoiseSchedule

__all__ = ["DDPM"]


def _per_sample(coef: Tensor, ndim: int) -> Tensor:
    """Reshape (B,) coefficients to (B, 1, ..., 1) so they broadcast over a (B, ...) tensor."""
    return coef.reshape(coef.shape[0], *([1] * (ndim - 1)))


class DDPM:
    """Denoising diffusion probabilistic model over a fixed noise schedule (epsilon prediction).

    References:
        Ho et al., "Denoising Diffusion Probabilistic Models" (2020), Eqs. 4, 5, 7 and Alg. 1-2.
    """

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
    def num_steps(self) -> int:
        """The number of diffusion steps."""
        return self.schedule.num_steps

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Draw z_t ~ q(z_t | x0) = N(sqrt(abar_t) x0, (1 - abar_t) I) with the given noise.

        Shapes:
            x0, noise, returns: (B, ...).
            t: (B,) long, steps in 1..T.

        References:
            Ho et al. (2020), Eq. 4.
        """
        if t.numel() and (int(t.min()) < 1 or int(t.max()) > self.num_steps):
            raise ValueError(f"t must lie in 1..{self.num_steps}")
        index = t.to(device=self.schedule.betas.device, dtype=torch.long) - 1
        scale = self.schedule.sqrt_alphas_cumprod[index].to(device=x0.device, dtype=x0.dtype)
        sigma = self.schedule.sqrt_one_minus_alphas_cumprod[index].to(x0.device, x0.dtype)
        return _per_sample(scale, x0.ndim) * x0 + _per_sample(sigma, x0.ndim) * noise

    def loss(
        self,
        denoiser: Denoiser,
        x0: Tensor,
        cond: Any,
        generator: torch.Generator | None = None,
        mask: Tensor | None = None,
        weights: Tensor | None = None,
    ) -> Tensor:
        """Per-sample epsilon-prediction MSE at a step t drawn uniformly from 1..T.

        With `mask` (True = known entry), the known entries of z_t are set to x0's values, as the
        sampler in-paints them, and are left out of the loss: the mean runs over the unknown
        entries only. `weights` scale the squared errors element-wise (e.g. per dimension)
        before that mean. Callers weight or average the returned per-sample values.

        Shapes:
            x0: (B, ...); mask: bool, x0's shape; weights: broadcastable to x0.
            returns: (B,).

        References:
            Ho et al. (2020), Eq. 5 (L_simple); Janner et al., "Planning with Diffusion" (2022),
            Sec. 3 (in-painting conditioning).
        """
        batch = x0.shape[0]
        t = torch.randint(1, self.num_steps + 1, (batch,), generator=generator, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        z_t = self.q_sample(x0, t, noise)
        if mask is not None:
            z_t = torch.where(mask, x0, z_t)
        error = (denoiser(z_t, t, cond) - noise) ** 2
        if weights is not None:
            error = error * weights
        if mask is None:
            return error.reshape(batch, -1).mean(dim=1)
        free = (~mask).to(x0.dtype).expand_as(error).reshape(batch, -1)
        # A sample with no unknown entry has nothing to learn: its loss is 0, not NaN.
        return (error.reshape(batch, -1) * free).sum(dim=1) / free.sum(dim=1).clamp(min=1.0)

    def _step_gaussian(
        self, clip_x0: float | None, index: int, z_t: Tensor, eps: Tensor
    ) -> tuple[Tensor, float]:
        """The Gaussian of step t = T - index: posterior mean at x0_hat, posterior std."""
        t = self.num_steps - index
        x0 = predict_x0(z_t, eps, self._alpha_bar[t - 1], clip_x0)
        mean = self._coef_x0[t - 1] * x0 + self._coef_z[t - 1] * z_t
        return mean, self._posterior_std[t - 1]

    def sample(
        self,
        denoiser: Denoiser,
        shape: Sequence[int],
        cond: Any,
        generator: torch.Generator,
        *,
        grad_last_k: int = 0,
        std_floor: float = 0.0,
        inpaint: tuple[Tensor, Tensor] | None = None,
        record: bool = True,
        clip_x0: float | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> SampleResult:
        """Ancestral sampling from z_T ~ N(0, I) down to x0 in T steps.

        Each step draws z_{t-1} ~ N(mu(z_t, eps_hat), std_t^2) with mu the posterior mean of
        q(z_{t-1} | z_t, x0_hat) and std_t = max(sqrt(posterior variance), std_floor): the "small"
        variance beta_t (1 - abar_{t-1}) / (1 - abar_t), exact when the data is a point mass and
        0 at t = 1. So with std_floor = 0 the last step is deterministic (std 0, log_prob 0);
        with std_floor > 0 it draws noise of std std_floor, so that every step has a finite
        log-probability, as DPPO does for policy-gradient fine-tuning.

        Args:
            denoiser: the epsilon model.
            shape: the sample shape (B, ...).
            cond: passed to the denoiser unchanged.
            generator: the only source of randomness; sampling runs on its device.
            grad_last_k: gradients flow through the denoiser for the last K steps only; 0 runs
                everything under `torch.no_grad`, K >= T differentiates every step. Earlier
                steps' outputs are detached.
            std_floor: lower bound on every step's std (see above).
            inpaint: (mask, values): entries where mask is True are set to `values` on z_T and
                after every step (Diffuser's conditioning); they count in no log_prob.
            record: keep a `StepRecord` per step; False returns no steps.
            clip_x0: clamp the predicted x0 to [-clip_x0, clip_x0] before the posterior mean.
            dtype: floating dtype of the chain.

        Shapes:
            returns.x0: `shape`.

        References:
            Ho et al. (2020), Alg. 2 and Eq. 7; Ren et al., "Diffusion Policy Policy
            Optimization" (2024), Sec. 4 (std floor, last-K-step fine-tuning).
        """
        options = SamplerOptions(grad_last_k, std_floor, inpaint, record, clip_x0)
        step_gaussian = functools.partial(self._step_gaussian, clip_x0)
        timesteps = list(range(self.num_steps, 0, -1))
        return run_reverse_chain(
            denoiser, timesteps, step_gaussian, shape, cond, generator, options, dtype
        )
