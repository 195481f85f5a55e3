"""Stage `behaviour_datasets`: a task's D4RL-style datasets from its behaviour agent.

    python -m dmc_envs behaviour_datasets --name hopper --out data/datasets/hopper

From the task's behaviour actors (the entry's `agents` folder: the actors committed under
`pipelines/behaviour/<task>`, or `data/behaviour/<task>` made by `train_behaviour@<task>`), it
writes, into `--out`:
- `medium.hdf5`: `transitions` rows of the medium actor's sampled actions (D4RL's medium);
- `expert.hdf5`: the same from the expert actor (collected from seed + 1, other starts);
- `medium_expert.hdf5`: medium then expert, row for row (D4RL's stitched file);
each with `<name>.stats.json` (returns, normalised scores and D4RL's published level of the same
dataset, `dmc_envs.behaviour.levels`), plus `behaviour_datasets.md` (the three beside D4RL's)
and `behaviour_datasets.config.yaml`. They record their actors (path and sha256), so the
policies' coherency (paper Eq. 16) is computable on them. D4RL's fourth, medium-replay, is the
agent's replay buffer: `train_behaviour` writes it, where the buffer is.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np

from dmc_core.atomic import atomic_write_text
from dmc_core.check_params import BEHAVIOUR_KINDS
from dmc_core.checkpoint import load_checkpoint
from dmc_core.cli import Arg, Stage
from dmc_core.config import entry, write_resolved_config
from dmc_core.data import TransitionDataset
from dmc_envs.behaviour.config import BehaviourDatasetsConfig, LevelsSpec
from dmc_envs.behaviour.density import mixture_spec
from dmc_envs.behaviour.levels import agent_provenance, write_with_level
from dmc_envs.tasks import CollectSpec, Task, build_task

__all__ = ["DATASETS_STAGE", "KINDS", "behaviour_datasets"]

log = logging.getLogger(__name__)

#: The datasets the stage writes, in order.
KINDS = BEHAVIOUR_KINDS


def behaviour_datasets(config: BehaviourDatasetsConfig, args: argparse.Namespace) -> None:
    """Write the four datasets of task `args.name` (see the module docstring)."""
    spec = entry(config.tasks, args.name, "behaviour_datasets.tasks", args.params)
    task = build_task(args.name, {})
    agents, out = Path(spec.agents), Path(args.out)
    made = {
        "medium": _collected(task, spec, agents / "medium.safetensors", spec.seed, "medium"),
        "expert": _collected(task, spec, agents / "expert.safetensors", spec.seed + 1, "expert"),
    }
    made["medium_expert"] = stitch(made["medium"], made["expert"], "medium_expert")
    rows = []
    for kind in KINDS:
        stats = write_with_level(out / f"{kind}.hdf5", made[kind], task)
        rows.append((kind, stats))
    write_resolved_config(config, out / "behaviour_datasets.config.yaml", "behaviour_datasets")
    table = levels_table(task, rows)
    atomic_write_text(out / "behaviour_datasets.md", table)
    print(table)


def _collected(
    task: Task, spec: LevelsSpec, actor: Path, seed: int, kind: str
) -> TransitionDataset:
    """`spec.transitions` rows of the actor's sampled actions."""
    log.info("collecting %s of %s with %s", kind, task.describe(), actor)
    options = {"actor": str(actor)}
    collected, recipe = task.collect(CollectSpec("actor", 0, spec.transitions, seed, options))
    about = load_checkpoint(actor).metadata
    attrs = agent_provenance(task, kind, seed, recipe, about, "behaviour_datasets")
    return TransitionDataset(**collected.arrays(), attrs=attrs)


def stitch(first: TransitionDataset, second: TransitionDataset, kind: str) -> TransitionDataset:
    """`first`'s rows then `second`'s (D4RL's stitch_dataset; both end on an episode end),
    recording the mixture of their behaviour densities weighted by their rows."""
    arrays = {k: np.concatenate([v, second.arrays()[k]]) for k, v in first.arrays().items()}
    specs = [d.attrs["behavior_policy_spec"] for d in (first, second)]
    attrs = {
        **first.attrs,
        "dataset_kind": kind,
        "behavior_policy": (
            f"{first.attrs['dataset_kind']} ({len(first)} rows) then "
            f"{second.attrs['dataset_kind']} ({len(second)} rows)"
        ),
        "behavior_policy_spec": mixture_spec(specs, [len(first), len(second)]),
        "parts": [first.attrs["dataset_kind"], second.attrs["dataset_kind"]],
    }
    for key in ("checkpoint_step", "eval_normalized_return"):
        attrs[key] = [first.attrs[key], second.attrs[key]]
    return TransitionDataset(**arrays, attrs=attrs)


def levels_table(task: Task, rows: list[tuple[str, dict[str, Any]]]) -> str:
    """The datasets' levels beside D4RL's, as Markdown."""
    lines = [
        f"# {task.env_id}: datasets from the behaviour agent, beside D4RL's",
        "",
        "| dataset | transitions | episodes | normalised return (mean ± std) | D4RL's level |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, stats in rows:
        level = stats["d4rl_level"]
        theirs = "none published" if level is None else f"{level['normalized_score']:.1f}"
        lines.append(
            f"| {kind} | {stats['transitions']} | {stats['episodes']} | "
            f"{stats['normalized_score']:.1f} ± {stats['normalized_score_std']:.1f} | {theirs} |"
        )
    return "\n".join(lines) + "\n"


DATASETS_STAGE = Stage(
    name="behaviour_datasets",
    summary="Collect a task's medium, expert and medium-expert datasets from its actors.",
    schema=BehaviourDatasetsConfig,
    args=(
        Arg("--name", "entry of behaviour_datasets.tasks (a task: hopper, ...)"),
        Arg("--out", "the task's dataset folder (data/datasets/<task>)"),
    ),
    run=behaviour_datasets,
)
