"""Checkpoints: safetensors + YAML sidecar round trip; nothing is ever unpickled."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch
import yaml

from dmc_core.checkpoint import (
    check_state_fits,
    checkpoint_kind,
    checkpoint_metadata,
    load_checkpoint,
    save_checkpoint,
    sidecar_path,
)
from dmc_core.errors import CheckpointError, NonFiniteCheckpointError
from dmc_core.testing import poison_checkpoint


def tensors() -> dict[str, torch.Tensor]:
    weight = torch.randn(4, 3)
    return {"layer.weight": weight, "layer.bias": torch.arange(4.0), "tied": weight}


def test_round_trip_keeps_tensors_config_and_metadata(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.safetensors", tensors(), {"width": 4}, {"step": 10})
    loaded = load_checkpoint(path)
    for name, value in tensors().items():
        assert name in loaded.tensors
        assert loaded.tensors[name].shape == value.shape
    assert torch.equal(loaded.tensors["layer.bias"], torch.arange(4.0))
    assert torch.equal(loaded.tensors["tied"], loaded.tensors["layer.weight"])
    assert loaded.config == {"width": 4}
    assert loaded.metadata == {"step": 10}
    assert sidecar_path(path) == tmp_path / "m.yaml"


def test_the_kind_a_sidecar_records_is_read_without_the_weights(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.safetensors", tensors(), {"checkpoint_kind": "dmc-x"})
    path.write_bytes(b"not read")
    assert checkpoint_kind(path) == "dmc-x"
    plain = save_checkpoint(tmp_path / "p.safetensors", tensors(), {"width": 4})
    assert checkpoint_kind(plain) is None
    assert checkpoint_kind(tmp_path / "absent.safetensors") is None
    sidecar_path(plain).write_text("[not: a mapping")
    assert checkpoint_kind(plain) is None


def test_the_metadata_a_sidecar_records_is_read_without_the_weights(tmp_path: Path) -> None:
    """Catches: the metadata read from the config section, or a broken sidecar raising."""
    path = save_checkpoint(tmp_path / "m.safetensors", tensors(), {"step": 1}, {"ranking": 0.8})
    path.write_bytes(b"not read")
    assert checkpoint_metadata(path) == {"ranking": 0.8}
    assert checkpoint_metadata(tmp_path / "absent.safetensors") == {}
    sidecar_path(path).write_text("[not: a mapping")
    assert checkpoint_metadata(path) == {}


def test_a_pickle_posing_as_a_checkpoint_is_rejected_not_loaded(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.safetensors", tensors(), {})
    path.write_bytes(pickle.dumps({"evil": 1}))
    with pytest.raises(CheckpointError, match="do not match the sha256"):
        load_checkpoint(path)
    side = yaml.safe_load(sidecar_path(path).read_text())
    side["sha256"] = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    sidecar_path(path).write_text(yaml.safe_dump(side))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(path)


def test_a_stale_sidecar_is_detected(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.safetensors", tensors(), {"v": 1})
    old_sidecar = sidecar_path(path).read_text()
    save_checkpoint(path, {"other": torch.zeros(2)}, {"v": 2})
    sidecar_path(path).write_text(old_sidecar)
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(path)


@pytest.mark.parametrize("remove", ["weights", "sidecar"])
def test_missing_parts_are_named(tmp_path: Path, remove: str) -> None:
    path = save_checkpoint(tmp_path / "m.safetensors", tensors(), {})
    (path if remove == "weights" else sidecar_path(path)).unlink()
    expected = "checkpoint not found" if remove == "weights" else "sidecar m.yaml is missing"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path)


def test_path_must_be_safetensors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save_checkpoint(tmp_path / "m.pt", tensors(), {})


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_never_written(tmp_path: Path, bad: float) -> None:
    weights = tensors()
    weights["layer.bias"][1:3] = bad
    path = tmp_path / "m.safetensors"
    expected = f"{path}: refusing to write non-finite weights: 'layer.bias' has 2 of 4 entries"
    with pytest.raises(NonFiniteCheckpointError, match=re.escape(expected)):
        save_checkpoint(path, weights, {})
    assert list(tmp_path.iterdir()) == []


def test_a_non_finite_checkpoint_written_elsewhere_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.safetensors", tensors(), {})
    name = poison_checkpoint(path, entries=3)
    expected = f"{path}: non-finite weights: '{name}' has 3 of "
    with pytest.raises(NonFiniteCheckpointError, match=re.escape(expected)):
        load_checkpoint(path)


def test_a_state_that_does_not_fit_names_the_first_tensor_and_both_shapes() -> None:
    expected = {"a": torch.zeros(2), "b": torch.zeros(4, 3)}
    with pytest.raises(CheckpointError, match=re.escape("m: weights do not fit the spec: 'b'")):
        check_state_fits("m", expected, {"a": torch.zeros(2), "b": torch.zeros(4, 5)}, "the spec")
    with pytest.raises(CheckpointError, match=re.escape("(4, 3), the file has (4, 5)")):
        check_state_fits("m", expected, {"a": torch.zeros(2), "b": torch.zeros(4, 5)})
    with pytest.raises(CheckpointError, match=re.escape("missing ['b'], unexpected ['c']")):
        check_state_fits("m", expected, {"a": torch.zeros(2), "c": torch.zeros(1)})
