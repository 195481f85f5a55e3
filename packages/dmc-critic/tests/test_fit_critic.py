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
from dmc_critic import CriticSpec, CriticTrainSpec, load_critic, returns_to_go
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


def test_the_share_of_states_where_q_prefers_the_data_action_is_recorded(
    tmp_path: Path, one_thread: None
) -> None:
    """One-step episodes, reward = (a - 100) / 100 on actions in [100, 200] drawn as
    100 + 100 v^(1/4): a critic that learns Q = reward prefers the data's action to a uniform
    one with probability E[v^(1/4)] = 0.8. Comparing the other way (0.2), drawing the uniform
    actions off the data's box (in [0, 1] the data always wins: 1.0), or recording another
    number fails this."""
    rows = 512
    rng = np.random.default_rng(0)
    actions = (100 + 100 * rng.uniform(0, 1, (rows, 1)) ** 0.25).astype(np.float32)
    obs = rng.uniform(-1, 1, (rows, 1)).astype(np.float32)
    data = TransitionDataset(
        observations=obs,
        actions=actions,
        rewards=(actions[:, 0] - 100) / 100,
        terminals=np.ones(rows, dtype=bool),
        timeouts=np.zeros(rows, dtype=bool),
        next_observations=obs.copy(),
        attrs={"env_id": "bandit", "dataset_kind": "toy", "behavior_policy": "skewed"},
    )
    run = CriticRun(spec(steps=600, batch_size=64), data, tmp_path, CPU, 0, "skewed")
    run.train()
    sidecar = yaml.safe_load((tmp_path / "critic.yaml").read_text())
    preferred = sidecar["metadata"]["data_action_preferred"]
    assert 0.7 < preferred < 0.9
    assert preferred == run.in_sample_checks()["data_action_preferred"]


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


def test_a_critic_of_episodes_ending_on_success_warns_unless_rewards_are_shifted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = 30  # ten episodes of three rows; the last row of each is a success paying 1
    obs = np.linspace(0.0, 1.0, rows, dtype=np.float32)[:, None]
    ending = TransitionDataset(
        observations=obs,
        actions=np.zeros((rows, 1), dtype=np.float32),
        rewards=np.tile([0.5, 0.5, 1.0], 10).astype(np.float32),
        terminals=np.tile([False, False, True], 10),
        timeouts=np.zeros(rows, dtype=bool),
        next_observations=obs + 0.01,
    )
    with caplog.at_level("WARNING", logger="dmc_critic.fit_critic"):
        CriticRun(spec(), ending, tmp_path / "a", CPU, 0, "pusht")
    assert "fit_critic.critics.pusht" in caplog.text and "reward_shift: -1" in caplog.text
    caplog.clear()
    shifted = dataclasses.replace(spec(), reward_shift=-1.0)
    with caplog.at_level("WARNING", logger="dmc_critic.fit_critic"):
        CriticRun(shifted, ending, tmp_path / "b", CPU, 0, "pusht")
    assert "reward_shift" not in caplog.text


def test_the_ranking_check_ranks_the_rewards_q_learns_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Episodes of 2, 4 and 6 rows that end on success (reward 1, else 0.5). Shifted by -1,
    # the shortest episode's rows are worth the most; by the raw rewards, the longest's.
    lengths = [2, 4, 6]
    rewards = np.concatenate([[0.5] * (n - 1) + [1.0] for n in lengths]).astype(np.float32)
    ends = np.concatenate([[False] * (n - 1) + [True] for n in lengths])
    obs = np.arange(rewards.size, dtype=np.float32)[:, None]
    data = TransitionDataset(
        observations=obs,
        actions=np.zeros((rewards.size, 1), dtype=np.float32),
        rewards=rewards,
        terminals=ends,
        timeouts=np.zeros(rewards.size, dtype=bool),
        next_observations=obs + 1,
    )
    shifted = dataclasses.replace(spec(), reward_shift=-1.0, discount=1.0)
    run = CriticRun(shifted, data, tmp_path, CPU, 0, "oracle")
    # An oracle Q: the true value of each row under the shifted rewards, looked up by state.
    value = torch.tensor(returns_to_go(data, 1.0, rewards=rewards - 1.0), dtype=torch.float32)
    monkeypatch.setattr(run.critic, "q", lambda o, a: value[o[:, 0].long()])
    assert run.in_sample_checks()["spearman_returns_to_go"] == pytest.approx(1.0)


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
