"""Tests for vectorised Nav1D rollouts in the D4RL layout."""

from __future__ import annotations

import numpy as np
import pytest

from dmc_envs.nav1d import (
    Nav1DEnv,
    Nav1DTask,
    NoisyOptimalPolicy,
    UniformPolicy,
    rollout,
    solve,
)

KWARGS = {"horizon": 5, "step_size": 0.35, "reward_width_spread": 0.4, "reward_seed": 11}


@pytest.fixture(scope="module")
def task() -> Nav1DTask:
    return Nav1DTask.from_params(**KWARGS)


def test_layout_shapes_and_flags(task: Nav1DTask) -> None:
    starts = np.array([-1.0, -0.2, 0.4, 1.0])
    data = rollout(task, UniformPolicy(), starts, np.random.default_rng(0))
    n = 4 * 5
    expected = {
        "observations": ((n, 2), np.float32),
        "actions": ((n, 1), np.float32),
        "rewards": ((n,), np.float32),
        "next_observations": ((n, 2), np.float32),
        "terminals": ((n,), np.bool_),
        "timeouts": ((n,), np.bool_),
    }
    assert {k: (v.shape, v.dtype) for k, v in data.items()} == expected
    assert not data["terminals"].any()
    np.testing.assert_array_equal(np.flatnonzero(data["timeouts"]), [4, 9, 14, 19])
    # Episode-major: each episode's rows are contiguous, starting at its start state.
    np.testing.assert_array_equal(data["observations"][::5, 0], starts.astype(np.float32))
    np.testing.assert_array_equal(
        data["observations"][:, 1], np.tile(np.arange(5, dtype=np.float32) / 5, 4)
    )
    chained = ~data["timeouts"][:-1]
    np.testing.assert_array_equal(
        data["next_observations"][:-1][chained], data["observations"][1:][chained]
    )
    np.testing.assert_array_equal(data["next_observations"][data["timeouts"], 1], 1.0)


def test_rows_equal_the_gym_env_transitions(task: Nav1DTask) -> None:
    policy = NoisyOptimalPolicy(solve(task, grid_per_step=10), noise_std=0.4)
    rng = np.random.default_rng(3)
    starts = rng.uniform(-1, 1, 16)
    data = rollout(task, policy, starts, rng)
    env = Nav1DEnv(**KWARGS)
    for episode, start in enumerate(starts):
        obs, _ = env.reset(options={"start": float(start)})
        for t in range(5):
            row = episode * 5 + t
            np.testing.assert_array_equal(data["observations"][row], obs)
            obs, reward, terminated, truncated, _ = env.step(data["actions"][row])
            np.testing.assert_array_equal(data["next_observations"][row], obs)
            assert data["rewards"][row] == np.float32(reward)
            assert data["terminals"][row] == terminated
            assert data["timeouts"][row] == truncated


def test_same_generator_state_gives_the_same_data(task: Nav1DTask) -> None:
    policy = NoisyOptimalPolicy(solve(task, grid_per_step=10), noise_std=0.2)
    starts = np.linspace(-1, 1, 9)
    first = rollout(task, policy, starts, np.random.default_rng(5))
    second = rollout(task, policy, starts, np.random.default_rng(5))
    third = rollout(task, policy, starts, np.random.default_rng(6))
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    assert not np.array_equal(first["actions"], third["actions"])


@pytest.mark.parametrize("starts", [np.array([0.0, 1.5]), np.zeros((2, 2)), np.array([np.nan])])
def test_rejects_bad_starts(task: Nav1DTask, starts: np.ndarray) -> None:
    with pytest.raises(ValueError, match="starts"):
        rollout(task, UniformPolicy(), starts, np.random.default_rng(0))


def test_rejects_a_policy_with_the_wrong_action_shape(task: Nav1DTask) -> None:
    class FlatPolicy(UniformPolicy):
        def sample(self, states: np.ndarray, t: int, rng: np.random.Generator) -> np.ndarray:
            return super().sample(states, t, rng)[:, 0]  # (B,) instead of (B, 1)

    with pytest.raises(ValueError, match="shape"):
        rollout(task, FlatPolicy(), np.zeros(3), np.random.default_rng(0))
