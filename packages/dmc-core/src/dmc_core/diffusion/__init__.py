"""Diffusion formulations (DDPM, DDIM, SM, FM) with sampler hooks for reward alignment.

Samplers record each reverse step's Gaussian (`StepRecord`) so that policy-gradient alignment can
score the chain, can truncate back-propagation to the last K steps, floor the step std, and
in-paint known entries. Every formulation offers the `Formulation` interface; `build_formulation`
makes one by name.
"""

from __future__ import annotations

from dmc_core.diffusion.ddim import DDIM, ddim_timesteps
from dmc_core.diffusion.ddpm import DDPM
from dmc_core.diffusion.fm import FM
from dmc_core.diffusion.formulation import FORMULATIONS, Formulation, build_formulation
from dmc_core.diffusion.records import Denoiser, SampleResult, StepRecord, gaussian_log_prob
from dmc_core.diffusion.schedules import (
    NoiseSchedule,
    cosine_betas,
    linear_betas,
    make_betas,
    vp_betas,
)
from dmc_core.diffusion.sm import SM, SM_SAMPLERS

__all__ = [
    "DDIM",
    "DDPM",
    "FM",
    "FORMULATIONS",
    "SM",
    "SM_SAMPLERS",
    "Denoiser",
    "Formulation",
    "NoiseSchedule",
    "SampleResult",
    "StepRecord",
    "build_formulation",
    "cosine_betas",
    "ddim_timesteps",
    "gaussian_log_prob",
    "linear_betas",
    "make_betas",
    "vp_betas",
]
