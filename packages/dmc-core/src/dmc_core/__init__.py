"""dmc-core: the root of the dmc packages: config, runtime, the dataset contract, checkpoints."""

from __future__ import annotations

from dmc_core.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from dmc_core.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from dmc_core.config import BaseConfig, knob, load_stage_config, write_resolved_config
from dmc_core.data import TransitionDataset, read_dataset, write_dataset
from dmc_core.errors import CheckpointError, ConfigError, DatasetError, DmcError
from dmc_core.seeding import seed_everything, torch_generator

__all__ = [
    "BaseConfig",
    "Checkpoint",
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "DmcError",
    "TransitionDataset",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "knob",
    "load_checkpoint",
    "load_stage_config",
    "read_dataset",
    "save_checkpoint",
    "seed_everything",
    "torch_generator",
    "write_dataset",
    "write_resolved_config",
]
__version__ = "0.1.0"
