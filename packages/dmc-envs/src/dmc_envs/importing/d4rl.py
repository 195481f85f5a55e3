"""Read an HDF5 file exactly as D4RL published it (e.g. `hopper-medium-v2.hdf5`).

Such a file has the five arrays `observations`, `actions`, `rewards`, `terminals`, `timeouts`,
often `next_observations`, groups `infos/*` (simulator state, log-probabilities: not part of
the layout, ignored) and `metadata/*` (the algorithm, the policy's weights: scalar text and
numbers are kept as provenance), and no attributes. Two repairs make it a valid dataset:

- its last episode may stop at the end of the file with neither a terminal nor a timeout: its
  last row is marked a timeout (the file's end cut it);
- without `next_observations`, a row's next observation is the following row's observation
  within an episode; an episode's last row has none recorded, so it is dropped, and the row
  before it ends the episode as a timeout (a cut: the terminal state itself is not in the file).

References:
    Fu et al., "D4RL: Datasets for Deep Data-Driven Reinforcement Learning", 2020.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dmc_core.errors import DatasetError
from dmc_envs.importing.source import SourceData, close_open_episode, flags, plain, vector

__all__ = ["REQUIRED_KEYS", "read_d4rl"]

log = logging.getLogger(__name__)

#: Arrays every D4RL file must have (`next_observations` is optional).
REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")


def read_d4rl(path: Path) -> SourceData:
    """The transitions of a D4RL HDF5 file, repaired as the module docstring says.

    Raises:
        DatasetError: naming the file and the array: missing, of the wrong shape, or of
            another length than `observations`.
    """
    label = str(path)
    try:
        with h5py.File(path, "r") as handle:
            found = sorted(handle.keys())
            raw = {key: _array(handle, key, label, found) for key in REQUIRED_KEYS}
            has_next = "next_observations" in handle
            if has_next:
                raw["next_observations"] = _array(handle, "next_observations", label, found)
            metadata = _metadata(handle)
    except OSError as err:
        raise DatasetError(f"{label}: not a readable HDF5 file ({err})") from None
    arrays = _checked(raw, label)
    rows = len(arrays["rewards"])
    changes = {"episodes_cut": 0, "rows_dropped_no_next_observation": 0}
    changes["terminal_rows_dropped"] = 0
    if has_next:
        changes["episodes_cut"] = close_open_episode(arrays["terminals"], arrays["timeouts"])
    else:
        arrays, dropped, lost_terminals, cut = _derive_next_observations(arrays, label)
        changes["rows_dropped_no_next_observation"] = dropped
        changes["terminal_rows_dropped"] = lost_terminals
        changes["episodes_cut"] = cut
        log.info("%s: no 'next_observations': derived them, dropped %d row(s)", label, dropped)
    return SourceData(
        arrays=arrays, label=label, source_rows=rows, metadata=metadata, changes=changes
    )


def _array(handle: h5py.File, key: str, label: str, found: list[str]) -> np.ndarray:
    node = handle.get(key)
    if not isinstance(node, h5py.Dataset):
        what = "a group, not an array" if node is not None else "missing"
        raise DatasetError(
            f"{label}: array '{key}' is {what} (a D4RL file has {list(REQUIRED_KEYS)}; "
            f"top-level keys found: {found})"
        )
    return np.asarray(node[()])


def _checked(raw: dict[str, np.ndarray], label: str) -> dict[str, np.ndarray]:
    """The arrays with per-row vectors as (N,), flags as booleans, and one length for all."""
    arrays = dict(raw)
    for key in ("observations", "actions", "next_observations"):
        if key in arrays and arrays[key].ndim != 2:
            raise DatasetError(
                f"{label}: '{key}' has shape {arrays[key].shape}, expected (N, width)"
            )
    arrays["rewards"] = vector(arrays["rewards"], "rewards", label)
    for key in ("terminals", "timeouts"):
        arrays[key] = flags(arrays[key], key, label)
    rows = arrays["observations"].shape[0]
    for key, array in arrays.items():
        if array.shape[0] != rows:
            raise DatasetError(
                f"{label}: '{key}' has {array.shape[0]} rows, but 'observations' has {rows}"
            )
    if rows == 0:
        raise DatasetError(f"{label}: the file has no transitions")
    return arrays


def _derive_next_observations(
    arrays: dict[str, np.ndarray], label: str
) -> tuple[dict[str, np.ndarray], int, int, int]:
    """Next observations from the following rows; the arrays without the rows whose next
    observation is unknown, the number of such rows, how many of them were terminal, and
    whether the file's last episode was left open (1) or not (0)."""
    terminals, timeouts = arrays["terminals"], arrays["timeouts"]
    ends = terminals | timeouts
    cut = int(not ends[-1])
    # Only a row that continues its episode has its next observation in the file; the file's
    # last row never has (whether or not it ends an episode).
    known = ~ends
    known[-1] = False
    observations = arrays["observations"]
    next_observations = np.empty_like(observations)
    next_observations[:-1] = observations[1:]
    # The row before each dropped one (if it is of the same episode: a kept row is no end)
    # now ends its episode, cut short.
    dropped = np.flatnonzero(~known)
    before = dropped[dropped > 0] - 1
    new_timeouts = timeouts.copy()
    new_timeouts[before[known[before]]] = True
    if not known.any():
        raise DatasetError(
            f"{label}: no 'next_observations' and no row continues an episode, so no "
            "transition can be rebuilt"
        )
    out = {key: arrays[key][known] for key in ("observations", "actions", "rewards")}
    out["terminals"] = terminals[known]  # all False: every kept row continues its episode
    out["timeouts"] = new_timeouts[known]
    out["next_observations"] = next_observations[known]
    return out, int(dropped.size), int(terminals[dropped].sum()), cut


def _metadata(handle: h5py.File) -> dict[str, Any]:
    """Scalar text and numbers under `metadata/`, by their path below it."""
    group = handle.get("metadata")
    if not isinstance(group, h5py.Group):
        return {}
    found: dict[str, Any] = {}

    def keep(name: str, node: Any) -> None:
        if isinstance(node, h5py.Dataset) and node.shape == ():
            value = plain(node[()])
            if value is not None:
                found[name] = value

    group.visititems(keep)
    return found
