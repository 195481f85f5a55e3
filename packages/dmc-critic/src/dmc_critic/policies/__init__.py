"""Baseline policies on the same data as the diffusion models: behaviour cloning and IQL's own
policy (advantage-weighted regression on the IQL critic), one Gaussian policy family.

`build_policy(spec, dataset)` makes an untrained policy, `regression_loss` is the training loss
of either kind, `save_policy` / `load_policy` round-trip it through a checkpoint; the stage
`fit_policy` trains one.
"""

from __future__ import annotations

from dmc_critic.policies.awr import Advantage, advantage_weights, regression_loss
from dmc_critic.policies.checkpoints import (
    POLICY_CHECKPOINT_KIND,
    is_policy_checkpoint,
    load_policy,
    save_policy,
)
from dmc_critic.policies.gaussian import LOG_STD_RANGE, GaussianPolicy, build_policy
from dmc_critic.policies.spec import (
    POLICY_KINDS,
    PolicySpec,
    PolicyTrainSpec,
    policy_spec_from_dict,
)

__all__ = [
    "LOG_STD_RANGE",
    "POLICY_CHECKPOINT_KIND",
    "POLICY_KINDS",
    "Advantage",
    "GaussianPolicy",
    "PolicySpec",
    "PolicyTrainSpec",
    "advantage_weights",
    "build_policy",
    "is_policy_checkpoint",
    "load_policy",
    "policy_spec_from_dict",
    "regression_loss",
    "save_policy",
]
