"""Dataset faults a training stage must refuse in one line (exit status 2) before it trains."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import h5py
import pytest
import yaml

from dmc_core.data import write_dataset
from dmc_core.testing import run_module, toy_dataset


def _actions_of_fifty(handle: h5py.File) -> None:
    actions = handle["actions"][()]
    actions[3] = 50.0
    del handle["actions"]
    handle.create_dataset("actions", data=actions)


def _malformed_attribute(handle: h5py.File) -> None:
    handle.attrs["action_high"] = "[1.0"


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (_actions_of_fifty, "'actions' lie outside the recorded action space"),
        (_malformed_attribute, "attribute 'action_high' is not valid JSON"),
    ],
    ids=["action-out-of-space", "malformed-attribute"],
)
def test_pretrain_refuses_a_broken_dataset_in_one_line(
    tmp_path: Path, fault: object, expected: str
) -> None:
    data = toy_dataset()
    attrs = {**data.attrs, "action_low": [-1.0], "action_high": [1.0]}
    path = write_dataset(tmp_path / "d.hdf5", dataclasses.replace(data, attrs=attrs))
    with h5py.File(path, "a") as handle:
        fault(handle)  # type: ignore[operator]
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"base": {"seed": 0}, "pretrain": {"models": {"m": {}}}}))
    out = tmp_path / "m"
    done = run_module(
        "dmc_core", "pretrain", "--name", "m", "--dataset", str(path), "--out", str(out),
        "--params", str(params),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"dmc_core pretrain: error: {path}: {expected}")
    assert not (out / "model.safetensors").exists()
