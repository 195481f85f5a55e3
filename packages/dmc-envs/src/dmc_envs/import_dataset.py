"""Stage `import_dataset`: bring a dataset made elsewhere into the project's validated layout.

    python -m dmc_envs import_dataset --name hopper_medium \
        --out data/datasets/hopper/hopper_medium.hdf5

The entry `import_dataset.datasets.<name>` names the source (a D4RL HDF5 file, a Minari
dataset under a local root, or a file in this project's layout) and the task it belongs to.
The stage reads it (`dmc_envs.importing`), repairs what the layout forbids (an episode the
source left open becomes a cut one; rows without a known next observation are dropped; actions
outside the task's bounds are clipped if asked, else refused), fills the provenance from the
params and the task, and writes the dataset, `<name>.config.yaml` (the resolved config) and
`<name>.stats.json` (returns, normalised scores, and how many rows were changed) beside it.

Reference returns (the normalised score's 0 and 100): the entry's `ref_min_score` and
`ref_max_score` if set, else those the source records (Minari metadata, a project file's
attributes), else the task's; the dataset records the pair it used.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from dmc_core.atomic import atomic_write_text
from dmc_core.cli import Arg, Stage
from dmc_core.config import entry, write_resolved_config
from dmc_core.data import TransitionDataset, write_dataset
from dmc_core.errors import ConfigError, DatasetError
from dmc_envs.importing.config import ImportDatasetConfig, ImportSpec
from dmc_envs.importing.d4rl import read_d4rl
from dmc_envs.importing.minari import read_minari
from dmc_envs.importing.native import read_native
from dmc_envs.importing.source import SourceData
from dmc_envs.statistics import dataset_statistics
from dmc_envs.tasks import ReturnScale, Task, build_task, task_names

__all__ = ["CHANGE_KINDS", "IMPORT_STAGE", "clip_into_bounds", "import_dataset"]

log = logging.getLogger(__name__)

SECTION = "import_dataset"

#: Rows the import changes, by kind, as `<name>.stats.json` counts them.
CHANGE_KINDS = (
    "episodes_cut",  # episodes the source left open: their last row was marked a timeout
    "rows_dropped_no_next_observation",  # rows dropped: the source records no next observation
    "terminal_rows_dropped",  # of those, terminal rows (their episodes now end as cut)
    "actions_clipped_rows",  # rows whose action was clipped into the task's bounds
)


def import_dataset(config: ImportDatasetConfig, args: argparse.Namespace) -> None:
    """Import the entry `args.name` of `config.datasets` and write it to `args.out`."""
    spec = entry(config.datasets, args.name, f"{SECTION}.datasets", args.params)
    where = f"{args.params}: {SECTION}.datasets.{args.name}"
    if spec.task not in task_names():
        raise ConfigError(
            f"{where}.task: unknown task '{spec.task}' (registered tasks: "
            f"{', '.join(task_names())})"
        )
    source = _read(spec, where)
    log.info("read %s: %d rows", source.label, source.source_rows)
    task = _task(spec, source, where)
    _check_widths(source, task)
    arrays, clipped_rows, clipped_by = _actions_in_bounds(source.arrays, task, spec.clip_actions)
    scale = _scale(spec, source, task, where)
    attrs = _provenance(args.name, spec, source, task, scale)
    dataset = TransitionDataset(**arrays, attrs=attrs)
    _validate(dataset, source, f"{SECTION}.datasets.{args.name}")
    changes = {kind: int(source.changes.get(kind, 0)) for kind in CHANGE_KINDS}
    changes["actions_clipped_rows"] = clipped_rows
    _log_changes(source.label, changes, clipped_by)
    out = Path(args.out)
    write_dataset(out, dataset)
    write_resolved_config(config, out.with_suffix(".config.yaml"), SECTION)
    stats = _statistics(dataset, scale, source.source_rows, changes, clipped_by)
    atomic_write_text(out.with_suffix(".stats.json"), json.dumps(stats, indent=2) + "\n")
    log.info(
        "wrote %s: %d episodes, %d transitions, mean return %.3f (normalised score %.1f)",
        out,
        stats["episodes"],
        stats["transitions"],
        stats["return_mean"],
        stats["normalized_score"],
    )


def _read(spec: ImportSpec, where: str) -> SourceData:
    path = Path(spec.path)
    if spec.format == "minari":
        if not path.is_dir():
            raise ConfigError(f"{where}.path: no folder {path} (the Minari datasets' root)")
        return read_minari(path, spec.minari_id, where)
    if not path.is_file():
        raise ConfigError(f"{where}.path: no file {path}")
    return read_d4rl(path) if spec.format == "d4rl" else read_native(path)


def _task(spec: ImportSpec, source: SourceData, where: str) -> Task:
    """The entry's task, built with the env kwargs the source records (if it does)."""
    task = build_task(spec.task, source.env_kwargs)
    if source.env_id is None or source.env_id == task.env_id:
        return task
    # Another version of the same env (Hopper-v4 data for Hopper-v5) may be meant; another
    # env is a wrong entry.
    if _env_name(source.env_id) != _env_name(task.env_id):
        raise ConfigError(
            f"{where}.task: task {task.describe()} does not fit {source.label}, which records "
            f"env '{source.env_id}'"
        )
    log.warning(
        "%s records env '%s'; imported as %s (another version)",
        source.label,
        source.env_id,
        task.env_id,
    )
    return task


def _env_name(env_id: str) -> str:
    return re.sub(r"-v\d+$", "", env_id)


