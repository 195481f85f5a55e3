"""The alignment methods, one file each: `build_method(context)` makes the pass's method."""

from __future__ import annotations

from collections.abc import Callable

from dmc_align.methods.base import (
    AlignContext,
    CollapseError,
    Method,
    standardise_per_condition,
)
from dmc_align.methods.dpo import DPO, diffusion_dpo_loss, min_snr_weights
from dmc_align.methods.eda import EDA, eda_loss, eda_targets
from dmc_align.methods.ppo import PPO, ppo_surrogate
from dmc_align.methods.qvpg import QVPG, CreditScaledDenoiser, q_policy_loss
from dmc_align.methods.sft import SFT, foundation_nll, top_per_condition

__all__ = [
    "DPO",
    "EDA",
    "METHOD_CLASSES",
    "PPO",
    "QVPG",
    "SFT",
    "AlignContext",
    "CollapseError",
    "CreditScaledDenoiser",
    "Method",
    "build_method",
    "diffusion_dpo_loss",
    "eda_loss",
    "eda_targets",
    "foundation_nll",
    "min_snr_weights",
    "ppo_surrogate",
    "q_policy_loss",
    "standardise_per_condition",
    "top_per_condition",
]

METHOD_CLASSES: dict[str, Callable[[AlignContext], Method]] = {
    "ppo": PPO,
    "qvpg": QVPG,
    "dpo": DPO,
    "sft": SFT,
    "eda": EDA,
}


def build_method(context: AlignContext) -> Method:
    """The method `context.spec.method` names."""
    return METHOD_CLASSES[context.spec.method](context)
