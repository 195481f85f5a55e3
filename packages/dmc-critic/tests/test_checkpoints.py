"""Critic checkpoints round-trip exactly and refuse files that are not intact critics."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from dmc_core.checkpoint import save_checkpoint, sidecar_path
from dmc_core.errors import CheckpointError, ConfigError
from dmc_core.seeding import torch_generator
from dmc_core.testing import toy_dataset
from dmc_critic import (
    CriticSpec,
    IQLCritic,
    TransitionSampler,
    build_critic,
    fit_iql,
    load_critic,
    save_critic,
)


def _trained(tmp_path: Path) -> tuple[IQLCritic, Path]:
    torch.manual_seed(0)
    dataset = toy_dataset(episodes=4, horizon=5)
    spec = CriticSpec(hidden=8, fourier_frequencies=2)
    critic = build_critic(spec, dataset)
    fit_iql(critic, TransitionSampler(dataset, spec), spec.train, torch_generator(0), steps=5)
    path = save_critic(tmp_path / "critic.safetensors", critic, {"steps": 5, "reward_factor": 1.0})
    return critic, path


def test_round_trip_gives_identical_values_spec_and_normalisers(tmp_path: Path) -> None:
    critic, path = _trained(tmp_path)
    loaded = load_critic(path)
    obs, act = torch.randn(7, 1), torch.rand(7, 1) * 2 - 1
    assert torch.equal(loaded.q(obs, act), critic.q(obs, act))
    assert torch.equal(loaded.v(obs), critic.v(obs))
    assert loaded.spec == critic.spec
    assert torch.equal(loaded.obs_normalizer.low, critic.obs_normalizer.low)
    sidecar = yaml.safe_load(sidecar_path(path).read_text())
    assert sidecar["config"]["checkpoint_kind"] == "dmc-critic"
    assert sidecar["metadata"] == {"steps": 5, "reward_factor": 1.0}


def test_corrupted_weights_are_reported_with_the_file(tmp_path: Path) -> None:
    _, path = _trained(tmp_path)
    path.write_bytes(b"not safetensors at all")
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        load_critic(path)


def test_a_missing_file_is_reported_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.safetensors"
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        load_critic(path)


def test_another_kind_of_checkpoint_is_refused_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, {"w": torch.zeros(2)}, {"checkpoint_kind": "dmc-control-model"})
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: not a dmc critic checkpoint")):
        load_critic(path)


def test_weights_that_do_not_fit_the_recorded_spec_are_refused(tmp_path: Path) -> None:
    _, path = _trained(tmp_path)
    side = sidecar_path(path)
    sidecar = yaml.safe_load(side.read_text())
    sidecar["config"]["spec"]["hidden"] = 16
    side.write_text(yaml.safe_dump(sidecar))
    fits = f"{path}: weights do not fit the recorded spec: '"
    with pytest.raises(CheckpointError, match=re.escape(fits)) as refused:
        load_critic(path)
    assert "the file has" in str(refused.value) and "\n" not in str(refused.value)


def test_an_invalid_recorded_spec_names_the_file_and_key(tmp_path: Path) -> None:
    _, path = _trained(tmp_path)
    side = sidecar_path(path)
    sidecar = yaml.safe_load(side.read_text())
    sidecar["config"]["spec"]["expectile"] = 2.0
    side.write_text(yaml.safe_dump(sidecar))
    with pytest.raises(ConfigError, match=re.escape(f"{path}: spec.expectile")):
        load_critic(path)
