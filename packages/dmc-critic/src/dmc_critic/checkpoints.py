"""Critic checkpoints: weights in safetensors, the rebuild recipe in the YAML sidecar.

The sidecar's `config` holds `checkpoint_kind: dmc-critic`, the critic `kind` (`iql`), `obs_dim`,
`act_dim` and the resolved `spec`; `metadata` is free-form (training steps, reward factor, ...).
Writing and checking (atomic writes, SHA-256 pairing of the two files) are dmc-core's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dmc_core.checkpoint import check_state_fits, load_checkpoint, save_checkpoint
from dmc_core.errors import CheckpointError
from dmc_core.models.normalizer import RangeNormalizer
from dmc_critic.iql import IQLCritic
from dmc_critic.spec import critic_spec_from_dict

__all__ = ["CRITIC_CHECKPOINT_KIND", "load_critic", "save_critic"]

CRITIC_CHECKPOINT_KIND = "dmc-critic"


def save_critic(
    path: str | os.PathLike[str], critic: IQLCritic, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write the critic's weights (targets and normalisers included) and its rebuild recipe."""
    config = {"checkpoint_kind": CRITIC_CHECKPOINT_KIND, **critic.describe()}
    return save_checkpoint(path, critic.state_dict(), config, metadata)


def load_critic(path: str | os.PathLike[str], device: str = "cpu") -> IQLCritic:
    """Rebuild a critic saved by `save_critic`, in eval mode on `device`.

    Raises:
        CheckpointError: the file is missing, corrupted, not a critic, or its weights do not fit
            the recorded spec (the message names the file).
        ConfigError: the recorded spec is invalid (naming the file and the key).
    """
    checkpoint = load_checkpoint(path, device="cpu")
    config = checkpoint.config
    if config.get("checkpoint_kind") != CRITIC_CHECKPOINT_KIND or config.get("kind") != "iql":
        raise CheckpointError(f"{path}: not a dmc critic checkpoint")
    try:
        obs_dim, act_dim = int(config["obs_dim"]), int(config["act_dim"])
        spec_values = config["spec"]
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: critic sidecar lacks obs_dim, act_dim or spec") from None
    spec = critic_spec_from_dict(spec_values, str(path))
    critic = IQLCritic(spec, RangeNormalizer.empty(obs_dim), RangeNormalizer.empty(act_dim))
    check_state_fits(path, critic.state_dict(), checkpoint.tensors)
    critic.load_state_dict(checkpoint.tensors)
    return critic.to(device).eval()
