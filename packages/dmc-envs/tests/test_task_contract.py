"""The contract every registered task keeps (`dmc_envs.tasks.base.Task`), checked on each one.

Parametrised over `task_names()`, so a new family is checked as soon as it is registered.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from dmc_envs.tasks.base import CollectSpec, Task
from dmc_envs.tasks.registry import build_task, task_names

NUM_ENVS = 3

#: A tiny collection: tasks that count transitions collect 300, those that count episodes 3.
#: The options are the Nav1D starts; tasks without such knobs ignore them.
TINY = CollectSpec(
    behaviour="uniform",
    episodes=3,
    transitions=0,  # whole episodes: every task collects those
    seed=5,
    options={"start_low": -1.0, "start_high": 1.0},
)


@functools.cache
def _task(name: str) -> Task:
    return build_task(name)


def _actions(task: Task, steps: int, seed: int) -> np.ndarray:
    """Uniform actions in the task's bounds. Shapes: -> (steps, NUM_ENVS, act_dim)."""
    low, high = task.action_bounds()
    rng = np.random.default_rng(seed)
    return rng.uniform(low, high, size=(steps, NUM_ENVS, low.size)).astype(np.float32)


def _rollout(task: Task, seed: int, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Observations (steps + 1, NUM_ENVS, obs_dim) and rewards (steps, NUM_ENVS) of a fresh
    vector env reset with `seed` and driven by `actions`."""
    envs = task.make_vector_env(NUM_ENVS)
    obs, _ = envs.reset(seed=seed)
    observations, rewards = [obs], []
    for action in actions:
        obs, reward, _, _, _ = envs.step(action)
        observations.append(obs)
        rewards.append(reward)
    envs.close()
    return np.stack(observations), np.stack(rewards)


@pytest.mark.parametrize("name", task_names())
def test_reset_and_step_match_the_spaces(name: str) -> None:
    task = _task(name)
    envs = task.make_vector_env(NUM_ENVS)
    obs_shape = envs.single_observation_space.shape
    low, high = task.action_bounds()
    assert envs.single_action_space.shape == low.shape == high.shape
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (NUM_ENVS, *obs_shape)
    for action in _actions(task, 3, seed=0):
        obs, reward, terminated, truncated, _ = envs.step(action)
        assert obs.shape == (NUM_ENVS, *obs_shape)
        assert np.shape(reward) == np.shape(terminated) == np.shape(truncated) == (NUM_ENVS,)
        assert np.asarray(terminated).dtype == np.bool_ and np.asarray(truncated).dtype == np.bool_
    envs.close()


@pytest.mark.parametrize("name", task_names())
def test_seeded_resets_are_deterministic(name: str) -> None:
    task = _task(name)
    actions = _actions(task, 5, seed=1)
    obs_a, rewards_a = _rollout(task, 11, actions)
    obs_b, rewards_b = _rollout(task, 11, actions)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rewards_a, rewards_b)
    # A used vector env reset with the same seed starts where a fresh one does.
    envs = task.make_vector_env(NUM_ENVS)
    envs.reset(seed=3)
    envs.step(actions[0])
    again, _ = envs.reset(seed=11)
    envs.close()
    np.testing.assert_array_equal(again, obs_a[0])
    # Every registered task draws random starts, so another seed starts elsewhere.
    envs = task.make_vector_env(NUM_ENVS)
    other, _ = envs.reset(seed=12)
    envs.close()
    assert not np.array_equal(other, obs_a[0])


@pytest.mark.parametrize("name", task_names())
def test_return_scale_maps_references_to_0_and_100(name: str) -> None:
    returns = _task(name).returns
    assert returns.normalized(returns.low) == pytest.approx(0.0, abs=1e-9)
    assert returns.normalized(returns.high) == pytest.approx(100.0)
    assert returns.source


@pytest.mark.parametrize("name", task_names())
def test_tiny_collection_is_a_valid_dataset(name: str) -> None:
    task = _task(name)
    dataset, attrs = task.collect(TINY)
    dataset.validate(source=name, require_attrs=False)
    ends = dataset.terminals | dataset.timeouts
    assert ends[-1], "the last episode has no terminal or timeout row"
    assert sum(s.stop - s.start for s in dataset.episode_slices()) == len(dataset)
    low, high = task.action_bounds()
    assert np.all(dataset.actions >= low) and np.all(dataset.actions <= high)
    assert isinstance(attrs.get("behavior_policy"), str) and attrs["behavior_policy"]
    assert task.behaviour_density(attrs) is not None


@pytest.mark.parametrize("name", task_names())
def test_provenance_records_env_and_action_bounds(name: str) -> None:
    task = _task(name)
    provenance = task.provenance()
    low, high = task.action_bounds()
    assert provenance["env_id"] == task.env_id
    assert provenance["action_low"] == [float(v) for v in low]
    assert provenance["action_high"] == [float(v) for v in high]
    assert isinstance(provenance["env_kwargs"], dict)
