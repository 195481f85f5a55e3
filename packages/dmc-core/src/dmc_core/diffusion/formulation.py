"""The interface every diffusion formulation offers, and a factory that builds one by name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from dmc_core.diffusion.ddim import DDIM
from dmc_core.diffusion.ddpm import DDPM
from dmc_core.diffusion.fm import FM
from dmc_core.diffusion.records import Denoiser, SampleResult
from dmc_core.diffusion.schedules import NoiseSchedule, make_betas
from dmc_core.diffusion.sm import SM, SM_SAMPLERS

__all__ = ["FORMULATIONS", "Formulation", "build_formulation"]

FORMULATIONS = ("ddim", "ddpm", "fm", "sm")
"""The names `build_formulation` knows."""


@runtime_checkable
class Formulation(Protocol):
    """What training and alignment code may rely on: DDPM, DDIM, SM and FM all provide it.

    Times are in the formulation's own units: long steps 1..T for DDPM/DDIM, float times in
    [0, 1] for SM/FM. `draw_times` draws training times in those units, `loss(t=...)` and `snr`
    take them; the denoiser gets them converted as `Denoiser` describes.
    """

    @property
    def name(self) -> str:
        """The formulation's name: "ddpm", "ddim", "sm" or "fm"."""
        ...

    @property
    def num_steps(self) -> int:
        """The number of reverse steps the sampler takes (what `grad_last_k` counts)."""
        ...

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
        """Per-sample regression loss, (B,); see `ChainSampler.loss` for the arguments."""
        ...

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
        """Run the reverse chain from N(0, I); see `ChainSampler.sample` for the arguments."""
        ...

    def draw_times(
        self, batch: int, generator: torch.Generator | None, device: torch.device | str
    ) -> Tensor:
        """Training times, (batch,), in the units `loss(t=...)` takes."""
        ...

    def step_gaussian(
        self,
        denoiser: Denoiser,
        index: int,
        z_t: Tensor,
        cond: Any,
        *,
        clip_x0: float | None = None,
    ) -> tuple[Tensor, float]:
        """Mean and std of reverse step `index`; see `ChainSampler.step_gaussian`."""
        ...

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio alpha^2 / sigma^2 at times t, (B,) float32, decreasing in t."""
        ...


def build_formulation(
    name: str,
    *,
    num_steps: int,
    schedule: str = "vp",
    sample_steps: int | None = None,
    eta: float = 0.0,
    sampler: str = "sde",
) -> Formulation:
    """Build the formulation called `name` ("ddpm", "ddim", "sm" or "fm").

    - ddpm: `DDPM` over `make_betas(schedule, num_steps)`;
    - ddim: `DDIM` over the same betas, `sample_steps` (default `num_steps`) steps and `eta`;
    - sm: `SM` with `sample_steps` (default `num_steps`) grid points and `sampler`;
    - fm: `FM` with `sample_steps` (default `num_steps`) Euler steps.

    Arguments a formulation has no use for are ignored (DDPM samples all `num_steps` steps), so
    that one config can carry them all; `sampler` is checked whichever the name, since a typo
    in it is a config error either way.

    Raises:
        ValueError: `name`, `sampler` or `schedule` is unknown (the message names the bad value
            and the known ones), or a step count or `eta` is out of range.
    """
    if name not in FORMULATIONS:
        raise ValueError(f"unknown formulation {name!r}; known: {', '.join(FORMULATIONS)}")
    if sampler not in SM_SAMPLERS:
        raise ValueError(f"unknown SM sampler {sampler!r}; known: {', '.join(SM_SAMPLERS)}")
    steps = num_steps if sample_steps is None else sample_steps
    if name == "sm":
        return SM(steps, sampler=sampler)
    if name == "fm":
        return FM(steps)
    noise_schedule = NoiseSchedule.from_betas(make_betas(schedule, num_steps))
    if name == "ddpm":
        return DDPM(noise_schedule)
    return DDIM(noise_schedule, steps, eta)
