"""Stage `roll_out`: a dataset extended by episodes of a trained model, for a critic to learn from.

    python -m dmc_envs roll_out --name ph-policy \
        --model data/models/policy/model.safetensors \
        --dataset data/datasets/pusht-keypoints/ph.hdf5 \
        --out data/datasets/pusht-keypoints/ph-policy.hdf5

The entry `roll_out.datasets.<name>` names a model and the dataset it learned from. The model
plays `episodes` episodes of that dataset's task with one sample per decision, so the episodes
hold its own spread of choices and what followed each; a critic of the output (a
`fit_critic.critics` entry with `dataset: <name>`) learns which of the model's choices pay, which
offline data of one expert cannot tell it (README, "PushT"). The output holds the dataset's
rows, then the episodes' (episode-major), with the dataset's provenance plus `extends` (the
dataset's name, which the stages compare with a model's) and `rollouts` (the entry and what its
episodes scored); `<name>.stats.json` gives both parts' returns and success rates.

Episodes are played `batch` at a time through the task's vector environment, batch b reset with
seed + b * batch (so episode k has seed + k). Every finished batch is kept in
`<out>.parts/` (or under `$DMC_RESUME_ROOT`, as the training stages' snapshots:
`dmc_core.training.resume`), one atomic file each, under a record of the entry and the model's
checksum; a killed run started again with the same entry and model plays only the batches
missing, other settings or weights play all again, and the folder is removed once the output
is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dmc_core.atomic import atomic_write_text
from dmc_core.checkpoint import file_sha256
from dmc_core.cli import Arg, Stage
from dmc_core.config import BaseConfig, entry, knob, write_resolved_config
from dmc_core.data import TransitionDataset, concatenate_datasets, read_dataset, write_dataset
from dmc_core.errors import ConfigError
from dmc_core.models import ControlModel, load_model
from dmc_core.training import choose_device
from dmc_core.training.resume import keyed_parts_directory
from dmc_envs.evaluation.episodes import Selection, roll_out
from dmc_envs.evaluation.proposers import ModelProposer
from dmc_envs.import_dataset import clip_into_bounds
from dmc_envs.statistics import dataset_statistics
from dmc_envs.tasks import Task, task_for_dataset

__all__ = ["ROLL_OUT_STAGE", "RollOutConfig", "RollOutSpec", "extend_with_rollouts"]

log = logging.getLogger(__name__)

SECTION = "roll_out"


@dataclass(frozen=True)
class RollOutSpec:
    """One dataset made of another and episodes of a model that learned from it."""

    model: str = knob(doc="pretrain.models or align.passes entry that plays the episodes")
    dataset: str = knob(doc="the dataset the model learned from; the output begins with it")
    episodes: int = knob(1024, ge=1, doc="episodes played, one sample per decision")
    batch: int = knob(64, ge=1, doc="episodes played together (one vector env; a resume point)")
    seed: int = knob(20000, ge=0, doc="episode k resets with seed + k (away from evaluate's)")


@dataclass(frozen=True)
class RollOutConfig:
    """Stage `roll_out`: datasets extended by a trained model's own episodes."""

    base: BaseConfig = knob(factory=BaseConfig)
    datasets: dict[str, RollOutSpec] = knob(factory=dict)
    device: str = knob("auto", choices=("auto", "cpu", "cuda"), doc="auto: a GPU if present")


def roll_out_stage(config: RollOutConfig, args: argparse.Namespace) -> None:
    """Play `config.datasets[args.name]` and write the extended dataset to `args.out`."""
    spec = entry(config.datasets, args.name, f"{SECTION}.datasets", args.params)
    where = f"{args.params}: {SECTION}.datasets.{args.name}"
    model = load_model(args.model, device=str(choose_device(config.device)))
    if model.spec.dataset != spec.dataset:
        raise ConfigError(
            f"{where}.dataset is '{spec.dataset}' but the model {args.model} learned from "
            f"'{model.spec.dataset}'"
        )
    base = read_dataset(args.dataset)
    task = task_for_dataset(base.attrs, args.dataset)
    out = Path(args.out)
    key = {"entry": asdict(spec), "model": file_sha256(args.model)}
    parts = keyed_parts_directory(out.with_name(out.name + ".parts"), key)
    episodes = _play(model, task, spec, parts, dict(base.attrs))
    extended = extend_with_rollouts(base, episodes, spec, args.name)
    write_dataset(out, extended)
    write_resolved_config(config, out.with_suffix(".config.yaml"), SECTION)
    stats = {
        **dataset_statistics(extended, task.returns),
        "dataset": dataset_statistics(base, task.returns),
        "rollouts": dataset_statistics(episodes, task.returns),
    }
    success = extended.attrs["rollouts"].get("success_rate")
    if success is not None:
        stats["rollouts"]["success_rate"] = success
    atomic_write_text(out.with_suffix(".stats.json"), json.dumps(stats, indent=2) + "\n")
    shutil.rmtree(parts, ignore_errors=True)
    log.info(
        "wrote %s: %d rows of %s + %d episodes of %s (%d rows, mean return %.3f%s)",
        out,
        len(base),
        spec.dataset,
        spec.episodes,
        spec.model,
        len(episodes),
        stats["rollouts"]["return_mean"],
        "" if success is None else f", success {success:.1%}",
    )


