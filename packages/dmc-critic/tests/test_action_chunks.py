"""A critic of action chunks: its rows, its k-step backup, what it scores, and what it learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dmc_core.data import TransitionDataset
from dmc_core.models.normalizer import RangeNormalizer
from dmc_core.seeding import torch_generator
from dmc_critic import (
    CriticSpec,
    CriticTrainSpec,
    IQLCritic,
    TransitionSampler,
    build_critic,
    fit_iql,
)
from dmc_critic.fit_critic import rank_correlation

ATTRS = {"env_id": "toy", "dataset_kind": "toy", "behavior_policy": "uniform", "seed": 0}


def two_episodes() -> TransitionDataset:
    """Rows 0-3 end in a terminal, rows 4-6 in a time limit; row i has action i, reward i + 1
    and next observation 10 * i."""
    rows = np.arange(7, dtype=np.float32)
    return TransitionDataset(
        observations=rows[:, None].copy(),
        actions=rows[:, None].copy(),
        rewards=rows + 1,
        terminals=np.array([0, 0, 0, 1, 0, 0, 0], dtype=bool),
        timeouts=np.array([0, 0, 0, 0, 0, 0, 1], dtype=bool),
        next_observations=10 * rows[:, None],
        attrs=ATTRS,
    )


def test_chunk_rows_sum_their_rewards_inside_the_episode_and_stop_at_its_end() -> None:
    """Catches: a chunk running into the next episode, rewards discounted from the wrong
    power, the next observation of the wrong row, a timeout taken for a terminal."""
    spec = CriticSpec(action_chunk=3, discount=0.5, terminal_on_timeout=False)
    batch = TransitionSampler(two_episodes(), spec).batch(torch.arange(7))
    expected_actions = [[0, 1, 2], [1, 2, 3], [2, 3, 3], [3, 3, 3], [4, 5, 6], [5, 6, 6], [6, 6, 6]]
    assert batch.act.tolist() == expected_actions
    # Row 0: 1 + 0.5 * 2 + 0.25 * 3; row 2: 3 + 0.5 * 4, then the terminal; row 4: 5 + 3 + 1.75.
    assert batch.reward.tolist() == [2.75, 4.5, 5.0, 4.0, 9.75, 9.5, 7.0]
    assert batch.next_obs[:, 0].tolist() == [20, 30, 30, 30, 60, 60, 60]
    assert batch.done.tolist() == [0, 1, 1, 1, 0, 0, 0]
    assert batch.steps.tolist() == [3, 3, 2, 1, 3, 2, 1]


def test_a_critic_of_single_actions_keeps_the_rows_as_they_are() -> None:
    data = two_episodes()
    batch = TransitionSampler(data, CriticSpec(discount=0.5)).batch(torch.arange(7))
    assert batch.act[:, 0].tolist() == data.actions[:, 0].tolist()
    assert batch.reward.tolist() == data.rewards.tolist()
    assert batch.next_obs.tolist() == data.next_observations.tolist()
    assert batch.steps.tolist() == [1] * 7


def chunk_critic(chunk: int) -> IQLCritic:
    torch.manual_seed(0)
    spec = CriticSpec(
        hidden=8, fourier_frequencies=1, action_chunk=chunk, discount=0.9, terminal_on_timeout=False
    )
    obs = RangeNormalizer(torch.tensor([-1.0]), torch.tensor([1.0]))
    act = RangeNormalizer(torch.tensor([-2.0]), torch.tensor([2.0]))
    return IQLCritic(spec, obs, act)


def test_the_backup_discounts_each_row_by_gamma_to_the_steps_it_covers() -> None:
    critic = chunk_critic(2)
    batch = TransitionSampler(two_episodes(), critic.spec).batch(torch.tensor([0, 3, 6]))
    _, metrics = critic.loss(batch)
    with torch.no_grad():
        next_v = critic.v(batch.next_obs)
    # Row 0 covers two steps (0.81), row 3 is the terminal, row 6 one step to the time limit.
    expected = batch.reward + torch.tensor([0.81, 0.0, 0.9]) * next_v
    assert metrics["target_mean"] == pytest.approx(float(expected.mean()), rel=1e-6)


def test_q_chunk_scores_the_first_k_actions_of_a_sequence_and_refuses_shorter_ones() -> None:
    critic = chunk_critic(2)
    obs = torch.zeros(4, 1)
    sequence = torch.linspace(-1, 1, 12).reshape(4, 3, 1)
    with torch.no_grad():
        scored = critic.q_chunk(obs, sequence)
        assert torch.equal(scored, critic.q(obs, sequence[:, :2].flatten(1)))
        third_changed = sequence.clone()
        third_changed[:, 2] += 1.0
        assert torch.equal(critic.q_chunk(obs, third_changed), scored)
        second_changed = sequence.clone()
        second_changed[:, 1] += 1.0
        assert not torch.equal(critic.q_chunk(obs, second_changed), scored)
    with pytest.raises(ValueError, match="chunks of 2 actions"):
        critic.q_chunk(obs, sequence[:, :1])


def later_action_pays(episodes: int = 256) -> TransitionDataset:
    """Two-step episodes from observation 0: the first action earns nothing, the second
    earns -a^2 (both uniform on [-1, 1]); the second step observes 1."""
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (episodes, 2)).astype(np.float32)
    obs = np.tile(np.array([0.0, 1.0], dtype=np.float32), episodes)[:, None]
    rewards = np.stack([np.zeros(episodes), -(actions[:, 1] ** 2)], axis=1)
    return TransitionDataset(
        observations=obs,
        actions=actions.reshape(-1, 1),
        rewards=rewards.reshape(-1).astype(np.float32),
        terminals=np.tile([False, True], episodes),
        timeouts=np.zeros(2 * episodes, dtype=bool),
        next_observations=np.tile(np.array([1.0, 1.0], dtype=np.float32), episodes)[:, None],
        attrs=ATTRS,
    )


def test_a_critic_of_two_action_chunks_ranks_chunks_by_what_their_second_action_earns(
    one_thread: None,
) -> None:
    """At the first state, Q of the chunk (a_0, a_1) is -a_1^2: a critic that saw only the
    first action (or read the chunk in the wrong order) cannot rank chunks by a_1."""
    data = later_action_pays()
    spec = CriticSpec(
        hidden=32,
        fourier_frequencies=0,
        action_chunk=2,
        discount=1.0,
        expectile=0.5,
        train=CriticTrainSpec(batch_size=64, lr=3e-3),
    )
    torch.manual_seed(0)
    critic = build_critic(spec, data)
    fit_iql(critic, TransitionSampler(data, spec), spec.train, torch_generator(0), 1500)
    second = torch.linspace(-1, 1, 21)
    chunks = torch.stack([torch.full_like(second, 0.3), second], dim=1)[..., None]
    with torch.no_grad():
        q = critic.q_chunk(torch.zeros(21, 1), chunks)
    assert rank_correlation(q.double(), -second.double().square()) > 0.9
