"""The reverse-chain loop shared by DDPM and DDIM: gradient truncation, in-painting, recording.

A formulation supplies its timesteps (descending) and a per-step Gaussian: given the step's index,
z_t and the predicted noise, the mean and std of the next state. Everything else lives here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dmc_core.diffusion.records import Denoiser, SampleResult, StepRecord, gaussian_log_prob

__all__ = ["ChainSampler", "SamplerOptions", "StepGaussian", "predict_x0", "run_reverse_chain"]

StepGaussian = Callable[[int, Tensor, Tensor], tuple[Tensor, float]]
"""(index in the timestep list, z_t, predicted epsilon) -> (mean, std) of the next state."""


@dataclass(frozen=True, eq=False)
class SamplerOptions:
    """The sampler keywords common to every formulation (see `DDPM.sample`).

    Shapes:
        inpaint: (mask, values), both broadcastable to the sample shape; mask is bool.
    """

    grad_last_k: int = 0
    std_floor: float = 0.0
    inpaint: tuple[Tensor, Tensor] | None = None
    record: bool = True
    clip_x0: float | None = None

    def __post_init__(self) -> None:
        if self.grad_last_k < 0:
            raise ValueError(f"grad_last_k must be >= 0, got {self.grad_last_k}")
        if not (self.std_floor >= 0.0 and math.isfinite(self.std_floor)):
            raise ValueError(f"std_floor must be finite and >= 0, got {self.std_floor}")
        if self.clip_x0 is not None and not self.clip_x0 > 0.0:
            raise ValueError(f"clip_x0 must be > 0 or None, got {self.clip_x0}")
        if self.inpaint is not None and self.inpaint[0].dtype != torch.bool:
            raise ValueError(f"inpaint mask must be bool, got {self.inpaint[0].dtype}")


def predict_x0(z_t: Tensor, eps: Tensor, alpha_bar: float, clip: float | None) -> Tensor:
    """Invert the forward process for x0 given the predicted noise, optionally clamped to ±clip.

    Shapes:
        z_t, eps, returns: (B, ...).

    References:
        Ho et al., "Denoising Diffusion Probabilistic Models" (2020), Eq. 4 solved for x0.
    """
    x0 = (z_t - math.sqrt(1.0 - alpha_bar) * eps) / math.sqrt(alpha_bar)
    return x0 if clip is None else x0.clamp(-clip, clip)


def _inpaint(z: Tensor, inpaint: tuple[Tensor, Tensor] | None) -> Tensor:
    if inpaint is None:
        return z
    mask, values = inpaint
    return torch.where(mask, values.to(dtype=z.dtype, device=z.device), z)


def _reverse_step(
    denoiser: Denoiser,
    t: int,
    index: int,
    z_t: Tensor,
    cond: Any,
    step_gaussian: StepGaussian,
    generator: torch.Generator,
    options: SamplerOptions,
) -> tuple[Tensor, StepRecord | None]:
    t_batch = torch.full((z_t.shape[0],), t, dtype=torch.long, device=z_t.device)
    mean, std = step_gaussian(index, z_t, denoiser(z_t, t_batch, cond))
    # The floor keeps every step stochastic, so that each has a finite log-probability (DPPO).
    std = max(std, options.std_floor)
    if std > 0.0:
        noise = torch.randn(z_t.shape, generator=generator, dtype=z_t.dtype, device=z_t.device)
        z_prev = mean + std * noise
    else:
        z_prev = mean
    z_prev = _inpaint(z_prev, options.inpaint)
    if not options.record:
        return z_prev, None
    std_tensor = torch.tensor(std, dtype=z_t.dtype, device=z_t.device)
    if std > 0.0:
        # In-painted entries are set, not drawn: they carry no density.
        free = None if options.inpaint is None else ~options.inpaint[0]
        log_prob = gaussian_log_prob(z_prev, mean, std_tensor, free=free)
    else:
        log_prob = z_t.new_zeros(z_t.shape[0])
    return z_prev, StepRecord(t, z_t, z_prev, mean, std_tensor, log_prob)


def run_reverse_chain(
    denoiser: Denoiser,
    timesteps: Sequence[int],
    step_gaussian: StepGaussian,
    shape: Sequence[int],
    cond: Any,
    generator: torch.Generator,
    options: SamplerOptions,
    dtype: torch.dtype = torch.float32,
) -> SampleResult:
    """Draw z_T ~ N(0, I) on the generator's device and run the reverse chain over `timesteps`.

    Only the last `options.grad_last_k` steps run with gradients enabled; the earlier ones run
    under `torch.no_grad`, so their outputs are detached and back-propagation through x0 stops
    at the first differentiable step's input.

    Shapes:
        shape: (B, ...); returns x0 of that shape.
    """
    first_grad = len(timesteps) - min(options.grad_last_k, len(timesteps))
    device = generator.device
    with torch.no_grad():
        z = _inpaint(
            torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device),
            options.inpaint,
        )
    steps: list[StepRecord] = []
    for index, t in enumerate(timesteps):
        with torch.set_grad_enabled(index >= first_grad):
            z, record = _reverse_step(
                denoiser, t, index, z, cond, step_gaussian, generator, options
            )
        if record is not None:
            steps.append(record)
    return SampleResult(x0=z, steps=tuple(steps))


class ChainSampler:
    """The `sample` method shared by the formulations that denoise along a timestep list.

    A subclass provides `timesteps` (descending, the steps the chain leaves) and
    `_step_gaussian(clip_x0, index, z_t, eps) -> (mean, std)`; the loop above does the rest.
    """

    timesteps: Sequence[int]

    def _step_gaussian(
        self, clip_x0: float | None, index: int, z_t: Tensor, eps: Tensor
    ) -> tuple[Tensor, float]:
        raise NotImplementedError

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
        """Sample from z_T ~ N(0, I) along `timesteps`; each step draws N(mean, std^2).

        std = max(the formulation's std, std_floor): a step whose std is 0 and no floor is
        deterministic (std 0, log_prob 0); a floor > 0 keeps every step stochastic, so that each
        has a finite log-probability, as DPPO does for policy-gradient fine-tuning.

        Args:
            denoiser: the epsilon model.
            shape: the sample shape (B, ...).
            cond: passed to the denoiser unchanged.
            generator: the only source of randomness; sampling runs on its device.
            grad_last_k: gradients flow through the denoiser for the last K steps only; 0 runs
                everything under `torch.no_grad`, K >= the number of steps differentiates every
                step. Earlier steps' outputs are detached.
            std_floor: lower bound on every step's std (see above).
            inpaint: (mask, values): entries where mask is True are set to `values` on z_T and
                after every step (Diffuser's conditioning); they count in no log_prob.
            record: keep a `StepRecord` per step; False returns no steps.
            clip_x0: clamp the predicted x0 to [-clip_x0, clip_x0] before the step's mean.
            dtype: floating dtype of the chain.

        Shapes:
            returns.x0: `shape`.

        References:
            Ren et al., "Diffusion Policy Policy Optimization" (2024), Sec. 4 (std floor,
            last-K-step fine-tuning).
        """
        options = SamplerOptions(grad_last_k, std_floor, inpaint, record, clip_x0)
        step_gaussian = functools.partial(self._step_gaussian, clip_x0)
        return run_reverse_chain(
            denoiser, self.timesteps, step_gaussian, shape, cond, generator, options, dtype
        )