def _check_widths(source: SourceData, task: Task) -> None:
    """Refuse a source whose actions or observations have another width than the task's."""
    low, _ = task.action_bounds()
    width = source.arrays["actions"].shape[1]
    if width != low.shape[0]:
        raise DatasetError(
            f"{source.label}: 'actions' have {width} dimension(s), but task {task.describe()} "
            f"has {low.shape[0]}"
        )
    env = task.make_vector_env(1)
    try:
        shape = env.single_observation_space.shape
    finally:
        env.close()
    width = source.arrays["observations"].shape[1]
    if shape is not None and len(shape) == 1 and shape[0] != width:
        raise DatasetError(
            f"{source.label}: 'observations' have {width} dimension(s), but task "
            f"{task.describe()} has {shape[0]}"
        )


def _actions_in_bounds(
    arrays: dict[str, np.ndarray], task: Task, clip: bool
) -> tuple[dict[str, np.ndarray], int, float]:
    """The arrays with actions clipped into the task's bounds if `clip` (else unchanged: the
    validator refuses them), the number of clipped rows and the largest change."""
    actions = arrays["actions"]
    low, high = task.action_bounds()
    outside = ((actions < low) | (actions > high)).any(axis=1)
    if not (clip and outside.any()):
        return arrays, 0, 0.0
    clipped = clip_into_bounds(actions, low, high)
    return (
        {**arrays, "actions": clipped},
        int(outside.sum()),
        float(np.abs(clipped - actions).max()),
    )


def clip_into_bounds(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """`actions` clipped into [low, high], in their own dtype and inside the bounds after
    rounding (what the layout's validator demands)."""
    lo, hi = _bounds_in(actions.dtype, low, high)
    return np.clip(actions, lo, hi)


def _bounds_in(dtype: np.dtype, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bounds in the actions' dtype, rounded inward: a bound like 0.4 rounds up in
    float32, and actions clipped to it would still lie outside the float64 bound."""
    if not np.issubdtype(dtype, np.floating):
        return low, high
    lo, hi = low.astype(dtype), high.astype(dtype)
    lo = np.where(lo < low, np.nextafter(lo, np.asarray(np.inf, dtype=dtype)), lo)
    hi = np.where(hi > high, np.nextafter(hi, np.asarray(-np.inf, dtype=dtype)), hi)
    return lo, hi


def _scale(spec: ImportSpec, source: SourceData, task: Task, where: str) -> ReturnScale:
    """The reference returns: the entry's, else the source's, else the task's."""
    if spec.has_references():
        text = spec.ref_score_source or f"{where}.ref_min_score/ref_max_score"
        return ReturnScale(spec.ref_min_score, spec.ref_max_score, text)
    if source.references is not None:
        low, high, text = source.references
        if not high > low:
            raise DatasetError(
                f"{source.label}: recorded reference returns ref_min_score={low}, "
                f"ref_max_score={high} need max > min; set {where}.ref_min_score/ref_max_score"
            )
        return ReturnScale(low, high, text)
    return task.returns


def _provenance(
    name: str, spec: ImportSpec, source: SourceData, task: Task, scale: ReturnScale
) -> dict[str, Any]:
    if spec.format == "minari":
        origin = f"minari dataset '{spec.minari_id}' under {spec.path}"
    else:
        origin = f"{spec.format} file {spec.path}"
    attrs: dict[str, Any] = {
        **task.provenance(),  # env_id, env_kwargs, action_low, action_high
        "task": spec.task,
        "dataset_kind": name,
        "behavior_policy": f"unknown: imported from {origin}",
        **source.behaviour,  # a project file's own record of its policy, when it has one
        "seed": spec.seed,
        "source_format": spec.format,
        "source_path": spec.path,
        "ref_min_score": scale.low,
        "ref_max_score": scale.high,
        "ref_score_source": scale.source,
        "imported_by": f"dmc_envs {SECTION}",
    }
    if spec.format == "minari":
        attrs["minari_id"] = spec.minari_id
    if source.metadata:
        attrs["source_metadata"] = source.metadata
    return attrs


def _validate(dataset: TransitionDataset, source: SourceData, key: str) -> None:
    """The layout's rules, named by the source (the output does not exist yet)."""
    try:
        dataset.validate(source.label)
    except DatasetError as err:
        if "outside the recorded action space" in str(err):
            raise DatasetError(
                f"{err}; set {key}.clip_actions: true to clip them into the task's bounds"
            ) from None
        raise


def _log_changes(label: str, changes: dict[str, int], clipped_by: float) -> None:
    if changes["episodes_cut"]:
        log.warning("%s: %d episode(s) left open, marked cut", label, changes["episodes_cut"])
    if changes["rows_dropped_no_next_observation"]:
        log.warning(
            "%s: dropped %d row(s) without a next observation (%d terminal: their episodes now "
            "end as cut)",
            label,
            changes["rows_dropped_no_next_observation"],
            changes["terminal_rows_dropped"],
        )
    if changes["actions_clipped_rows"]:
        log.warning(
            "%s: clipped the actions of %d row(s) into the task's bounds (by at most %.3g)",
            label,
            changes["actions_clipped_rows"],
            clipped_by,
        )


def _statistics(
    dataset: TransitionDataset,
    scale: ReturnScale,
    source_rows: int,
    changes: dict[str, int],
    clipped_by: float,
) -> dict[str, Any]:
    return {
        **dataset_statistics(dataset, scale),
        "source_rows": source_rows,
        "changes": {**changes, "actions_clipped_max": clipped_by},
    }


IMPORT_STAGE = Stage(
    name=SECTION,
    summary="Import a D4RL HDF5 file, a Minari dataset or a project file into the data layout.",
    schema=ImportDatasetConfig,
    args=(
        Arg("--name", "dataset entry of import_dataset.datasets"),
        Arg(
            "--out",
            "dataset file to write (.hdf5); config and stats are written beside it",
            output=True,
        ),
    ),
    run=import_dataset,
)
