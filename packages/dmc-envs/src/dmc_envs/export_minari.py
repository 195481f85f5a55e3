"""Command `export_minari`: write any dataset of the project as a Minari dataset.

    python -m dmc_envs export_minari --dataset data/datasets/hopper/random.hdf5 \
        --root /data/minari --id dmc/hopper-random-v0

The dataset is read and validated (`dmc_core.data.read_dataset`), and each of its episodes
becomes one Minari episode of T steps: its T observations plus the last next observation
(T + 1 rows), and its T actions, rewards, terminations (the terminal flags) and truncations
(the timeout flags). Minari's `create_dataset_from_buffers` writes it under `root` (the folder
`MINARI_DATASETS_PATH` would name; the variable is set for the call only), so
`minari.load_dataset(id)` and this project's `import_dataset` (format `minari`) read it back.

The metadata records the env spec (`gymnasium.make(env_id, **env_kwargs)`; an env gymnasium
cannot build is recorded by its spaces only: observations unbounded, actions in the recorded
bounds), the reference returns as Minari names them (`ref_min_score`, `ref_max_score`), the
behaviour policy as `algorithm_name`, a one-line `description`, the author, and every
provenance attribute of the dataset as a JSON string under `dmc_provenance`.

References:
    Farama Foundation, Minari (https://minari.farama.org): `create_dataset_from_buffers`.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np

from dmc_core.cli import Arg, Command
from dmc_core.data import ACTION_BOUNDS_ATTRS, TransitionDataset, read_dataset
from dmc_core.errors import ConfigError, DatasetError
from dmc_envs.importing.minari import datasets_root_set_to, import_minari
from dmc_envs.importing.source import plain

__all__ = ["EXPORT_COMMAND", "PROVENANCE_KEY", "export_minari"]

log = logging.getLogger(__name__)

NAME = "export_minari"

#: The metadata entry holding the dataset's provenance attributes as JSON text.
PROVENANCE_KEY = "dmc_provenance"

# Minari's ids (its `DATASET_ID_RE`), `(namespace/)name-v<version>`; the version is required
# (Minari cannot parse an id without one), and `.` is refused, so an id never leaves the root.
_ID = re.compile(r"(?:[-\w][-\w/]*[-\w]/)?[-\w]+?-v\d+")

# Minari's reminders for optional metadata left unset: the export records what the data knows.
_UNSET_WARNINGS = r"(`\w+` is set to None|env_spec is None)"


def export_minari(
    dataset_path: str | Path,
    root: str | Path,
    dataset_id: str,
    *,
    author: str | None = None,
    author_email: str | None = None,
    code_permalink: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the project dataset at `dataset_path` as the Minari dataset `dataset_id` under
    `root`; return its folder (`root / dataset_id`).

    Args:
        dataset_path: a dataset in the project's layout (`.hdf5`).
        root: the Minari datasets' root (created if missing).
        dataset_id: the Minari id, `(namespace/)name-v<version>`.
        author, author_email, code_permalink: recorded in Minari's metadata if given.
        overwrite: replace a Minari dataset that already has this id under the root.

    Raises:
        ConfigError: the id is malformed, taken (without `overwrite`), or Minari is missing.
        DatasetError: the dataset breaks the layout, or its widths do not fit its env.
    """
    minari = import_minari(NAME)
    dataset = read_dataset(dataset_path)
    root, source = Path(root), Path(dataset_path)
    target = _target(root, dataset_id, overwrite)
    env = _env(dataset, source)
    spaces = {} if env is not None else _spaces(dataset)
    try:
        with datasets_root_set_to(root), warnings.catch_warnings():
            warnings.filterwarnings("ignore", _UNSET_WARNINGS, UserWarning)
            exported = minari.create_dataset_from_buffers(
                dataset_id,
                _episodes(dataset),
                env=env,
                algorithm_name=str(dataset.attrs["behavior_policy"]),
                author=author,
                author_email=author_email,
                code_permalink=code_permalink,
                description=_description(dataset, source),
                data_format="hdf5",
                **spaces,
            )
            exported.storage.update_metadata(_metadata(dataset))
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # no half-written dataset under the id
        raise
    finally:
        if env is not None:
            env.close()
    return target


def _target(root: Path, dataset_id: str, overwrite: bool) -> Path:
    """The id's folder under `root`, free (an old dataset there removed if `overwrite`)."""
    if not _ID.fullmatch(dataset_id):
        raise ConfigError(
            f"malformed Minari id '{dataset_id}' (expected (namespace/)name-v<version> of "
            "letters, digits, '_' and '-', e.g. dmc/hopper-random-v0)"
        )
    target = root / dataset_id
    if not target.exists():
        return target
    if not (target / "data" / "metadata.json").is_file():
        raise ConfigError(f"{target} exists and is not a Minari dataset; choose another id")
    if not overwrite:
        raise ConfigError(
            f"a Minari dataset '{dataset_id}' already exists under {root} (--force replaces it)"
        )
    shutil.rmtree(target)
    return target


