"""Policy checkpoints: weights in safetensors, the rebuild recipe in the YAML sidecar.

The sidecar's `config` holds `checkpoint_kind: dmc-policy`, the policy's `kind` (`bc` or `awr`),
`obs_dim`, `act_dim` and the resolved `spec`, like a critic's. `fit_policy` writes it where the
diffusion models live (`data/models/<name>/model.safetensors`), so that `evaluate` finds it
there and tells it apart by this kind.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dmc_core.checkpoint import checkpoint_kind, save_checkpoint
from dmc_core.models.normalizer import RangeNormalizer
from dmc_critic.checkpoints import load_recipe
from dmc_critic.policies.gaussian import GaussianPolicy
from dmc_critic.policies.spec import POLICY_KINDS, policy_spec_from_dict

__all__ = ["POLICY_CHECKPOINT_KIND", "is_policy_checkpoint", "load_policy", "save_policy"]

POLICY_CHECKPOINT_KIND = "dmc-policy"


def save_policy(
    path: str | os.PathLike[str], policy: GaussianPolicy, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write the policy's weights (normalisers included) and its rebuild recipe."""
    config = {"checkpoint_kind": POLICY_CHECKPOINT_KIND, **policy.describe()}
    return save_checkpoint(path, policy.state_dict(), config, metadata)


def is_policy_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether a checkpoint's sidecar says it holds a baseline policy."""
    return checkpoint_kind(path) == POLICY_CHECKPOINT_KIND


def load_policy(path: str | os.PathLike[str], device: str = "cpu") -> GaussianPolicy:
    """Rebuild a policy saved by `save_policy`, in eval mode on `device`.

    Raises:
        CheckpointError: the file is missing, corrupted, not a policy, or its weights do not fit
            the recorded spec (the message names the file).
        ConfigError: the recorded spec is invalid (naming the file and the key).
    """

    def build(spec: Any, obs: RangeNormalizer, act: RangeNormalizer) -> GaussianPolicy:
        return GaussianPolicy(policy_spec_from_dict(spec, str(path)), obs, act)

    return load_recipe(path, POLICY_CHECKPOINT_KIND, POLICY_KINDS, "policy", build, device)
