"""D4RL's published dataset levels: the normalised mean episode return of each -v2 locomotion
dataset itself (the data's quality, not an algorithm's score), beside which the stats of the
datasets made here are shown.

The raw mean returns were printed by Decision Transformer's D4RL download script (its output,
per dataset: "Trajectory returns: mean = ..."; whole episodes only) and listed in a gymnasium
port of Decision Transformer ("reward statistics of the offline datasets, provided by d4rl");
medium and expert agree between the two, medium-replay is in the first only. They are
normalised here with d4rl/infos.py's REF_MIN_SCORE / REF_MAX_SCORE (the tasks' references).
No published figure was found for medium-expert (D4RL's stitch of the medium and expert files),
so it has none. D4RL's own definitions: medium, an agent trained to about a third of the
expert's performance; medium-replay, its replay buffer up to then (D4RL's wiki, Tasks page).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmc_core.atomic import atomic_write_text
from dmc_core.data import TransitionDataset, write_dataset
from dmc_envs.statistics import dataset_statistics
from dmc_envs.tasks import Task

__all__ = ["D4RL_LEVELS", "D4RLLevel", "agent_provenance", "d4rl_level", "write_with_level"]

log = logging.getLogger(__name__)

_SOURCE = (
    "mean episode return of D4RL's {name} as printed by Decision Transformer's D4RL download "
    "script, normalised with d4rl/infos.py's references"
)


@dataclass(frozen=True)
class D4RLLevel:
    """One D4RL dataset's level: its raw mean episode return and that return normalised."""

    name: str
    return_mean: float
    normalized_score: float

    @property
    def source(self) -> str:
        """Where the figure comes from."""
        return _SOURCE.format(name=self.name)


def _level(name: str, return_mean: float, low: float, high: float) -> D4RLLevel:
    return D4RLLevel(name, return_mean, 100.0 * (return_mean - low) / (high - low))


_HOPPER = (-20.272305, 3234.3)
_HALFCHEETAH = (-280.178953, 12135.0)
_WALKER2D = (1.629008, 4592.3)

#: (task, dataset kind) -> D4RL's level; the kinds are this project's dataset names.
D4RL_LEVELS: dict[tuple[str, str], D4RLLevel] = {
    ("hopper", "medium"): _level("hopper-medium-v2", 1422.06, *_HOPPER),
    ("hopper", "medium_replay"): _level("hopper-medium-replay-v2", 467.30, *_HOPPER),
    ("hopper", "expert"): _level("hopper-expert-v2", 3511.36, *_HOPPER),
    ("halfcheetah", "medium"): _level("halfcheetah-medium-v2", 4770.33, *_HALFCHEETAH),
    ("halfcheetah", "medium_replay"): _level(
        "halfcheetah-medium-replay-v2", 3093.29, *_HALFCHEETAH
    ),
    ("halfcheetah", "expert"): _level("halfcheetah-expert-v2", 10656.43, *_HALFCHEETAH),
    ("walker2d", "medium"): _level("walker2d-medium-v2", 2852.09, *_WALKER2D),
    ("walker2d", "medium_replay"): _level("walker2d-medium-replay-v2", 682.70, *_WALKER2D),
    ("walker2d", "expert"): _level("walker2d-expert-v2", 4920.51, *_WALKER2D),
}


def d4rl_level(task: str, kind: str) -> D4RLLevel | None:
    """D4RL's level of the dataset `kind` of `task`, if one is published."""
    return D4RL_LEVELS.get((task, kind))


def agent_provenance(
    task: Task, kind: str, seed: int, recipe: dict[str, Any], agent: dict[str, Any], stage: str
) -> dict[str, Any]:
    """The attributes of a dataset of kind `kind` made from a behaviour agent's data by
    `stage`: the task's, the recipe's, and what the agent's file records of it."""
    keys = (
        "agent",
        "checkpoint_step",
        "eval_normalized_return",
        "eval_sampled_normalized_return",
        "eval_return",
    )
    return {
        **task.provenance(),
        "task": task.name,
        "dataset_kind": kind,
        **recipe,
        "seed": seed,
        "collected_by": f"dmc_envs {stage}",
        **{key: agent[key] for key in keys if key in agent},
        "agent_seed": agent.get("seed"),
    }


def write_with_level(path: Path, dataset: TransitionDataset, task: Task) -> dict[str, Any]:
    """Write the dataset and `<name>.stats.json`: its returns beside D4RL's level of the same
    dataset kind (null where none is published). Returns the stats."""
    write_dataset(path, dataset)
    stats = dataset_statistics(dataset, task.returns)
    level = d4rl_level(task.name, dataset.attrs["dataset_kind"])
    stats["d4rl_level"] = None
    if level is not None:
        stats["d4rl_level"] = {
            "dataset": level.name,
            "normalized_score": level.normalized_score,
            "source": level.source,
        }
    atomic_write_text(path.with_suffix(".stats.json"), json.dumps(stats, indent=2) + "\n")
    log.info("wrote %s: %d rows, normalised %.1f", path, len(dataset), stats["normalized_score"])
    return stats