def _play(
    model: ControlModel, task: Task, spec: RollOutSpec, parts: Path, attrs: dict[str, Any]
) -> TransitionDataset:
    """Every batch of episodes, read from `parts` where a batch is there already, else played
    and kept there (with `attrs`, the dataset's provenance, and the episodes' `successes`)."""
    starts = range(0, spec.episodes, spec.batch)
    proposer = ModelProposer(model)
    played: list[TransitionDataset] = []
    with tqdm(total=spec.episodes, desc=f"{SECTION} {spec.model}", unit="episode") as bar:
        for index, start in enumerate(starts):
            size = min(spec.batch, spec.episodes - start)
            path = parts / f"batch-{index:05d}.hdf5"
            if not path.exists():
                result = roll_out(
                    task,
                    proposer,
                    Selection("none", 1),
                    None,
                    episodes=size,
                    seed=spec.seed + start,
                )
                # Within the task's bounds, as the layout demands (a sample may overshoot them).
                executed = clip_into_bounds(result.transitions.actions, *task.action_bounds())
                outcomes = (
                    {}
                    if result.successes is None
                    else {"successes": result.successes.astype(int).tolist()}
                )
                arrays = result.transitions.arrays() | {"actions": executed}
                batch = TransitionDataset(**arrays, attrs=attrs | outcomes)
                write_dataset(path, batch)
            played.append(read_dataset(path))
            bar.update(size)
    successes = [int(s) for p in played for s in p.attrs.get("successes", [])]
    return concatenate_datasets(played, {"successes": successes} if successes else {})


def extend_with_rollouts(
    base: TransitionDataset, episodes: TransitionDataset, spec: RollOutSpec, name: str
) -> TransitionDataset:
    """`base`'s rows, then `episodes`' in `base`'s dtypes, with `base`'s provenance and the
    lineage (`extends`, `rollouts`) the stages and critics read."""
    successes = episodes.attrs.get("successes")
    record: dict[str, Any] = {
        "model": spec.model,
        "episodes": spec.episodes,
        "seed": spec.seed,
        "rows": len(episodes),
        "first_row": len(base),
    }
    if successes:
        record["success_rate"] = float(np.mean(successes))
    attrs = {
        **base.attrs,
        "dataset_kind": name,
        "extends": spec.dataset,
        "rollouts": record,
        "behavior_policy": (
            f"{base.attrs.get('behavior_policy', 'unknown')}; then {spec.episodes} episodes of "
            f"the model '{spec.model}' (one sample per decision), rows {len(base)} on"
        ),
        "collected_by": f"dmc_envs {SECTION}",
    }
    # The success rate a dataset records is its episodes'; of both parts it is not known here.
    attrs.pop("success_rate", None)
    return concatenate_datasets([base, episodes], attrs)


ROLL_OUT_STAGE = Stage(
    name=SECTION,
    summary="Extend a dataset with episodes of a model that learned from it (a critic's data).",
    schema=RollOutConfig,
    args=(
        Arg("--name", "dataset entry of roll_out.datasets"),
        Arg("--model", "model checkpoint (.safetensors) that plays the episodes"),
        Arg("--dataset", "the dataset it learned from (.hdf5); the output begins with its rows"),
        Arg(
            "--out",
            "dataset file to write (.hdf5); config and stats are written beside it",
            output=True,
        ),
    ),
    run=roll_out_stage,
)
