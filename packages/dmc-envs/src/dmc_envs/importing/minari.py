"""Read a Minari dataset from a local root, through Minari's own API.

`minari.load_dataset(id)` finds datasets under the folder named by the environment variable
`MINARI_DATASETS_PATH`; the reader sets it to the given root for the read only (and never
downloads). An episode of T steps holds T + 1 observations: row t of the layout is
observation t, action t, reward t and observation t + 1. An episode that ends with neither a
termination nor a truncation is marked a timeout on its last row (it was cut). The reference
returns the dataset's metadata records (`ref_min_score`, `ref_max_score`) are kept.

References:
    Farama Foundation, Minari (https://minari.farama.org): datasets, `load_dataset`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import gymnasium
import numpy as np

from dmc_core.data import ARRAY_KEYS
from dmc_core.errors import ConfigError, DatasetError
from dmc_envs.importing.source import SourceData, flags, plain

__all__ = [
    "ROOT_VARIABLE",
    "datasets_root_set_to",
    "import_minari",
    "local_dataset_ids",
    "read_minari",
]

log = logging.getLogger(__name__)

#: The environment variable Minari reads its datasets' root from.
ROOT_VARIABLE = "MINARI_DATASETS_PATH"

# Metadata entries kept as provenance (the spaces and the spec are rebuilt, not recorded).
_METADATA_KEYS = (
    "dataset_id",
    "algorithm_name",
    "code_permalink",
    "description",
    "minari_version",
    "total_episodes",
    "total_steps",
)


def read_minari(root: Path, dataset_id: str, key: str) -> SourceData:
    """The transitions of the Minari dataset `dataset_id` under `root`.

    Args:
        root: the folder that `MINARI_DATASETS_PATH` is set to.
        dataset_id: the dataset's id (`namespace/name-v0`).
        key: the params key of the entry, named by refusals of the id.

    Raises:
        ConfigError: Minari is not installed, or no dataset has that id under the root.
        DatasetError: Minari cannot load it, or its spaces are not flat boxes.
    """
    minari = import_minari(f"{key}.format: 'minari'")
    label = f"{root / dataset_id} (Minari dataset '{dataset_id}')"
    with datasets_root_set_to(root):
        try:
            dataset = minari.load_dataset(dataset_id, download=False)
        except FileNotFoundError:
            raise ConfigError(
                f"{key}.minari_id: no Minari dataset '{dataset_id}' under {root} "
                f"(datasets there: {local_dataset_ids(root)})"
            ) from None
        except (ValueError, KeyError, OSError) as err:
            raise DatasetError(f"{label}: Minari cannot load it ({err})") from None
        _check_spaces(dataset, label)
        arrays, cut = _transitions(dataset, label)
        metadata = dataset.storage.metadata
        env_id = dataset.env_spec.id if dataset.env_spec is not None else None
    kept = {name: plain(metadata[name]) for name in _METADATA_KEYS if name in metadata}
    if env_id is not None:
        kept["env_id"] = env_id
    if cut:
        log.warning("%s: %d episode(s) end with neither termination nor truncation", label, cut)
    return SourceData(
        arrays=arrays,
        label=label,
        source_rows=len(arrays["rewards"]),
        metadata={name: value for name, value in kept.items() if value is not None},
        references=_references(metadata, dataset_id),
        env_id=env_id,
        changes={"episodes_cut": cut},
    )


def local_dataset_ids(root: Path) -> list[str]:
    """The ids of the datasets stored under `root` (each keeps `<id>/data/metadata.json`)."""
    return sorted(
        str(found.parent.parent.relative_to(root)) for found in root.rglob("data/metadata.json")
    )


def import_minari(needed_by: str) -> ModuleType:
    """The `minari` module; a `ConfigError` naming `needed_by` if it is not installed."""
    try:
        import minari
    except ModuleNotFoundError:
        raise ConfigError(
            f"{needed_by} needs the package 'minari', which is not installed "
            "(pip install -e 'packages/dmc-envs[minari]')"
        ) from None
    return minari


@contextlib.contextmanager
def datasets_root_set_to(root: Path) -> Iterator[None]:
    """`MINARI_DATASETS_PATH` set to `root` inside, restored (or removed) after."""
    before = os.environ.get(ROOT_VARIABLE)
    os.environ[ROOT_VARIABLE] = str(root)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ROOT_VARIABLE, None)
        else:
            os.environ[ROOT_VARIABLE] = before


def _check_spaces(dataset: Any, label: str) -> None:
    """The layout holds flat vectors: refuse dict, image or discrete spaces by name."""
    spaces = (("observation", dataset.observation_space), ("action", dataset.action_space))
    for what, space in spaces:
        if not (isinstance(space, gymnasium.spaces.Box) and len(space.shape) == 1):
            raise DatasetError(
                f"{label}: its {what} space is {space}; only flat Box spaces (vectors) fit the "
                "dataset layout"
            )


def _transitions(dataset: Any, label: str) -> tuple[dict[str, np.ndarray], int]:
    """The episodes stored back to back, and how many were left open (marked timeouts)."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in ARRAY_KEYS}
    cut = 0
    for episode in dataset.iterate_episodes():
        steps = len(episode.rewards)
        if steps == 0:
            continue
        observations = np.asarray(episode.observations)
        if observations.shape[0] != steps + 1:
            raise DatasetError(
                f"{label}: episode {episode.id} has {observations.shape[0]} observations for "
                f"{steps} steps (expected steps + 1)"
            )
        terminals = flags(np.asarray(episode.terminations), "terminations", label)
        timeouts = flags(np.asarray(episode.truncations), "truncations", label)
        if not (terminals[-1] or timeouts[-1]):
            timeouts[-1] = True
            cut += 1
        parts["observations"].append(observations[:-1])
        parts["next_observations"].append(observations[1:])
        parts["actions"].append(np.asarray(episode.actions))
        parts["rewards"].append(np.asarray(episode.rewards).reshape(steps))
        parts["terminals"].append(terminals)
        parts["timeouts"].append(timeouts)
    if not parts["rewards"]:
        raise DatasetError(f"{label}: the dataset has no transitions")
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}, cut


def _references(metadata: dict[str, Any], dataset_id: str) -> tuple[float, float, str] | None:
    """The reference returns the dataset records (Minari writes them as a pair, or not)."""
    low, high = metadata.get("ref_min_score"), metadata.get("ref_max_score")
    if low is None or high is None:
        return None
    source = f"Minari dataset '{dataset_id}' metadata (ref_min_score, ref_max_score)"
    return float(low), float(high), source
