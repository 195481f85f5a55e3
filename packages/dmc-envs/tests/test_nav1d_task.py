"""Tests for the Nav1D task: reward field generation, dynamics, rewards and observations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dmc_envs.nav1d import Nav1DTask

DEFAULTS = {
    "horizon": 16,
    "step_size": 0.2,
    "reward_width": 0.15,
    "reward_width_spread": 0.0,
    "reward_seed": 0,
}


def test_defaults_and_shapes() -> None:
    task = Nav1DTask.from_params()
    assert task.params == DEFAULTS
    assert task.horizon == 16 and task.step_size == 0.2
    assert task.reward_means.shape == (16,) and task.reward_widths.shape == (16,)
    np.testing.assert_array_equal(task.reward_widths, np.full(16, 0.15))


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("step_size", [0.05, 0.2, 0.7])
def test_means_are_reachable_and_bounded(seed: int, step_size: float) -> None:
    task = Nav1DTask.from_params(horizon=32, step_size=step_size, reward_seed=seed)
    means = task.reward_means
    assert abs(means[0]) <= 0.8
    assert np.all(np.abs(means) <= 0.9)
    # Following the means needs |a| <= 0.8 at every step, so it is always feasible.
    assert np.all(np.abs(np.diff(means)) <= 0.8 * step_size + 1e-12)


def test_means_reproducible_from_seed_and_seed_sensitive() -> None:
    a = Nav1DTask.from_params(reward_seed=3)
    b = Nav1DTask.from_params(reward_seed=3)
    c = Nav1DTask.from_params(reward_seed=4)
    np.testing.assert_array_equal(a.reward_means, b.reward_means)
    assert not np.allclose(a.reward_means, c.reward_means)
    # The first mean is the generator's first uniform draw on [-0.8, 0.8].
    expected_first = np.random.default_rng(3).uniform(-0.8, 0.8)
    assert a.reward_means[0] == expected_first


def test_width_spread() -> None:
    spread = Nav1DTask.from_params(reward_width=0.2, reward_width_spread=0.5, reward_seed=1)
    flat = Nav1DTask.from_params(reward_width=0.2, reward_width_spread=0.0, reward_seed=1)
    widths = spread.reward_widths
    assert np.all((widths >= 0.1) & (widths <= 0.3))
    assert np.ptp(widths) > 0.05
    # The spread only rescales widths; the means do not depend on it.
    np.testing.assert_array_equal(spread.reward_means, flat.reward_means)


def test_params_rebuild_the_task_through_json() -> None:
    task = Nav1DTask.from_params(horizon=7, step_size=0.3, reward_width_spread=0.4, reward_seed=9)
    rebuilt = Nav1DTask.from_params(**json.loads(json.dumps(task.params)))
    assert rebuilt.params == task.params
    np.testing.assert_array_equal(rebuilt.reward_means, task.reward_means)
    np.testing.assert_array_equal(rebuilt.reward_widths, task.reward_widths)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("horizon", 0),
        ("horizon", 2.5),
        ("step_size", 0.0),
        ("step_size", 2.5),
        ("step_size", float("nan")),
        ("reward_width", 0.0),
        ("reward_width", -1.0),
        ("reward_width_spread", 1.0),
        ("reward_width_spread", -0.1),
        ("reward_seed", -1),
    ],
)
def test_invalid_params_raise_naming_the_parameter(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=name):
        Nav1DTask.from_params(**{name: value})


def test_arrays_are_read_only() -> None:
    task = Nav1DTask.from_params()
    with pytest.raises(ValueError):
        task.reward_means[0] = 0.0


def test_next_state_clips_action_and_state() -> None:
    task = Nav1DTask.from_params(step_size=0.2)
    s = np.array([0.0, 0.0, 0.95, -0.9, 0.5])
    a = np.array([0.5, 5.0, 1.0, -1.0, -2.0])
    expected = np.array([0.1, 0.2, 1.0, -1.0, 0.3])
    np.testing.assert_allclose(task.next_state(s, a), expected, atol=1e-15)


def test_reward_values_and_broadcasting() -> None:
    task = Nav1DTask.from_params(reward_width_spread=0.5, reward_seed=2)
    mu, sigma = task.reward_means, task.reward_widths
    np.testing.assert_allclose(task.reward(np.arange(16), mu), np.ones(16))
    np.testing.assert_allclose(task.reward(np.arange(16), mu + sigma), np.full(16, np.exp(-0.5)))
    grid = np.linspace(-1, 1, 5)
    table = task.reward(np.arange(16)[:, None], grid[None, :])
    assert table.shape == (16, 5)
    np.testing.assert_allclose(table[3], task.reward(3, grid))
    expected = np.exp(-((grid - mu[3]) ** 2) / (2 * sigma[3] ** 2))
    np.testing.assert_allclose(table[3], expected, rtol=1e-12)


@pytest.mark.parametrize("t", [-1, 16])
def test_reward_rejects_out_of_range_steps(t: int) -> None:
    with pytest.raises(ValueError, match="t must be"):
        Nav1DTask.from_params().reward(t, 0.0)


def test_observe() -> None:
    task = Nav1DTask.from_params(horizon=4)
    obs = task.observe(np.array([0.5, -1.0]), np.array([0, 4]))
    assert obs.dtype == np.float32 and obs.shape == (2, 2)
    np.testing.assert_array_equal(obs, np.array([[0.5, 0.0], [-1.0, 1.0]], dtype=np.float32))
    assert task.observe(0.25, 2).shape == (2,)
    np.testing.assert_array_equal(task.observe(0.25, 2), np.array([0.25, 0.5], np.float32))
