"""What the formulations share: the reverse-chain loop and the masked per-sample regression loss.

A formulation supplies its timesteps (descending, in its own units: integer steps for DDPM/DDIM,
continuous times for SM/FM), how a time becomes the denoiser's time input, and a per-step
Gaussian: given the step's index, z_t and the network's output, the mean and std of the next
state. Gradient truncation, in-painting and recording live here, once for all of them.
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

__all__ = [
    "ChainSampler",
    "NetworkTime",
    "SamplerOptions",
    "StepGaussian",
    "check_loss_inputs",
    "masked_mse",
    "per_sample",
    "predict_x0",
    "run_reverse_chain",
    "step_times",
]

StepGaussian = Callable[[int, Tensor, Tensor], tuple[Tensor, float]]
"""(index in the timestep list, z_t, the network's output) -> (mean, std) of the next state."""

NetworkTime = Callable[[Tensor], Tensor]
"""(B,) times in the formulation's units -> (B,) the time input the denoiser gets."""


def step_times(t: Tensor) -> Tensor:
    """The discrete formulations' network time: the integer step itself, as a long tensor."""
    return t.long()


def per_sample(coef: Tensor, ndim: int) -> Tensor:
    """Reshape (B,) coefficients to (B, 1, ..., 1) so they broadcast over a (B, ...) tensor."""
    return coef.reshape(coef.shape[0], *([1] * (ndim - 1)))


def masked_mse(
    prediction: Tensor, target: Tensor, mask: Tensor | None, weights: Tensor | None
) -> Tensor:
    """Per-sample mean of the (weighted) squared error over the entries `mask` leaves unknown.

    `weights` scale the squared errors element-wise before the mean; entries where `mask` is True
    (known, in-painted) are left out of both the sum and the count. A sample with no unknown entry
    has nothing to learn: its loss is 0, not NaN.

    Shapes:
        prediction, target: (B, ...); mask: bool, broadcastable to them; weights: broadcastable.
        returns: (B,).
    """
    batch = target.shape[0]
    error = (prediction - target) ** 2
    if weights is not None:
        error = error * weights
    if mask is None:
        return error.reshape(batch, -1).mean(dim=1)
    free = (~mask).to(error.dtype).expand_as(error).reshape(batch, -1)
    return (error.reshape(batch, -1) * free).sum(dim=1) / free.sum(dim=1).clamp(min=1.0)


def check_loss_inputs(x0: Tensor, t: Tensor | None, noise: Tensor | None) -> None:
    """Raise ValueError unless a given `t` is (B,) and a given `noise` has x0's shape."""
    if t is not None and tuple(t.shape) != (x0.shape[0],):
        raise ValueError(f"t must have shape ({x0.shape[0]},), got {tuple(t.shape)}")
    if noise is not None and noise.shape != x0.shape:
        raise ValueError(f"noise must have x0's shape {tuple(x0.shape)}, got {tuple(noise.shape)}")


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
    t: float,
    index: int,
    z_t: Tensor,
    cond: Any,
    step_gaussian: StepGaussian,
    network_time: NetworkTime,
    generator: torch.Generator,
    options: SamplerOptions,
) -> tuple[Tensor, StepRecord | None]:
    # torch.full keeps an int label long and a float label floating; network_time converts.
    t_batch = network_time(torch.full((z_t.shape[0],), t, device=z_t.device))
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
    timesteps: Sequence[float],
    step_gaussian: StepGaussian,
    shape: Sequence[int],
    cond: Any,
    generator: torch.Generator,
    options: SamplerOptions,
    dtype: torch.dtype = torch.float32,
    network_time: NetworkTime = step_times,
) -> SampleResult:
    """Draw z_T ~ N(0, I) on the generator's device and run the reverse chain over `timesteps`.

    `timesteps` are the times the steps leave, in the formulation's units; `network_time` turns
    a batch of them into the denoiser's time input (default: integer steps, as long).
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
                denoiser, t, index, z, cond, step_gaussian, network_time, generator, options
            )
        if record is not None:
            steps.append(record)
    return SampleResult(x0=z, steps=tuple(steps))


class ChainSampler:
    """The `loss` and `sample` methods shared by the formulations.

    A subclass provides `timesteps` (descending, the times the chain leaves, in its own units) and
    `_step_gaussian(clip_x0, index, z_t, output) -> (mean, std)`, and overrides `network_time`
    if its denoiser does not take integer steps; the loop above does the rest.
    """

    timesteps: Sequence[float]

    def draw_times(
        self, batch: int, generator: torch.Generator | None, device: torch.device | str
    ) -> Tensor:
        """Training times in the formulation's units; see the subclasses."""
        raise NotImplementedError

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """The forward process z_t ~ q(z_t | x0) with the given noise (validates `t`)."""
        raise NotImplementedError

    def regression_target(self, x0: Tensor, noise: Tensor) -> Tensor:
        """What the network learns to output: the noise (eps-prediction) unless overridden."""
        return noise

    def loss(
        self,
        denoiser: Denoiser,
        x0: Tensor,
        cond: Any,
        generator: torch.Generator | None = None,
        mask: Tensor | None = None,
        weights: Tensor | None = None,
        *,
        t: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Per-sample regression loss ||net(z_t, t) - target||^2 at a drawn (or given) time.

        The time is drawn by `draw_times` (DDPM/DDIM: integer steps 1..T; SM: U(t_eps, 1);
        FM: U(0, 1)); the target is `regression_target` (eps, or FM's velocity eps - x0). With
        `mask` (True = known entry), the known entries of z_t are set to x0's values, as the
        sampler in-paints them, and are left out of the loss: the mean runs over the unknown
        entries only. `weights` scale the squared errors element-wise (e.g. per dimension)
        before that mean. Callers weight or average the returned per-sample values.

        `t` (in the formulation's units, e.g. from `draw_times`) and `noise` replace the random
        draws when given, so that two models or two samples can be scored at the same t and
        noise (Diffusion-DPO); the generator then draws only what is not given.

        Shapes:
            x0: (B, ...); mask: bool, x0's shape; weights: broadcastable to x0.
            t: (B,); noise: x0's shape.
            returns: (B,).

        Raises:
            ValueError: `t` or `noise` has the wrong shape, or `t` is outside the formulation's
                range or of the wrong kind (see the subclass's `q_sample`).

        References:
            Ho et al. (2020), Eq. 5 (L_simple); Song et al. (2021), Eq. 7 with
            lambda(t) = sigma(t)^2; Lipman et al. (2023), Eq. 23; Janner et al., "Planning with
            Diffusion" (2022), Sec. 3 (in-painting conditioning); Wallace et al. (2023), Eq. 14
            (shared t and noise).
        """
        check_loss_inputs(x0, t, noise)
        if t is None:
            t = self.draw_times(x0.shape[0], generator, x0.device)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        z_t = self.q_sample(x0, t, noise)
        if mask is not None:
            z_t = torch.where(mask, x0, z_t)
        prediction = denoiser(z_t, self.network_time(t), cond)
        return masked_mse(prediction, self.regression_target(x0, noise), mask, weights)

    def network_time(self, t: Tensor) -> Tensor:
        """The denoiser's time input for (B,) times in this formulation's units (see `Denoiser`).

        Integer steps, as a long tensor, unless a subclass says otherwise.
        """
        return step_times(t)

    def _step_gaussian(
        self, clip_x0: float | None, index: int, z_t: Tensor, output: Tensor
    ) -> tuple[Tensor, float]:
        raise NotImplementedError

    def step_gaussian(
        self,
        denoiser: Denoiser,
        index: int,
        z_t: Tensor,
        cond: Any,
        *,
        clip_x0: float | None = None,
    ) -> tuple[Tensor, float]:
        """The mean and std of reverse step `index` (0 = noisiest) from `z_t`, as `sample` draws it.

        Policy-gradient alignment re-scores recorded steps under a changed network with this:
        `gaussian_log_prob(record.z_prev, mean, max(std, floor))` is the step's log-probability
        (DDPO, DPPO). The std is the formulation's, before any floor.

        Shapes:
            z_t: (B, ...); returns mean (B, ...).
        """
        t = self.timesteps[index]
        t_batch = self.network_time(torch.full((z_t.shape[0],), t, device=z_t.device))
        return self._step_gaussian(clip_x0, index, z_t, denoiser(z_t, t_batch, cond))

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
            denoiser: the network (it predicts the formulation's regression target).
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
            denoiser,
            self.timesteps,
            step_gaussian,
            shape,
            cond,
            generator,
            options,
            dtype,
            self.network_time,
        )
