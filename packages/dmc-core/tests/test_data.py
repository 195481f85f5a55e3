"""The dataset contract: round trip, and every broken rule is reported with file and problem."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from dmc_core.data import read_dataset, write_dataset
from dmc_core.errors import DatasetError
from dmc_core.testing import toy_dataset


def test_round_trip_keeps_arrays_dtypes_and_attrs(tmp_path: Path) -> None:
    attrs = {
        "env_id": "toy",
        "dataset_kind": "x",
        "behavior_policy": "r",
        "seed": 3,
        "env_kwargs": {"horizon": 4, "widths": [0.1, 0.2]},
    }
    data = toy_dataset(attrs=attrs)
    path = write_dataset(tmp_path / "d.hdf5", data)
    back = read_dataset(path)
    for key, array in data.arrays().items():
        np.testing.assert_array_equal(getattr(back, key), array)
        assert getattr(back, key).dtype == array.dtype
    assert back.attrs == attrs
    assert back.num_episodes == 3
    assert [s.stop - s.start for s in back.episode_slices()] == [4, 4, 4]


def test_identical_data_gives_identical_bytes(tmp_path: Path) -> None:
    first = write_dataset(tmp_path / "a.hdf5", toy_dataset()).read_bytes()
    second = write_dataset(tmp_path / "b.hdf5", toy_dataset()).read_bytes()
    assert first == second


def edit(path: Path, key: str, value: Any) -> None:
    with h5py.File(path, "a") as handle:
        del handle[key]
        handle.create_dataset(key, data=value)


def broken_file(tmp_path: Path, key: str, change: Any) -> Path:
    data = toy_dataset()
    path = write_dataset(tmp_path / "d.hdf5", data)
    edit(path, key, change(getattr(data, key).copy()))
    return path


def nan_row(array: np.ndarray) -> np.ndarray:
    array[5] = np.nan
    return array


def jump(array: np.ndarray) -> np.ndarray:
    array[1] += 1.0
    return array


@pytest.mark.parametrize(
    ("key", "change", "expected"),
    [
        ("rewards", lambda a: a[:-1], "'rewards' has 11 rows, but 'observations' has 12"),
        ("actions", lambda a: a[:, 0], "'actions' has shape (12,), expected 2 dimension(s)"),
        ("rewards", lambda a: a.astype(np.int64), "'rewards' must be floating point"),
        ("timeouts", lambda a: a.astype(np.int8) * 2, "'timeouts' must be boolean"),
        ("observations", nan_row, "'observations' has a non-finite value (NaN or inf) in row 5"),
        ("timeouts", lambda a: np.zeros_like(a), "the last row ends no episode"),
        ("next_observations", jump, "episode continuity broken at row 1"),
    ],
)
def test_each_broken_rule_names_the_file_and_the_problem(
    tmp_path: Path, key: str, change: Any, expected: str
) -> None:
    path = broken_file(tmp_path, key, change)
    with pytest.raises(DatasetError) as info:
        read_dataset(path)
    assert str(info.value).startswith(str(path))
    assert expected in str(info.value)


def test_missing_array_and_missing_attrs_are_named(tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "d.hdf5", toy_dataset())
    with h5py.File(path, "a") as handle:
        del handle.attrs["seed"]
    with pytest.raises(DatasetError, match=r"missing provenance attribute\(s\) \['seed'\]"):
        read_dataset(path)
    assert len(read_dataset(path, require_attrs=False)) == 12
    with h5py.File(path, "a") as handle:
        del handle["terminals"]
    with pytest.raises(DatasetError, match="missing array 'terminals'"):
        read_dataset(path, require_attrs=False)


def test_not_hdf5_and_absent_files_are_named(tmp_path: Path) -> None:
    junk = tmp_path / "junk.hdf5"
    junk.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(DatasetError, match=r"junk\.hdf5: not a readable HDF5 file"):
        read_dataset(junk)
    with pytest.raises(DatasetError, match=r"absent\.hdf5: dataset file not found"):
        read_dataset(tmp_path / "absent.hdf5")


def test_writer_refuses_an_invalid_dataset_and_writes_nothing(tmp_path: Path) -> None:
    bad = dataclasses.replace(toy_dataset(), rewards=np.full(12, np.inf, dtype=np.float32))
    with pytest.raises(DatasetError, match="non-finite"):
        write_dataset(tmp_path / "d.hdf5", bad)
    assert not any(tmp_path.iterdir())


def bounded(tmp_path: Path, actions: np.ndarray | None = None, **bounds: Any) -> Path:
    """A toy dataset file recording action bounds (default [-1, 1]), its actions replaced."""
    data = toy_dataset()
    attrs = {**data.attrs, "action_low": [-1.0], "action_high": [1.0], **bounds}
    path = write_dataset(tmp_path / "d.hdf5", dataclasses.replace(data, attrs=attrs))
    if actions is not None:
        edit(path, "actions", actions)
    return path


def test_actions_outside_the_recorded_action_space_are_named(tmp_path: Path) -> None:
    actions = toy_dataset().actions.copy()
    actions[[4, 9]] = 50.0
    path = bounded(tmp_path, actions)
    expected = (
        f"{path}: 'actions' lie outside the recorded action space [[-1.0], [1.0]] (attributes "
        "['action_low', 'action_high']) in 2 row(s), the first row 4: [50.0]"
    )
    with pytest.raises(DatasetError, match=re.escape(expected)):
        read_dataset(path)
    with pytest.raises(DatasetError, match="outside the recorded action space"):
        read_dataset(path, require_attrs=False)  # bounds recorded: checked all the same


def test_files_without_bounds_stay_readable_and_bad_bounds_are_named(tmp_path: Path) -> None:
    actions = toy_dataset().actions * 50.0
    path = write_dataset(tmp_path / "d.hdf5", toy_dataset())
    edit(path, "actions", actions)
    assert np.array_equal(read_dataset(path).actions, actions)
    with pytest.raises(DatasetError, match=r"attribute 'action_high' must be 1 finite number"):
        read_dataset(bounded(tmp_path, action_high=[1.0, 2.0]))


def test_a_malformed_json_attribute_is_named(tmp_path: Path) -> None:
    path = bounded(tmp_path)
    with h5py.File(path, "a") as handle:
        handle.attrs["action_low"] = "[-1.0,"
    with pytest.raises(DatasetError, match=rf"^{path}: attribute 'action_low' is not valid JSON"):
        read_dataset(path)
    with h5py.File(path, "a") as handle:
        handle.attrs["_json_attrs"] = "{oops"
    with pytest.raises(DatasetError, match=r"attribute '_json_attrs' is not valid JSON"):
        read_dataset(path)
