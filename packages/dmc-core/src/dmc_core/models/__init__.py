"""Foundation models for control (spec §2): Diffuser, Decision Diffuser, Diffusion Policy, and
EDA's bottleneck diffusion model (BDM, spec §4.7).

`build_model(spec, dataset)` makes an untrained model whose normalisers are fitted to a dataset;
`save_model` / `load_model` round-trip a model through a safetensors checkpoint whose sidecar
records the spec, so that the checkpoint alone rebuilds it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dmc_core.checkpoint import check_state_fits, load_checkpoint, save_checkpoint
from dmc_core.data import TransitionDataset
from dmc_core.errors import CheckpointError
from dmc_core.models.base import Conditioning, ControlModel, scored_actions
from dmc_core.models.bdm import BottleneckDiffusionModel
from dmc_core.models.decision_diffuser import DecisionDiffuser
from dmc_core.models.diffuser import Diffuser
from dmc_core.models.diffusion_policy import DiffusionPolicy
from dmc_core.models.inpainting import INPAINTING_MODES, prefix_mask, training_mask
from dmc_core.models.normalizer import RangeNormalizer
from dmc_core.models.spec import (
    MODEL_KINDS,
    FormulationSpec,
    ModelSpec,
    TrainSpec,
    spec_from_dict,
)
from dmc_core.models.windows import Window, WindowSampler

__all__ = [
    "INPAINTING_MODES",
    "MODELS",
    "MODEL_KINDS",
    "BottleneckDiffusionModel",
    "Conditioning",
    "ControlModel",
    "DecisionDiffuser",
    "Diffuser",
    "DiffusionPolicy",
    "FormulationSpec",
    "ModelSpec",
    "RangeNormalizer",
    "TrainSpec",
    "Window",
    "WindowSampler",
    "build_model",
    "load_model",
    "prefix_mask",
    "save_model",
    "scored_actions",
    "spec_from_dict",
    "training_mask",
]

MODELS: dict[str, type[ControlModel]] = {
    cls.kind: cls for cls in (Diffuser, DecisionDiffuser, DiffusionPolicy, BottleneckDiffusionModel)
}
MODEL_CHECKPOINT_KIND = "dmc-control-model"


def build_model(spec: ModelSpec, dataset: TransitionDataset) -> ControlModel:
    """An untrained model of `spec.kind`, its normalisers fitted to the dataset's ranges."""
    obs = RangeNormalizer.fit(np.concatenate([dataset.observations, dataset.next_observations]))
    act = RangeNormalizer.fit(dataset.actions)
    return MODELS[spec.kind](spec, obs, act)


def save_model(
    path: str | os.PathLike[str], model: ControlModel, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write the model's weights and its rebuild recipe (see `load_model`)."""
    config = {"checkpoint_kind": MODEL_CHECKPOINT_KIND, **model.describe()}
    return save_checkpoint(path, model.state_dict(), config, metadata)


def load_model(path: str | os.PathLike[str], device: str = "cpu") -> ControlModel:
    """Rebuild a model saved by `save_model`; raise `CheckpointError` if that is impossible."""
    checkpoint = load_checkpoint(path, device=device)
    config = checkpoint.config
    if config.get("checkpoint_kind") != MODEL_CHECKPOINT_KIND or config.get("kind") not in MODELS:
        raise CheckpointError(f"{path}: not a dmc control-model checkpoint")
    spec = spec_from_dict(config["spec"], str(path))
    model = MODELS[config["kind"]](
        spec,
        RangeNormalizer.empty(int(config["obs_dim"])),
        RangeNormalizer.empty(int(config["act_dim"])),
    )
    check_state_fits(path, model.state_dict(), checkpoint.tensors)
    model.load_state_dict(checkpoint.tensors)
    return model.to(device)
