"""Tasks behind one interface and registry (see `dmc_envs.tasks.base` and `.registry`)."""

from __future__ import annotations

from dmc_envs.tasks.base import (
    BehaviourDensity,
    CollectSpec,
    Dynamics,
    MissingPieceError,
    PlanReward,
    ReturnScale,
    Task,
    TorchDynamics,
    UniformBoxDensity,
)
from dmc_envs.tasks.registry import (
    FAMILY_MODULES,
    TaskFamily,
    build_task,
    families,
    task_for_dataset,
    task_names,
)

__all__ = [
    "FAMILY_MODULES",
    "BehaviourDensity",
    "CollectSpec",
    "Dynamics",
    "MissingPieceError",
    "PlanReward",
    "ReturnScale",
    "Task",
    "TaskFamily",
    "TorchDynamics",
    "UniformBoxDensity",
    "build_task",
    "families",
    "task_for_dataset",
    "task_names",
]
