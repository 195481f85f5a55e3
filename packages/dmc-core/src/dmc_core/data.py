"""The dataset contract between stages: transitions in the D4RL HDF5 layout.

A dataset file holds six arrays with one row per transition, episodes stored one after another:

    observations       (N, obs_dim)  float
    actions            (N, act_dim)  float
    rewards            (N,)          float
    terminals          (N,)          bool   the episode ended in a terminal state
    timeouts           (N,)          bool   the episode was cut by the time limit
    next_observations  (N, obs_dim)  float

and root attributes saying where it came from (`env_id`, `env_kwargs`, `dataset_kind`,
`behavior_policy`, `seed`, ...). A file may record its task's action space as `action_low` and
`action_high` (one bound per action dimension); `make_dataset` does, a D4RL file from elsewhere
need not. `read_dataset` checks shapes, dtypes, finite values, episode boundaries and, where
recorded, the action bounds, and names the file and the first problem it finds.

References:
    Fu et al., "D4RL: Datasets for Deep Data-Driven Reinforcement Learning", 2020 (the layout).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dmc_core.atomic import atomic_path
from dmc_core.errors import DatasetError

__all__ = [
    "ACTION_BOUNDS_ATTRS",
    "ARRAY_KEYS",
    "REQUIRED_ATTRS",
    "TransitionDataset",
    "concatenate_datasets",
    "read_dataset",
    "write_dataset",
]

ARRAY_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")
REQUIRED_ATTRS = ("env_id", "dataset_kind", "behavior_policy", "seed")
_MATRIX_KEYS = ("observations", "actions", "next_observations")
_FLAG_KEYS = ("terminals", "timeouts")
_JSON_ATTRS = "_json_attrs"  # names of attributes stored as JSON text (dicts and lists)
ACTION_BOUNDS_ATTRS = ("action_low", "action_high")


@dataclass(frozen=True)
class TransitionDataset:
    """Transitions of whole episodes, stored back to back (see the module docstring).

    Shapes:
        observations, next_observations: (N, obs_dim); actions: (N, act_dim);
        rewards, terminals, timeouts: (N,).
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    next_observations: np.ndarray
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def episode_ends(self) -> np.ndarray:
        """Indices of the last row of every episode (a terminal or a timeout row)."""
        return np.flatnonzero(self.terminals | self.timeouts)

    @property
    def num_episodes(self) -> int:
        """Number of complete episodes."""
        return int(self.episode_ends.size)

    def episode_slices(self) -> list[slice]:
        """Row ranges of the episodes, in storage order."""
        ends = self.episode_ends + 1
        starts = np.concatenate([[0], ends[:-1]])
        return [slice(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]

    def arrays(self) -> dict[str, np.ndarray]:
        """The six arrays by their D4RL names."""
        return {key: getattr(self, key) for key in ARRAY_KEYS}

    def validate(self, source: str = "<dataset>", require_attrs: bool = True) -> None:
        """Raise `DatasetError` naming `source` and the first broken rule of the contract."""
        problem = _first_problem(self.arrays(), dict(self.attrs), require_attrs)
        if problem:
            raise DatasetError(f"{source}: {problem}")


def concatenate_datasets(
    parts: Sequence[TransitionDataset], attrs: Mapping[str, Any] | None = None
) -> TransitionDataset:
    """The rows of `parts`, one after another, in the first part's dtypes, with `attrs` (by
    default the first part's)."""
    first, *rest = (part.arrays() for part in parts)
    arrays = {
        key: np.concatenate([first[key], *(other[key].astype(first[key].dtype) for other in rest)])
        for key in ARRAY_KEYS
    }
    return TransitionDataset(**arrays, attrs=dict(parts[0].attrs if attrs is None else attrs))


def write_dataset(path: str | os.PathLike[str], dataset: TransitionDataset) -> Path:
    """Validate `dataset` and write it to `path` atomically in the D4RL HDF5 layout."""
    destination = Path(path)
    dataset.validate(str(destination))
    with atomic_path(destination) as tmp, h5py.File(tmp, "w", track_order=True) as handle:
        for key, array in dataset.arrays().items():
            # No timestamps in the file, so identical data gives identical bytes (DVC hashes).
            handle.create_dataset(key, data=array, track_times=False)
        _write_attrs(handle, dataset.attrs)
    return destination


def read_dataset(path: str | os.PathLike[str], require_attrs: bool = True) -> TransitionDataset:
    """Read and validate a D4RL-layout HDF5 file; raise `DatasetError` naming the problem.

    Args:
        path: the HDF5 file.
        require_attrs: demand the provenance attributes of `REQUIRED_ATTRS` (files made by
            this project have them; D4RL files from elsewhere do not).
    """
    source = Path(path)
    if not source.is_file():
        raise DatasetError(f"{source}: dataset file not found")
    try:
        with h5py.File(source, "r") as handle:
            arrays = {key: _read_array(handle, key, source) for key in ARRAY_KEYS}
            attrs = _read_attrs(handle, source)
    except OSError as err:
        raise DatasetError(f"{source}: not a readable HDF5 file ({err})") from None
    dataset = TransitionDataset(**arrays, attrs=attrs)
    dataset.validate(str(source), require_attrs=require_attrs)
    return dataset


def _read_array(handle: h5py.File, key: str, source: Path) -> np.ndarray:
    node = handle.get(key)
    if not isinstance(node, h5py.Dataset):
        raise DatasetError(f"{source}: missing array '{key}' (expected keys: {list(ARRAY_KEYS)})")
    return np.asarray(node[()])


def _first_problem(arrays: dict[str, np.ndarray], attrs: dict[str, Any], need_attrs: bool) -> str:
    return (
        _shape_problem(arrays)
        or _dtype_problem(arrays)
        or _finite_problem(arrays)
        or _episode_problem(arrays)
        or _action_bounds_problem(arrays["actions"], attrs)
        or (_attrs_problem(attrs) if need_attrs else "")
    )


def _shape_problem(arrays: dict[str, np.ndarray]) -> str:
    for key, array in arrays.items():
        want = 2 if key in _MATRIX_KEYS else 1
        if array.ndim != want:
            return f"'{key}' has shape {array.shape}, expected {want} dimension(s)"
    rows = arrays["observations"].shape[0]
    if rows == 0:
        return "the dataset has no transitions"
    for key, array in arrays.items():
        if array.shape[0] != rows:
            return f"'{key}' has {array.shape[0]} rows, but 'observations' has {rows}"
    if arrays["next_observations"].shape[1] != arrays["observations"].shape[1]:
        return "'next_observations' and 'observations' have different widths"
    return ""


def _dtype_problem(arrays: dict[str, np.ndarray]) -> str:
    for key, array in arrays.items():
        if key in _FLAG_KEYS:
            if array.dtype != np.bool_ and not np.isin(array, (0, 1)).all():
                return f"'{key}' must be boolean (0/1), found other values (dtype {array.dtype})"
        elif not np.issubdtype(array.dtype, np.floating):
            return f"'{key}' must be floating point, found dtype {array.dtype}"
    return ""


def _finite_problem(arrays: dict[str, np.ndarray]) -> str:
    for key, array in arrays.items():
        if key in _FLAG_KEYS:
            continue
        bad = ~np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)
        if bad.any():
            return f"'{key}' has a non-finite value (NaN or inf) in row {int(np.argmax(bad))}"
    return ""


