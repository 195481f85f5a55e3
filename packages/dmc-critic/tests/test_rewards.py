"""Reward transformation, done flags, returns-to-go and the transition sampler, by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dmc_core.data import TransitionDataset
from dmc_core.errors import DatasetError
from dmc_core.seeding import torch_generator
from dmc_critic import (
    CriticSpec,
    TransitionSampler,
    done_flags,
    episode_returns,
    finishing_undervalued,
    returns_to_go,
    reward_factor,
    transform_rewards,
)


def _two_episodes(rewards: list[float] | None = None) -> TransitionDataset:
    """Episode A: 3 rows ending by timeout (return 6); episode B: 2 rows ending terminal (1)."""
    obs = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]], dtype=np.float32)
    next_obs = np.array([[1.0], [2.0], [3.0], [11.0], [12.0]], dtype=np.float32)
    return TransitionDataset(
        observations=obs,
        actions=np.array([[0.1], [0.2], [0.3], [0.4], [0.5]], dtype=np.float32),
        rewards=np.array(rewards or [1.0, 2.0, 3.0, 0.5, 0.5], dtype=np.float32),
        terminals=np.array([False, False, False, False, True]),
        timeouts=np.array([False, False, True, False, False]),
        next_observations=next_obs,
    )


def test_trajectory_range_scales_by_target_over_return_range_then_scale_and_shift() -> None:
    dataset = _two_episodes()
    np.testing.assert_allclose(episode_returns(dataset), [6.0, 1.0])
    spec = CriticSpec(reward_normalization="trajectory_range", reward_scale=2.0, reward_shift=-1.0)
    assert reward_factor(dataset, spec) == pytest.approx(1000.0 / 5.0)
    # r' = 2 * (200 r) - 1
    np.testing.assert_allclose(transform_rewards(dataset, spec), [399, 799, 1199, 199, 199])


def test_no_normalisation_applies_only_scale_and_shift() -> None:
    spec = CriticSpec(reward_scale=0.5, reward_shift=1.0)
    assert reward_factor(_two_episodes(), spec) == 1.0
    np.testing.assert_allclose(transform_rewards(_two_episodes(), spec), [1.5, 2, 2.5, 1.25, 1.25])


def test_trajectory_range_on_equal_returns_is_a_dataset_error() -> None:
    dataset = _two_episodes([1.0, 2.0, 3.0, 3.0, 3.0])
    with pytest.raises(DatasetError, match="different returns"):
        reward_factor(dataset, CriticSpec(reward_normalization="trajectory_range"))


def test_done_flags_count_timeouts_only_when_asked() -> None:
    dataset = _two_episodes()
    np.testing.assert_array_equal(done_flags(dataset, True), [0, 0, 1, 0, 1])
    np.testing.assert_array_equal(done_flags(dataset, False), [0, 0, 0, 0, 1])


def test_returns_to_go_by_hand() -> None:
    dataset = _two_episodes()
    np.testing.assert_allclose(returns_to_go(dataset, 1.0), [6.0, 5.0, 3.0, 1.0, 0.5])
    # discount 0.5: 1 + .5 (2 + .5 * 3), 2 + .5 * 3, 3 | .5 + .5 * .5, .5
    np.testing.assert_allclose(returns_to_go(dataset, 0.5), [2.75, 3.5, 3.0, 0.75, 0.5])
    doubled = returns_to_go(dataset, 1.0, rewards=2 * dataset.rewards)
    np.testing.assert_allclose(doubled, [12.0, 10.0, 6.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="shape"):
        returns_to_go(dataset, 1.0, rewards=np.zeros(3))


def _ending_on(terminal_reward: float, other: float, episodes: int = 4) -> TransitionDataset:
    """Episodes of 3 rows paying `other`, each ending terminal with `terminal_reward`."""
    rows = 3 * episodes
    rewards = np.tile([other, other, terminal_reward], episodes).astype(np.float32)
    ends = np.tile([False, False, True], episodes)
    obs = np.arange(rows, dtype=np.float32)[:, None]
    return TransitionDataset(
        observations=obs,
        actions=np.zeros((rows, 1), dtype=np.float32),
        rewards=rewards,
        terminals=ends,
        timeouts=np.zeros(rows, dtype=bool),
        next_observations=obs + 1,
    )


def test_a_success_that_ends_the_episode_with_positive_rewards_is_named() -> None:
    # PushT: reward = coverage (<= 1), the episode ends when it reaches 1.
    pusht = _ending_on(1.0, 0.5)
    problem = finishing_undervalued(pusht, transform_rewards(pusht, CriticSpec()), 0.99)
    assert problem is not None and "reward_shift: -1" in problem and "4 of 4" in problem
    # r - 1: the largest reward is 0, and finishing is worth the most.
    shifted = transform_rewards(pusht, CriticSpec(reward_shift=-1.0))
    assert finishing_undervalued(pusht, shifted, 0.99) is None
    # Without discount any positive reward per step outlasts the terminal's.
    tiny = _ending_on(1.0, 0.001)
    assert finishing_undervalued(tiny, tiny.rewards, 1.0) is not None
    assert finishing_undervalued(tiny, tiny.rewards, 0.99) is None  # 0.1 over forever < 1


def test_ends_that_are_failures_or_pay_more_than_going_on_are_not_named() -> None:
    bonus = _ending_on(100.0, 0.0)  # a sparse success bonus, nothing on the way
    assert finishing_undervalued(bonus, bonus.rewards, 0.99) is None
    fall = _ending_on(-1.0, 1.0)  # locomotion: the end is a fall, not the best reward
    assert finishing_undervalued(fall, fall.rewards, 0.99) is None
    no_ends = _two_episodes([1.0, 2.0, 3.0, 0.5, 0.5])
    no_ends = TransitionDataset(
        **{
            **no_ends.arrays(),
            "terminals": np.zeros(5, dtype=bool),
            "timeouts": np.array([False, False, True, False, True]),
        }
    )
    assert finishing_undervalued(no_ends, no_ends.rewards, 0.99) is None


def test_sampler_batches_keep_rows_together_and_repeat_with_the_seed() -> None:
    dataset = _two_episodes()
    spec = CriticSpec(reward_scale=10.0)
    sampler = TransitionSampler(dataset, spec)
    batch = sampler.sample(64, torch_generator(3))
    rows = batch.obs[:, 0].long()  # every row has its own observation: find the row by it
    index = {0: 0, 1: 1, 2: 2, 10: 3, 11: 4}
    rows = torch.tensor([index[int(r)] for r in rows])
    assert len(batch) == 64 and len(set(rows.tolist())) == 5
    torch.testing.assert_close(batch.act[:, 0], torch.from_numpy(dataset.actions[rows.numpy(), 0]))
    torch.testing.assert_close(batch.reward, 10.0 * torch.from_numpy(dataset.rewards)[rows])
    torch.testing.assert_close(batch.done, torch.tensor([0.0, 0, 1, 0, 1])[rows])
    torch.testing.assert_close(batch.next_obs, batch.obs + 1.0)
    again = sampler.sample(64, torch_generator(3))
    assert torch.equal(again.obs, batch.obs)
