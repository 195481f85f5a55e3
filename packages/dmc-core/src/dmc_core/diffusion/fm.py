"""FM: flow matching on the straight path x_t = (1 - t) x0 + t eps, with an Euler ODE sampler."""

from __future__ import annotations

import torch
from torch import Tensor

from dmc_core.diffusion._loop import ChainSampler, per_sample

__all__ = ["FM"]

# The denoiser sees 1000 * t so that a sinusoidal time embedding spreads over O(1..1000), like
# the integer steps of the discrete formulations (see `Denoiser`).
TIME_SCALE = 1000.0


class FM(ChainSampler):
    """Flow matching / rectified flow: the network predicts the velocity v = eps - x0 of the path.

    Training regresses v at t ~ U(0, 1). Sampling (`sample`, from `ChainSampler`) integrates
    dz/dt = v_hat from z_1 ~ N(0, I) to t = 0 with `sample_steps` Euler steps of length 1 / N,
    z' = z - v_hat / N; the last step, from t = 1 / N to 0, is z - t v_hat = x0_hat, so the chain
    lands on the model's x0 prediction. Every step is deterministic (std 0, log_prob 0) unless a
    `std_floor` > 0 makes it N(mean, floor^2). With `clip_x0`, x0_hat = z - t v_hat is clamped
    and the step moves along the straight line to it: mean = (t'/t) z + (1 - t'/t) x0_hat.
    Records carry the time left (1, 1 - 1/N, ..., 1/N) as `t`.

    References:
        Lipman et al., "Flow Matching for Generative Modeling" (2023), Eqs. 20-23 (sigma_min 0);
        Liu, Gong & Liu, "Flow Straight and Fast: Rectified Flow" (2023), Eq. 1.
    """

    name = "fm"

    def __init__(self, sample_steps: int) -> None:
        """Fix the Euler grid of `sample_steps` steps from t = 1 to t = 0.

        Raises:
            ValueError: `sample_steps` < 1.
        """
        if sample_steps < 1:
            raise ValueError(f"sample_steps must be >= 1, got {sample_steps}")
        self.sample_steps = sample_steps
        grid = torch.linspace(1.0, 0.0, sample_steps + 1, dtype=torch.float64).tolist()
        self.timesteps: list[float] = grid[:-1]
        self._next = grid[1:]

    @property
    def num_steps(self) -> int:
        """The number of reverse (Euler) steps the sampler takes: `sample_steps`."""
        return self.sample_steps

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio (1 - t)^2 / t^2, decreasing in t (inf at t = 0; float32).

        Shapes:
            t, returns: (B,).

        References:
            Esser et al., "Scaling Rectified Flow Transformers" (2024), Sec. 3.1 (SNR of the path).
        """
        t = t.to(torch.float64)
        return ((1.0 - t) / t).square().to(torch.float32)

    def network_time(self, t: Tensor) -> Tensor:
        """The denoiser's time input: 1000 * t as float32 (see `Denoiser`)."""
        return t.to(torch.float32) * TIME_SCALE

    def draw_times(
        self, batch: int, generator: torch.Generator | None, device: torch.device | str
    ) -> Tensor:
        """Training times drawn uniformly from [0, 1): what `loss(t=...)` takes.

        Shapes:
            returns: (batch,) float32.
        """
        return torch.rand(batch, generator=generator, device=device)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """The point x_t = (1 - t) x0 + t noise of the straight path.

        Shapes:
            x0, noise, returns: (B, ...).
            t: (B,) float, times in [0, 1].

        Raises:
            ValueError: `t` is not floating or has a value outside [0, 1].
        """
        if not t.is_floating_point():
            raise ValueError(f"t must be float times in [0, 1], got {t.dtype}")
        if t.numel() and (float(t.min()) < 0.0 or float(t.max()) > 1.0):
            raise ValueError("t must lie in [0, 1]")
        t = per_sample(t.to(x0.dtype), x0.ndim)
        return (1.0 - t) * x0 + t * noise

    def regression_target(self, x0: Tensor, noise: Tensor) -> Tensor:
        """The velocity of the straight path from x0 to the noise: eps - x0.

        References:
            Lipman et al. (2023), Eq. 23 (conditional flow matching).
        """
        return noise - x0

    def _step_gaussian(
        self, clip_x0: float | None, index: int, z_t: Tensor, v: Tensor
    ) -> tuple[Tensor, float]:
        """The Euler step from timesteps[index] to the next grid time (std 0)."""
        t, t_next = self.timesteps[index], self._next[index]
        if clip_x0 is None:
            return z_t + (t_next - t) * v, 0.0
        x0 = (z_t - t * v).clamp(-clip_x0, clip_x0)
        ratio = t_next / t
        return ratio * z_t + (1.0 - ratio) * x0, 0.0
