"""What a reader hands the import stage: arrays in the project's layout and the source's record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dmc_core.errors import DatasetError

__all__ = ["SourceData", "close_open_episode", "flags", "plain", "vector"]


@dataclass(frozen=True)
class SourceData:
    """One source's transitions (the six arrays of `dmc_core.data.ARRAY_KEYS`), before the
    provenance is added.

    Attributes:
        arrays: observations, actions, rewards, terminals, timeouts, next_observations.
        label: how refusals name the source (its file, or a Minari root and id).
        source_rows: the transitions the source holds (before rows were dropped).
        metadata: what the source says about itself, recorded as `source_metadata`.
        references: (ref_min_score, ref_max_score, their source) if the source records them.
        env_id: the env id the source records, if any (checked against the task's).
        env_kwargs: the env kwargs the source records, if any (the task is built with them).
        behaviour: provenance attributes on the behaviour policy, if the source knows it.
        changes: rows the reader changed, by kind (see `CHANGE_KINDS` in the stage).
    """

    arrays: dict[str, np.ndarray]
    label: str
    source_rows: int
    metadata: dict[str, Any] = field(default_factory=dict)
    references: tuple[float, float, str] | None = None
    env_id: str | None = None
    env_kwargs: dict[str, Any] | None = None
    behaviour: dict[str, Any] = field(default_factory=dict)
    changes: dict[str, int] = field(default_factory=dict)


def vector(values: np.ndarray, key: str, label: str) -> np.ndarray:
    """A per-row array as shape (N,): some writers store (N, 1)."""
    if values.ndim == 2 and values.shape[1] == 1:
        return values[:, 0]
    if values.ndim != 1:
        raise DatasetError(f"{label}: '{key}' has shape {values.shape}, expected (N,) or (N, 1)")
    return values


def flags(values: np.ndarray, key: str, label: str) -> np.ndarray:
    """A flag array as booleans, refusing anything but 0/1 (a cast would make 0.5 an end)."""
    values = vector(values, key, label)
    if values.dtype != np.bool_ and not np.isin(values, (0, 1)).all():
        raise DatasetError(f"{label}: '{key}' must hold only 0/1, found other values")
    return values.astype(bool)


def close_open_episode(terminals: np.ndarray, timeouts: np.ndarray) -> int:
    """Mark the last row a timeout if it ends no episode (the source stopped mid-episode);
    1 if it did so, else 0. Changes `timeouts` in place."""
    if terminals[-1] or timeouts[-1]:
        return 0
    timeouts[-1] = True
    return 1


def plain(value: Any) -> Any:
    """A metadata value as JSON-ready Python (text, numbers, lists, dicts), or None if it
    is not one (weights and other arrays are not provenance)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, np.ndarray):
        return plain(value.item()) if value.ndim == 0 else None
    if isinstance(value, str | bool | int | float) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return None
