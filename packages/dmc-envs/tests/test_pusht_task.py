"""PushT (gym-pusht) as a task: the planner expert, its datasets, seeding, success, scores.

The generic contract (spaces, seeded resets, a tiny uniform collection, provenance) is checked
by test_task_contract.py; these tests check what is PushT's own, and the evaluation's episode
scores on a toy vector env whose per-step values are known by hand.
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import Tensor

from dmc_core.data import TransitionDataset, read_dataset, write_dataset
from dmc_core.errors import ConfigError
from dmc_envs.evaluation import Proposal, Selection, roll_out
from dmc_envs.tasks import CollectSpec, ReturnScale, Task, build_task
from dmc_envs.tasks.base import EpisodeScore
from dmc_envs.tasks.pusht import PushTTask
from dmc_envs.tasks.pusht_expert import (
    GOAL_POSE,
    PushState,
    PushTPlanner,
    keypoint_error,
    keypoints,
)
from dmc_envs.tasks.registry import task_for_dataset

pytest.importorskip("gym_pusht")

#: An operator that never touches the block: its pushes stop 5 pixels short of the outline.
HOPELESS = {"noise": 0.0, "contact_spacing": 100.0, "depths": [-5.0]}
EXPERT = {"noise": 0.0, "contact_spacing": 12.0, "depths": [2.0, 5.0, 12.0, 25.0, 45.0]}


@functools.cache
def _task() -> PushTTask:
    return build_task("pusht")  # type: ignore[return-value]


def _place(env: gymnasium.Env, agent: tuple[float, float], block: tuple[float, ...]) -> None:
    """Put the agent (at rest) and the block of a reset env where the test wants them."""
    inner = env.unwrapped
    inner.agent.position, inner.agent.velocity = agent, (0.0, 0.0)
    inner.block.angle = block[2]  # before the position: pymunk turns about the centre of mass
    inner.block.position = block[:2]


def test_the_expert_brings_a_block_near_the_goal_home_within_the_limit() -> None:
    env = _task()._make_env()
    env.reset(seed=0)
    _place(env, (100.0, 400.0), (280.0, 240.0, np.pi / 4 + 0.4))
    planner = PushTPlanner()
    state = PushState(np.array([100.0, 400.0]), np.zeros(2), np.array([280.0, 240.0, 1.185]))
    steps, info = 0, {"success": False}
    while not info["success"] and steps < 300:
        for target in planner.plan(state):
            _, _, terminated, _, info = env.step(target.astype(np.float32))
            steps += 1
            if terminated:
                break
        state = PushState(info["pos_agent"], info["vel_agent"], info["block_pose"])
    env.close()
    assert info["success"] and info["coverage"] > 0.95, (steps, info["coverage"])
    assert keypoint_error(info["block_pose"]) < keypoint_error(np.array([280.0, 240.0, 1.185]))


def test_keypoint_error_is_zero_at_the_goal_and_grows_with_the_pose_error() -> None:
    assert keypoint_error(GOAL_POSE) == pytest.approx(0.0, abs=1e-9)
    shifted = GOAL_POSE + np.array([3.0, 4.0, 0.0])
    assert keypoint_error(shifted) == pytest.approx(5.0)
    turned = GOAL_POSE + np.array([0.0, 0.0, 0.05])
    assert keypoint_error(turned + np.array([0.0, 0.0, 0.05])) > keypoint_error(turned)


def test_a_tiny_expert_dataset_is_written_and_read_back_with_its_attrs(tmp_path) -> None:
    task = _task()
    spec = CollectSpec("expert", episodes=2, transitions=0, seed=0, options={})
    collected, attrs = task.collect(spec)
    dataset = TransitionDataset(
        **collected.arrays(), attrs={**task.provenance(), **attrs, "dataset_kind": "ph", "seed": 0}
    )
    write_dataset(tmp_path / "ph.hdf5", dataset)
    back = read_dataset(tmp_path / "ph.hdf5")
    assert back.num_episodes == 2 and len(back) == len(collected)
    np.testing.assert_array_equal(back.actions, collected.actions)
    # Kept episodes reach the goal: each ends on a terminal row, none on a timeout.
    assert back.terminals.sum() == 2 and not back.timeouts.any()
    assert back.attrs["env_id"] == "gym_pusht/PushT-v0"
    assert back.attrs["behavior_policy_spec"]["type"] == "pusht_planner"
    assert "planner" in back.attrs["behavior_policy"]
    assert back.attrs["successful_only"] and back.attrs["success_rate"] == 1.0
    assert task.behaviour_density(back.attrs) is None  # unknown: see the module docstring


def test_successful_only_keeps_the_successful_episodes_and_counts_the_rest() -> None:
    task = _task()
    options: dict[str, Any] = {"operators": [EXPERT, HOPELESS], "successful_only": True}
    kept, attrs = task.collect(CollectSpec("mixed", 2, 0, seed=0, options=options))
    # Episodes 0 and 2 are the expert's, episode 1 the hopeless operator's (dropped).
    assert kept.num_episodes == 2 and kept.terminals.sum() == 2
    assert (attrs["collection_episodes"], attrs["collection_successes"]) == (3, 2)
    everything, attrs = task.collect(
        CollectSpec("mixed", 2, 0, seed=0, options={**options, "successful_only": False})
    )
    assert everything.num_episodes == 2 and everything.terminals.sum() == 1
    assert everything.timeouts.sum() == 1 and attrs["success_rate"] == 0.5
    np.testing.assert_array_equal(everything.observations[0], kept.observations[0])


def test_too_few_successes_stop_the_collection_naming_the_option() -> None:
    spec = CollectSpec(
        "mixed", 1, 0, seed=0, options={"operators": [HOPELESS], "max_attempts_factor": 1}
    )
    with pytest.raises(ConfigError, match="max_attempts_factor"):
        _task().collect(spec)


def test_a_malformed_operator_is_refused_naming_the_option() -> None:
    spec = CollectSpec("mixed", 1, 0, seed=0, options={"operators": [{"noise": -1.0}]})
    with pytest.raises(ConfigError, match=r"options.operators\[0\]"):
        _task().collect(spec)


def test_keypoint_observations_are_the_agent_then_the_blocks_corners_as_the_state_places_them() -> (
    None
):
    """The same seeded episode under both observations: the keypoint task sees the agent where
    the state task does and the T's corners where the state's block pose puts them (a wrong
    order of the flattened dict, or corners of another pose, would differ)."""
    state_task, keypoint_task = _task(), build_task("pusht-keypoints")
    assert keypoint_task.name == "pusht-keypoints"
    assert keypoint_task.env_kwargs["obs_type"] == "environment_state_agent_pos"
    pushes = np.array([[256.0, 256.0], [300.0, 200.0], [200.0, 300.0]] * 10)
    seen = []
    for task in (state_task, keypoint_task):
        env = task._make_env()  # type: ignore[attr-defined]
        observation, _ = env.reset(seed=4)
        rows = [observation]
        for target in pushes:
            rows.append(env.step(target)[0])
        env.close()
        seen.append(np.stack(rows))
    states, keypoint_rows = seen
    assert keypoint_rows.shape == (len(pushes) + 1, 18)
    np.testing.assert_allclose(keypoint_rows[:, :2], states[:, :2])
    np.testing.assert_allclose(keypoint_rows[:, 2:].reshape(-1, 8, 2), keypoints(states[:, 2:]))
    assert np.ptp(states[:, 2:], axis=0).max() > 1.0  # the pushes moved the block


def test_a_keypoint_dataset_rebuilds_the_keypoint_task() -> None:
    data, attrs = build_task("pusht-keypoints").collect(
        CollectSpec("uniform", 1, 0, seed=0, options={})
    )
    recorded = {**build_task("pusht-keypoints").provenance(), **attrs}
    rebuilt = task_for_dataset(recorded, "keypoint data")
    assert rebuilt.name == "pusht-keypoints" and data.observations.shape[1] == 18
    with pytest.raises(ConfigError, match="obs_type"):
        build_task("pusht", {"obs_type": "pixels"})


def test_collected_episode_k_starts_where_env_k_of_a_seeded_vector_env_does() -> None:
    task = _task()
    data, _ = task.collect(CollectSpec("uniform", 2, 0, seed=9, options={}))
    envs = task.make_vector_env(2)
    first, _ = envs.reset(seed=9)
    envs.close()
    starts = [data.observations[part.start] for part in data.episode_slices()]
    np.testing.assert_allclose(np.stack(starts), first.astype(np.float32))
    assert len(data) == 600 and data.timeouts.sum() == 2  # random targets never succeed


def test_the_envs_success_reaches_the_vector_env_as_info_success() -> None:
    envs = _task().make_vector_env(2)
    envs.reset(seed=0)
    _place(envs.envs[0], (40.0, 40.0), tuple(GOAL_POSE))
    _place(envs.envs[1], (40.0, 40.0), (150.0, 150.0, 0.0))
    _, reward, terminated, _, info = envs.step(np.full((2, 2), 40.0, dtype=np.float32))
    envs.close()
    np.testing.assert_array_equal(info["success"], [True, False])
    np.testing.assert_array_equal(terminated, [True, False])
    assert reward[0] == 1.0 and info["coverage"][0] > 0.99


# The evaluation's episode scores, on a toy vector env: env i ends after lengths[i] steps and
# reports info["level"] = the action times the step number.


class _LevelEnvs(gymnasium.vector.VectorEnv):
    def __init__(self, lengths: list[int]) -> None:
        self.num_envs, self.lengths = len(lengths), np.array(lengths)
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.single_action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.t = np.zeros(self.num_envs, dtype=int)

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict]:
        self.t[:] = 0
        return self.t[:, None].astype(np.float32), {}

    def step(self, actions: np.ndarray) -> tuple:
        self.t = self.t + 1
        level = np.asarray(actions)[:, 0] * self.t
        terminated = self.t >= self.lengths
        reward = -level  # the reward's best is its first step's
        info = {"level": level, "_level": np.ones(self.num_envs, dtype=bool)}
        return self.t[:, None].astype(np.float32), reward, terminated, terminated * False, info


class _LevelTask(Task):
    name, env_id, env_kwargs, starts = "level", "test/Level-v0", {}, "fixed"
    max_episode_steps = 100
    episode_scores = (
        EpisodeScore("final_level", "level", "final"),
        EpisodeScore("best_reward", "reward", "max"),
    )

    def __init__(self, lengths: list[int]) -> None:
        self.lengths, self.returns = lengths, ReturnScale(0.0, 1.0, "test")

    def make_vector_env(self, num_envs: int) -> gymnasium.vector.VectorEnv:
        return _LevelEnvs(self.lengths)

    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array([-1.0]), np.array([1.0])

    def collect(self, spec: CollectSpec) -> tuple[TransitionDataset, dict[str, Any]]:
        raise ConfigError("the toy task collects nothing")


class _Half:
    role, history_len, device, action_exec = "policy", 1, torch.device("cpu"), 1

    def propose(self, history: Tensor, n: int, generator: torch.Generator) -> Proposal:
        return Proposal(actions=torch.full((history.shape[0], n, 1, 1), 0.5))


def test_episode_scores_are_each_episodes_final_or_best_value() -> None:
    task = _LevelTask([2, 5, 1])
    result = roll_out(task, _Half(), Selection("none", 1), None, episodes=3, seed=0)
    # Levels 0.5 t: final at t = length; the reward -0.5 t is best at t = 1.
    np.testing.assert_allclose(result.scores["final_level"], [1.0, 2.5, 0.5])
    np.testing.assert_allclose(result.scores["best_reward"], [-0.5, -0.5, -0.5])
    assert result.successes is None


def test_a_task_without_episode_scores_gets_none() -> None:
    task = _LevelTask([2])
    task.episode_scores = ()
    result = roll_out(task, _Half(), Selection("none", 1), None, episodes=1, seed=0)
    assert dict(result.scores) == {}


def test_pusht_declares_final_coverage_and_diffusion_policys_max_reward() -> None:
    names = {(s.name, s.source, s.reduce) for s in _task().episode_scores}
    assert names == {("final_coverage", "coverage", "final"), ("max_reward", "reward", "max")}
    with pytest.raises(ValueError, match="reduce"):
        EpisodeScore("x", "reward", "mean")
