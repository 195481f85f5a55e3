"""Critic checkpoints: weights in safetensors, the rebuild recipe in the YAML sidecar.

The sidecar's `config` holds `checkpoint_kind: dmc-critic`, the critic `kind` (`iql`), `obs_dim`,
`act_dim` and the resolved `spec`; `metadata` is free-form (training steps, reward factor, ...).
Writing and checking (atomic writes, SHA-256 pairing of the two files) are dmc-core's;
`load_recipe` rebuilds any module recorded this way (the baseline policies' checkpoints too).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from dmc_core.checkpoint import (
    check_state_fits,
    checkpoint_metadata,
    load_checkpoint,
    save_checkpoint,
)
from dmc_core.errors import CheckpointError
from dmc_core.models.normalizer import RangeNormalizer
from dmc_critic.described import Described
from dmc_critic.iql import IQLCritic
from dmc_critic.spec import critic_spec_from_dict

__all__ = [
    "CRITIC_CHECKPOINT_KIND",
    "critic_learned_from",
    "load_critic",
    "load_recipe",
    "save_critic",
]

CRITIC_CHECKPOINT_KIND = "dmc-critic"
M = TypeVar("M", bound=Described)


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

    def build(spec: Any, obs: RangeNormalizer, act: RangeNormalizer) -> IQLCritic:
        return IQLCritic(critic_spec_from_dict(spec, str(path)), obs, act)

    return load_recipe(path, CRITIC_CHECKPOINT_KIND, ("iql",), "critic", build, device)


def critic_learned_from(path: str | os.PathLike[str], critic: IQLCritic) -> str:
    """The dataset a critic counts as learned from when a stage pairs it with a model: the one
    its data extends (a `roll_out` dataset: `fit_critic` records `dataset_extends`), else its
    own `dataset`."""
    extends = checkpoint_metadata(path).get("dataset_extends")
    return str(extends) if extends else critic.spec.dataset


def load_recipe(
    path: str | os.PathLike[str],
    checkpoint_kind: str,
    kinds: tuple[str, ...],
    what: str,
    build: Callable[[Any, RangeNormalizer, RangeNormalizer], M],
    device: str = "cpu",
) -> M:
    """Rebuild a module whose sidecar records `checkpoint_kind`, a `kind` among `kinds`,
    `obs_dim`, `act_dim` and a `spec` (critics, policies): `build(spec, obs, act)` makes it
    around empty normalisers, which the weights then fill. In eval mode on `device`.

    Raises:
        CheckpointError: naming the file and `what` it should have held.
    """
    checkpoint = load_checkpoint(path, device="cpu")
    config = checkpoint.config
    if config.get("checkpoint_kind") != checkpoint_kind or config.get("kind") not in kinds:
        raise CheckpointError(f"{path}: not a dmc {what} checkpoint")
    try:
        obs_dim, act_dim = int(config["obs_dim"]), int(config["act_dim"])
        spec_values = config["spec"]
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: {what} sidecar lacks obs_dim, act_dim or spec") from None
    module = build(spec_values, RangeNormalizer.empty(obs_dim), RangeNormalizer.empty(act_dim))
    check_state_fits(path, module.state_dict(), checkpoint.tensors)
    module.load_state_dict(checkpoint.tensors)
    return module.to(device).eval()
