"""Stage `fit_critic`: the resumable run, its outputs, and the stage's errors."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from dmc_core.data import TransitionDataset, write_dataset
from dmc_core.errors import ConfigError
from dmc_core.training import World
from dmc_critic import CriticSpec, CriticTrainSpec, load_critic
from dmc_critic.fit_critic import CriticRun, FitCriticConfig, fit_critic, rank_correlation

CPU = World(0, 1, torch.device("cpu"))


def spec(**train: int) -> CriticSpec:
    schedule = {"steps": 40, "batch_size": 16, "checkpoint_every": 10, "log_every": 5} | train
    return CriticSpec(hidden=16, fourier_frequencies=1, train=CriticTrainSpec(**schedule))


def test_a_finished_run_writes_the_critic_and_its_learning_curve(
    tmp_path: Path, bandit: TransitionDataset, one_thread: None
) -> None:
    path = CriticRun(spec(), bandit, tmp_path, CPU, 0, "bandit").train()
    assert path == tmp_path / "critic.safetensors"
    critic = load_critic(path)
    sidecar = yaml.safe_load((tmp_path / "critic.yaml").read_text())
    assert sidecar["metadata"]["steps"] == 40
    assert -1.0 <= sidecar["metadata"]["spearman_returns_to_go"] <= 1.0
    assert critic.q(torch.zeros(2, 1), torch.zeros(2, 1)).shape == (2,)
    assert (tmp_path / "live" / "metrics.json").exists()
    assert not (tmp_path / ".resume").exists()


def test_a_dataset_of_float64_observations_is_fitted_and_ranked(
    tmp_path: Path, bandit: TransitionDataset, one_thread: None
) -> None:
    """Catches: the final ranking feeding float64 rows to a float32 critic (a medium_replay
    made from SAC's replay buffer failed so after its whole run)."""
    wide = dataclasses.replace(
        bandit,
        observations=bandit.observations.astype(np.float64),
        next_observations=bandit.next_observations.astype(np.float64),
    )
    CriticRun(spec(), wide, tmp_path, CPU, 0, "bandit").train()
    sidecar = yaml.safe_load((tmp_path / "critic.yaml").read_text())
    assert -1.0 <= sidecar["metadata"]["spearman_returns_to_go"] <= 1.0


def test_a_stopped_run_resumes_to_bit_identical_weights(
    tmp_path: Path, bandit: TransitionDataset, one_thread: None
) -> None:
    whole = CriticRun(spec(), bandit, tmp_path / "whole", CPU, 0, "b").train()
    assert CriticRun(spec(), bandit, tmp_path / "split", CPU, 0, "b").train(stop_after=20) is None
    assert (tmp_path / "split" / ".resume").exists()
    resumed = CriticRun(spec(), bandit, tmp_path / "split", CPU, 0, "b").train()
    first, second = load_file(str(whole)), load_file(str(resumed))
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0)


def test_a_snapshot_of_other_settings_is_not_resumed(
    tmp_path: Path, bandit: TransitionDataset, one_thread: None
) -> None:
    CriticRun(spec(), bandit, tmp_path, CPU, 0, "b").train(stop_after=20)
    assert CriticRun(spec(batch_size=8), bandit, tmp_path, CPU, 0, "b").restore_state() == 0
    assert CriticRun(spec(), bandit, tmp_path, CPU, 0, "b").restore_state() == 20


def test_the_stage_names_an_unknown_entry(tmp_path: Path, bandit: TransitionDataset) -> None:
    dataset = write_dataset(tmp_path / "d.hdf5", bandit)
    args = argparse.Namespace(name="nope", dataset=str(dataset), out=str(tmp_path), params="p.yaml")
    with pytest.raises(ConfigError, match=r"fit_critic.critics has no entry 'nope'"):
        fit_critic(FitCriticConfig(), args)


def test_rank_correlation_matches_hand_values() -> None:
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert rank_correlation(a, a * 10) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    # ranks (0,1,2,3) vs (1,0,3,2): 1 - 6 * 4 / (4 * 15) = 0.6
    assert rank_correlation(a, torch.tensor([2.0, 1.0, 4.0, 3.0])) == pytest.approx(0.6)