def _env(dataset: TransitionDataset, source: Path) -> gymnasium.Env | None:
    """The dataset's env, built as recorded, or None if gymnasium cannot build it."""
    env_id = str(dataset.attrs["env_id"])
    kwargs = dict(dataset.attrs.get("env_kwargs") or {})
    try:
        env = gymnasium.make(env_id, **kwargs)
    except (gymnasium.error.Error, ImportError) as err:
        log.warning(
            "%s: gymnasium cannot build env '%s' (%s); no env spec recorded", source, env_id, err
        )
        return None
    expected = {
        "observation": (env.observation_space, dataset.observations.shape[1]),
        "action": (env.action_space, dataset.actions.shape[1]),
    }
    for what, (space, width) in expected.items():
        if space.shape != (width,):
            env.close()
            raise DatasetError(
                f"{source}: its {what}s have {width} dimension(s), but env '{env_id}' has the "
                f"{what} space {space}"
            )
    return env


def _spaces(dataset: TransitionDataset) -> dict[str, gymnasium.spaces.Box]:
    """Spaces from the data: observations unbounded, actions in the recorded bounds (if any)."""
    observations, actions = dataset.observations, dataset.actions
    if all(name in dataset.attrs for name in ACTION_BOUNDS_ATTRS):
        low, high = (np.asarray(dataset.attrs[name]) for name in ACTION_BOUNDS_ATTRS)
    else:
        low, high = np.full(actions.shape[1], -np.inf), np.full(actions.shape[1], np.inf)
    return {
        "observation_space": gymnasium.spaces.Box(
            -np.inf, np.inf, shape=observations.shape[1:], dtype=observations.dtype
        ),
        "action_space": gymnasium.spaces.Box(
            low.astype(actions.dtype), high.astype(actions.dtype), dtype=actions.dtype
        ),
    }


def _episodes(dataset: TransitionDataset) -> list[Any]:
    """One Minari episode buffer per episode, in storage order."""
    from minari.data_collector import EpisodeBuffer

    buffers = []
    for index, rows in enumerate(dataset.episode_slices()):
        last = dataset.next_observations[rows.stop - 1]
        buffers.append(
            EpisodeBuffer(
                id=index,
                observations=np.concatenate([dataset.observations[rows], last[None]]),
                actions=dataset.actions[rows],
                rewards=dataset.rewards[rows],
                terminations=dataset.terminals[rows].astype(bool),
                truncations=dataset.timeouts[rows].astype(bool),
            )
        )
    return buffers


def _description(dataset: TransitionDataset, source: Path) -> str:
    """One line on what the data is and where it came from."""
    attrs = dataset.attrs
    kind, task = attrs.get("dataset_kind", "?"), attrs.get("task", attrs["env_id"])
    return (
        f"dmc dataset '{kind}' of task '{task}' (env {attrs['env_id']}), exported from "
        f"{source.name} by dmc_envs {NAME}; every provenance attribute is in the metadata "
        f"entry '{PROVENANCE_KEY}' (JSON)."
    )


def _metadata(dataset: TransitionDataset) -> dict[str, Any]:
    """The entries Minari's own arguments do not cover: references and provenance."""
    attrs = dataset.attrs
    metadata: dict[str, Any] = {PROVENANCE_KEY: json.dumps(plain(dict(attrs)), sort_keys=True)}
    if attrs.get("ref_min_score") is not None and attrs.get("ref_max_score") is not None:
        metadata["ref_min_score"] = float(attrs["ref_min_score"])
        metadata["ref_max_score"] = float(attrs["ref_max_score"])
    return metadata


def _run(args: argparse.Namespace) -> None:
    """The command: export, then say what was written."""
    path = export_minari(
        args.dataset,
        args.root,
        args.id,
        author=args.author,
        author_email=args.author_email,
        code_permalink=args.code_permalink,
        overwrite=args.force,
    )
    written = json.loads((path / "data" / "metadata.json").read_text())
    print(
        f"wrote Minari dataset '{args.id}': {written['total_episodes']} episodes, "
        f"{written['total_steps']} transitions, in {path}"
    )


EXPORT_COMMAND = Command(
    name=NAME,
    summary="Write a dataset of the project as a Minari dataset under a chosen root.",
    args=(
        Arg("--dataset", "the dataset to export (.hdf5, the project's layout)"),
        Arg("--root", "the Minari datasets' root to write under (MINARI_DATASETS_PATH)"),
        Arg("--id", "the Minari dataset id, (namespace/)name-v<version>"),
        Arg("--author", "the author recorded in the metadata", required=False),
        Arg("--author-email", "the author's email recorded in the metadata", required=False),
        Arg("--code-permalink", "a link to the code that made the data", required=False),
        Arg("--force", "replace a Minari dataset with this id under the root", switch=True),
    ),
    run=_run,
)