def _episode_problem(arrays: dict[str, np.ndarray]) -> str:
    ends = arrays["terminals"].astype(bool) | arrays["timeouts"].astype(bool)
    if not ends[-1]:
        return "the last row ends no episode (neither terminal nor timeout): truncated file?"
    # Inside an episode, each transition must start where the previous one ended.
    inner = np.flatnonzero(~ends[:-1])
    nxt, obs = arrays["next_observations"], arrays["observations"]
    broken = ~np.isclose(nxt[inner], obs[inner + 1], rtol=1e-5, atol=1e-6).all(axis=1)
    if broken.any():
        row = int(inner[np.argmax(broken)])
        return (
            f"episode continuity broken at row {row}: 'next_observations' differs from the "
            f"next row's 'observations', but row {row} is neither terminal nor timeout"
        )
    return ""


def _action_bounds_problem(actions: np.ndarray, attrs: dict[str, Any]) -> str:
    """Actions outside the bounds the file records (files that record none are not checked)."""
    recorded = [name for name in ACTION_BOUNDS_ATTRS if name in attrs]
    if not recorded:
        return ""
    if len(recorded) == 1:
        return f"attribute '{recorded[0]}' is recorded without its partner {ACTION_BOUNDS_ATTRS}"
    width = actions.shape[1]
    bounds = {name: _bound(attrs[name], width) for name in ACTION_BOUNDS_ATTRS}
    for name, bound in bounds.items():
        if bound is None:
            return (
                f"attribute '{name}' must be {width} finite number(s), one per action dimension, "
                f"found {attrs[name]!r}"
            )
    low, high = (bound for bound in bounds.values() if bound is not None)
    outside = ((actions < low) | (actions > high)).any(axis=1)
    if not outside.any():
        return ""
    row = int(np.argmax(outside))
    return (
        f"'actions' lie outside the recorded action space [{low.tolist()}, {high.tolist()}] "
        f"(attributes {list(ACTION_BOUNDS_ATTRS)}) in {int(outside.sum())} row(s), the first "
        f"row {row}: {actions[row].tolist()}"
    )


def _bound(value: Any, width: int) -> np.ndarray | None:
    """A recorded bound as `width` finite floats, or None if it is not that."""
    try:
        bound = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return bound if bound.shape == (width,) and np.isfinite(bound).all() else None


def _attrs_problem(attrs: dict[str, Any]) -> str:
    missing = [name for name in REQUIRED_ATTRS if name not in attrs]
    return f"missing provenance attribute(s) {missing}" if missing else ""


def _write_attrs(handle: h5py.File, attrs: Mapping[str, Any]) -> None:
    json_names = []
    for name, value in attrs.items():
        if isinstance(value, Mapping | list | tuple):
            handle.attrs[name] = json.dumps(value, sort_keys=True)
            json_names.append(name)
        else:
            handle.attrs[name] = value
    handle.attrs[_JSON_ATTRS] = json.dumps(json_names)


def _read_attrs(handle: h5py.File, source: Path) -> dict[str, Any]:
    json_names = set(_json_attr(handle.attrs.get(_JSON_ATTRS, "[]"), _JSON_ATTRS, source))
    attrs: dict[str, Any] = {}
    for name, value in handle.attrs.items():
        if name == _JSON_ATTRS:
            continue
        if isinstance(value, np.generic):
            value = value.item()
        attrs[name] = _json_attr(value, name, source) if name in json_names else value
    return attrs


def _json_attr(text: Any, name: str, source: Path) -> Any:
    """Decode an attribute stored as JSON text, or raise `DatasetError` naming it."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError) as err:
        raise DatasetError(f"{source}: attribute '{name}' is not valid JSON ({err})") from None
