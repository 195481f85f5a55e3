"""Tests for the Nav1D gymnasium environment and its registration."""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from scipy import stats

from dmc_envs.nav1d import ENV_ID, Nav1DEnv, Nav1DTask, register_nav1d


def test_passes_gymnasium_env_checker() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(Nav1DEnv(), skip_render_check=True)


def test_spaces() -> None:
    env = Nav1DEnv()
    np.testing.assert_array_equal(env.observation_space.low, [-1.0, 0.0])
    np.testing.assert_array_equal(env.observation_space.high, [1.0, 1.0])
    assert env.observation_space.dtype == np.float32
    assert env.action_space.shape == (1,) and env.action_space.dtype == np.float32
    np.testing.assert_array_equal(env.action_space.low, [-1.0])
    np.testing.assert_array_equal(env.action_space.high, [1.0])


def test_episode_transitions_match_the_task() -> None:
    kwargs = {"horizon": 5, "step_size": 0.3, "reward_width_spread": 0.3, "reward_seed": 7}
    env, task = Nav1DEnv(**kwargs), Nav1DTask.from_params(**kwargs)
    obs, info = env.reset(options={"start": 0.1})
    np.testing.assert_array_equal(obs, np.array([0.1, 0.0], dtype=np.float32))
    assert info == {"state": 0.1, "t": 0}
    state = 0.1
    for t, action in enumerate([0.5, -1.0, 3.0, 0.2, -0.7]):
        obs, reward, terminated, truncated, info = env.step(np.array([action], np.float32))
        executed = np.clip(np.float64(np.float32(action)), -1.0, 1.0)
        expected = float(np.clip(state + 0.3 * executed, -1.0, 1.0))
        assert info == {"state": expected, "t": t + 1}
        assert reward == float(task.reward(t, expected))
        np.testing.assert_array_equal(obs, task.observe(expected, t + 1))
        assert terminated is False
        assert truncated is (t == 4)
        state = expected
    # An action of 3 is clipped to 1, so the third step moved by exactly one step size.
    assert obs.shape == (2,) and obs[1] == 1.0


def test_stepping_after_truncation_or_before_reset_raises() -> None:
    env = Nav1DEnv(horizon=2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(1, np.float32))
    env.reset(seed=0)
    env.step(np.zeros(1, np.float32))
    *_, truncated, _ = env.step(np.zeros(1, np.float32))
    assert truncated
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step(np.zeros(1, np.float32))
    env.reset(seed=1)
    env.step(np.zeros(1, np.float32))  # a reset makes stepping legal again


def test_reset_rejects_starts_outside_the_state_space() -> None:
    with pytest.raises(ValueError, match="start"):
        Nav1DEnv().reset(options={"start": 1.5})


def test_seeded_resets_are_reproducible_and_uniform() -> None:
    env = Nav1DEnv()
    first = [env.reset(seed=s)[1]["state"] for s in range(3)]
    again = [env.reset(seed=s)[1]["state"] for s in range(3)]
    assert first == again
    env.reset(seed=123)
    starts = np.array([env.reset()[1]["state"] for _ in range(2000)])
    assert np.all(np.abs(starts) <= 1.0)
    assert stats.kstest(starts, stats.uniform(loc=-1, scale=2).cdf).pvalue > 1e-3


def test_registration_is_idempotent_and_make_works() -> None:
    register_nav1d()
    register_nav1d()
    assert gymnasium.spec(ENV_ID).max_episode_steps is None
    env = gymnasium.make(ENV_ID, horizon=5)
    env.reset(seed=0)
    flags = [env.step(np.ones(1, np.float32))[3] for _ in range(5)]
    assert flags == [False] * 4 + [True]
    assert env.unwrapped.task.horizon == 5
    env.close()
