"""DDIM: sampling a DDPM-trained epsilon model on a subsequence of its timesteps."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dmc_core.diffusion._loop import ChainSampler, predict_x0
from dmc_core.diffusion.ddpm import DDPM
from dmc_core.diffusion.schedules import NoiseSchedule

__all__ = ["DDIM", "ddim_timesteps"]


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """`steps` evenly spaced timesteps of 1..T in sampling order, always starting at T.

    With steps = T this is T, T - 1, ..., 1; with steps > 1 it also always ends at 1.
    """
    if steps == 1:
        return [T]
    grid = torch.linspace(1.0, float(T), steps, dtype=torch.float64).round().long()
    return grid.flip(0).tolist()


class DDIM(ChainSampler):
    """Denoising diffusion implicit model: the DDPM-trained epsilon model, fewer/implicit steps.

    `eta` interpolates between the deterministic sampler (0, the probability-flow ODE's
    discretisation) and DDPM-like ancestral noise (1; with steps = T it is exactly DDPM's
    small-variance ancestral sampler). Training is DDPM's: `loss` and `q_sample` delegate to it.
    In `sample` (from `ChainSampler`) each step's std is the eta-scaled sigma of Eq. 16 (0 on the
    last step), `grad_last_k` counts DDIM steps, and each record's `t` is the timestep left.
    `num_steps` is the number of DDIM steps `steps` (the reverse steps taken); the schedule's T is
    `schedule.num_steps`.

    References:
        Song, Meng & Ermon, "Denoising Diffusion Implicit Models" (2021), Eqs. 12 and 16.
    """

    name = "ddim"

    def __init__(self, schedule: NoiseSchedule, steps: int, eta: float = 0.0) -> None:
        """Validate `steps` (1..T) and `eta` ([0, 1]) and fix the timestep subsequence.

        Raises:
            ValueError: `steps` or `eta` is out of range (the message names which).
        """
        if not 1 <= steps <= schedule.num_steps:
            raise ValueError(f"steps must lie in 1..{schedule.num_steps}, got {steps}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {eta}")
        self.schedule = schedule
        self.steps = steps
        self.eta = eta
        self.ddpm = DDPM(schedule)
        self.timesteps = ddim_timesteps(schedule.num_steps, steps)
        alpha_bar = schedule.alphas_cumprod.tolist()
        self._alpha_bar = [alpha_bar[t - 1] for t in self.timesteps]
        # The step from the last timestep lands on x0 itself, where alpha-bar is 1.
        self._alpha_bar_prev = [*self._alpha_bar[1:], 1.0]

    @property
    def num_steps(self) -> int:
        """The number of reverse steps the sampler takes (`steps`, not the schedule's T)."""
        return self.steps

    def draw_times(
        self, batch: int, generator: torch.Generator | None, device: torch.device | str
    ) -> Tensor:
        """Training steps drawn uniformly from 1..T (DDPM's, since DDIM trains as DDPM)."""
        return self.ddpm.draw_times(batch, generator, device)

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio at integer steps t in 1..T; see `DDPM.snr`."""
        return self.ddpm.snr(t)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """The forward process; see `DDPM.q_sample`."""
        return self.ddpm.q_sample(x0, t, noise)

    def _step_gaussian(
        self, clip_x0: float | None, index: int, z_t: Tensor, eps: Tensor
    ) -> tuple[Tensor, float]:
        """The Gaussian of the step leaving timesteps[index] (Eq. 12 with sigma of Eq. 16)."""
        a, a_prev = self._alpha_bar[index], self._alpha_bar_prev[index]
        x0 = predict_x0(z_t, eps, a, clip_x0)
        if clip_x0 is not None:
            # Keep the direction term consistent with the clamped x0.
            eps = (z_t - math.sqrt(a) * x0) / math.sqrt(1.0 - a)
        sigma = self.eta * math.sqrt((1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev))
        direction = math.sqrt(max(1.0 - a_prev - sigma**2, 0.0))
        return math.sqrt(a_prev) * x0 + direction * eps, sigma
