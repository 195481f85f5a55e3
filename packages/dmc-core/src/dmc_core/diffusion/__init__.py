"""Discrete-time diffusion formulations (DDPM, DDIM) with sampler hooks for reward alignment.

Samplers record each reverse step's Gaussian (`StepRecord`) so that policy-gradient alignment can
score the chain, can truncate back-propagation to the last K steps, floor the step std, and
in-paint known entries.
"""

from __future__ import annotations

from dmc_core.diffusion.ddim import DDIM, ddim_timesteps
from dmc_core.diffusion.ddpm import DDPM
from dmc_core.diffusion.records import Denoiser, SampleResult, StepRecord, gaussian_log_prob
from dmc_core.diffusion.schedules import (
    NoiseSchedule,
    cosine_betas,
    linear_betas,
    make_betas,
    vp_betas,
)

__all__ = [
    "DDIM",
    "DDPM",
    "Denoiser",
    "NoiseSchedule",
    "SampleResult",
    "StepRecord",
    "cosine_betas",
    "ddim_timesteps",
    "gaussian_log_prob",
    "linear_betas",
    "make_betas",
    "vp_betas",
]
