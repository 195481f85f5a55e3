"""dmc-core: the root of the dmc packages: config, runtime, the dataset contract, checkpoints.

Modules that need torch (`checkpoint`, `seeding`) are imported on first use, so that stages and
tools that never touch a network (dataset collection, config checks) start quickly.
"""

from __future__ import annotations

import importlib
from typing import Any

from dmc_core.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from dmc_core.config import BaseConfig, knob, load_stage_config, write_resolved_config
from dmc_core.data import TransitionDataset, read_dataset, write_dataset
from dmc_core.errors import CheckpointError, ConfigError, DatasetError, DmcError

_LAZY = {
    "Checkpoint": "dmc_core.checkpoint",
    "load_checkpoint": "dmc_core.checkpoint",
    "save_checkpoint": "dmc_core.checkpoint",
    "seed_everything": "dmc_core.seeding",
    "torch_generator": "dmc_core.seeding",
}

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dmc_core' has no attribute {name!r}")
