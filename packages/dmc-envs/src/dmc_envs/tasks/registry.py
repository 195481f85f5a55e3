"""The task registry: task names and gymnasium ids -> `Task` objects, one family per module.

A family module (`dmc_envs.tasks.nav1d`, `dmc_envs.tasks.mujoco`, ...) defines `FAMILY`, a
`TaskFamily`. Adding a benchmark is one such module and one line in `FAMILY_MODULES`; no stage
changes. Modules are imported on first use, and a family whose simulator is an optional extra
imports it only when a task of it is built, so the registry works without every extra installed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dmc_core.errors import ConfigError
from dmc_envs.tasks.base import ReturnScale, Task

__all__ = [
    "FAMILY_MODULES",
    "TaskFamily",
    "build_task",
    "families",
    "task_for_dataset",
    "task_names",
]

#: Every family of tasks, by the module that defines its `FAMILY`.
FAMILY_MODULES = (
    "dmc_envs.tasks.nav1d",
    "dmc_envs.tasks.mujoco",
    "dmc_envs.tasks.metaworld",
    "dmc_envs.tasks.pusht",
)


@dataclass(frozen=True)
class TaskFamily:
    """Tasks that share a simulator and a module.

    `env_ids` maps each task name to the gymnasium id its datasets record; `build(name,
    env_kwargs)` makes the task; `extra` names the dmc-envs extra that installs the simulator
    (empty: none needed)."""

    name: str
    env_ids: Mapping[str, str]
    build: Callable[[str, Mapping[str, Any]], Task]
    extra: str = ""
    default_kwargs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def families() -> list[TaskFamily]:
    """Every registered family, in `FAMILY_MODULES` order."""
    return [importlib.import_module(module).FAMILY for module in FAMILY_MODULES]


def task_names() -> list[str]:
    """Every registered task name."""
    return [name for family in families() for name in family.env_ids]


def build_task(name: str, env_kwargs: Mapping[str, Any] | None = None) -> Task:
    """The task registered as `name`, built with `env_kwargs`.

    Raises:
        ConfigError: no task has that name, or its simulator (an extra) is not installed.
    """
    for family in families():
        if name in family.env_ids:
            return _built(family, name, env_kwargs or {})
    raise ConfigError(f"unknown task '{name}' (registered tasks: {', '.join(task_names())})")


def task_for_dataset(attrs: Mapping[str, Any], source: str) -> Task:
    """The task a dataset records (its `env_id` and `env_kwargs`), with the reference returns
    the dataset records (`ref_min_score`, `ref_max_score`, as D4RL names them) if it has them.

    Raises:
        ConfigError: the dataset records no env id, or one that no task is registered for.
    """
    env_id = attrs.get("env_id")
    if env_id is None:
        raise ConfigError(f"{source}: the dataset records no 'env_id' attribute (no task)")
    for family in families():
        for name, registered in family.env_ids.items():
            if registered == env_id:
                task = _built(family, name, attrs.get("env_kwargs") or {})
                return _with_recorded_references(task, attrs)
    known = ", ".join(sorted(i for f in families() for i in f.env_ids.values()))
    raise ConfigError(f"{source}: env_id '{env_id}' is no registered task's (known: {known})")


def _built(family: TaskFamily, name: str, env_kwargs: Mapping[str, Any]) -> Task:
    try:
        return family.build(name, env_kwargs)
    except ModuleNotFoundError as err:
        hint = f"pip install -e 'packages/dmc-envs[{family.extra}]'" if family.extra else ""
        raise ConfigError(
            f"task '{name}' needs the module '{err.name}', which is not installed ({hint})"
        ) from None


def _with_recorded_references(task: Task, attrs: Mapping[str, Any]) -> Task:
    if "ref_min_score" in attrs and "ref_max_score" in attrs:
        source = str(attrs.get("ref_score_source", "the dataset's ref_min_score/ref_max_score"))
        task.returns = ReturnScale(
            float(attrs["ref_min_score"]), float(attrs["ref_max_score"]), source
        )
    return task
