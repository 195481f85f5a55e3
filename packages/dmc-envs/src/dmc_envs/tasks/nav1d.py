"""Nav1D as a task of the registry: the paper's toy problem, with every optional piece.

Nav1D has known dynamics (exactly: planner coherency and a differentiable version for
alignment), a reward field (plan returns), exact behaviour densities for its datasets (policy
coherency), an exact optimum (normalised scores: 0 = the uniform random policy, 100 = optimal)
and its own picture (episodes drawn over the reward field).

References:
    "Maximize Your Diffusion", §4.1 (Nav1D).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from dmc_core.data import TransitionDataset
from dmc_core.errors import ConfigError
from dmc_envs.nav1d import (
    ENV_ID,
    BehaviourPolicy,
    Nav1DEnv,
    Nav1DTask,
    NoisyOptimalPolicy,
    UniformPolicy,
    plot_reward_field,
    policy_from_dict,
    rollout,
    solve,
)
from dmc_envs.tasks.base import CollectSpec, ReturnScale, Task
from dmc_envs.tasks.registry import TaskFamily

__all__ = ["FAMILY", "Nav1D", "Nav1DVectorEnv"]

#: Behaviours a Nav1D dataset can be collected with.
BEHAVIOURS = ("uniform", "noisy_optimal")


class Nav1DVectorEnv(gymnasium.vector.VectorEnv):
    """`num_envs` Nav1D episodes stepped as one numpy expression (all end together at H).

    `reset(seed=s)` draws the starts as `np.random.default_rng(s).uniform(-1, 1, num_envs)`;
    an episode that ended is reset on the next `step` (next-step autoreset) from the same
    generator, with reward 0 and the action ignored.
    """

    def __init__(self, task: Nav1DTask, num_envs: int) -> None:
        """Build the batched spaces of `num_envs` copies of the task's environment."""
        single = Nav1DEnv(**task.params)
        self.task, self.num_envs = task, num_envs
        self.single_observation_space = single.observation_space
        self.single_action_space = single.action_space
        self.observation_space = gymnasium.vector.utils.batch_space(
            single.observation_space, num_envs
        )
        self.action_space = gymnasium.vector.utils.batch_space(single.action_space, num_envs)
        self._rng = np.random.default_rng()
        self._state = np.zeros(num_envs)
        self._t = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start every episode from a uniform start drawn from `seed`."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._state = self._rng.uniform(-1.0, 1.0, size=self.num_envs)
        self._t = 0
        return self.task.observe(self._state, 0), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Move every episode by `step_size * clip(a, -1, 1)`; truncate all at H."""
        if self._t >= self.task.horizon:
            observation, _ = self.reset()
            done = np.zeros(self.num_envs, dtype=bool)
            return observation, np.zeros(self.num_envs), done, done.copy(), {}
        action = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, -1)[:, 0]
        self._state = self.task.next_state(self._state, action)
        rewards = self.task.reward(self._t, self._state)
        self._t += 1
        truncated = np.full(self.num_envs, self._t == self.task.horizon)
        observation = self.task.observe(self._state, self._t)
        return observation, rewards, np.zeros(self.num_envs, dtype=bool), truncated, {}


class _PositionGaps:
    """|s_{j+1} - T(s_j, a_j)| on the position (the time feature follows by construction)."""

    def __init__(self, task: Nav1DTask) -> None:
        self.task = task

    def gaps(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Shapes: states (..., H, 2), actions (..., H or H - 1, 1) -> (..., steps)."""
        s = np.asarray(states, dtype=np.float64)[..., 0]
        a = np.asarray(actions, dtype=np.float64)[..., 0]
        steps = min(s.shape[-1] - 1, a.shape[-1])
        if steps < 1:
            raise ValueError("a plan needs at least two states to have a transition")
        return s[..., 1 : steps + 1] - self.task.next_state(s[..., :steps], a[..., :steps])


class _TorchPositionGaps:
    """`_PositionGaps` on tensors, differentiable: s' = clip(s + gamma clip(a, -1, 1), -1, 1)."""

    def __init__(self, step_size: float) -> None:
        self.step_size = step_size

    def __call__(self, states: Tensor, actions: Tensor) -> Tensor:
        """Shapes: states (B, H, 2), actions (B, H, 1) -> (B, H - 1)."""
        position, action = states[..., 0], actions[..., 0]
        reached = (position[:, :-1] + self.step_size * action[:, :-1].clamp(-1.0, 1.0)).clamp(
            -1.0, 1.0
        )
        return position[:, 1:] - reached


class _PlanReturn:
    """sum_k r(t + k, s_{k+1}) of a plan's states under the reward field, t read from the
    observation's t/H feature; steps past the episode's end earn nothing."""

    def __init__(self, task: Nav1DTask) -> None:
        self.means = torch.tensor(task.reward_means).float()
        self.widths = torch.tensor(task.reward_widths).float()
        self.horizon = task.horizon

    def __call__(self, states: Tensor, observation: Tensor) -> Tensor:
        """Shapes: states (B, H, 2) planned, observation (B, 2) -> (B,)."""
        start = torch.round(observation[:, -1] * self.horizon).long()
        steps = start[:, None] + torch.arange(states.shape[1] - 1, device=states.device)
        inside = steps < self.horizon
        index = steps.clamp(max=self.horizon - 1)
        mean = self.means.to(states.device)[index]
        width = self.widths.to(states.device)[index]
        rewards = torch.exp(-0.5 * ((states[:, 1:, 0] - mean) / width) ** 2)
        return (rewards * inside).sum(dim=1)


class _StepDensity:
    """A Nav1D behaviour policy's exact density, with (s, t) read from observations."""

    def __init__(self, policy: BehaviourPolicy, horizon: int) -> None:
        self.policy, self.horizon = policy, horizon

    def density(self, observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Shapes: observations (N, 2), actions (N, 1) -> (N,)."""
        obs = np.asarray(observations, dtype=np.float64)
        steps = np.rint(obs[:, 1] * self.horizon).astype(int)
        out = np.empty(obs.shape[0])
        for t in np.unique(steps):  # the policies take one step index per call
            rows = steps == t
            out[rows] = self.policy.density(obs[rows, 0], int(t), actions[rows])
        return out


class Nav1D(Task):
    """Nav1D with a fixed reward field (see the module docstring)."""

    name = "nav1d"
    env_id = ENV_ID
    starts = "uniform [-1, 1]"

    def __init__(self, env_kwargs: Mapping[str, Any]) -> None:
        """Build the task, solve it for its optimum, and make its pieces."""
        self.problem = Nav1DTask.from_params(**env_kwargs)
        self.env_kwargs = dict(self.problem.params)
        self.max_episode_steps = self.problem.horizon
        self.solution = solve(self.problem)
        self.returns = ReturnScale(
            self.solution.random_return(),
            self.solution.optimal_return(),
            "Nav1D: expected return of uniform random actions (0) and of the optimal policy "
            "(100) from U[-1, 1] starts, by dynamic programming",
        )
        self.dynamics = _PositionGaps(self.problem)
        self.differentiable_dynamics = _TorchPositionGaps(self.problem.step_size)
        self.plan_reward = _PlanReturn(self.problem)

    def make_vector_env(self, num_envs: int) -> gymnasium.vector.VectorEnv:
        """Every episode in one numpy batch (`Nav1DVectorEnv`)."""
        return Nav1DVectorEnv(self.problem, num_envs)

    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """[-1, 1]."""
        space: spaces.Box = Nav1DEnv(**self.env_kwargs).action_space  # type: ignore[assignment]
        return space.low.astype(np.float64), space.high.astype(np.float64)

    def collect(self, spec: CollectSpec) -> tuple[TransitionDataset, dict[str, Any]]:
        """Episodes of the behaviour from starts uniform on [start_low, start_high]."""
        if spec.transitions:
            raise ConfigError(
                f"task {self.describe()} collects whole episodes of H steps: set episodes, and "
                f"transitions to 0 (got {spec.transitions})"
            )
        behaviour = self._behaviour(spec)
        options = spec.options
        rng = np.random.default_rng(spec.seed)
        starts = rng.uniform(options["start_low"], options["start_high"], size=spec.episodes)
        arrays = rollout(self.problem, behaviour, starts, rng)
        attrs = {
            "behavior_policy": behaviour.describe(),
            "behavior_policy_spec": behaviour.to_dict(),
            "episodes": spec.episodes,
            "start_low": options["start_low"],
            "start_high": options["start_high"],
        }
        return TransitionDataset(**arrays), attrs

    def _behaviour(self, spec: CollectSpec) -> BehaviourPolicy:
        if spec.behaviour == "noisy_optimal":
            grid = int(spec.options["optimum_grid_per_step"])
            return NoisyOptimalPolicy(solve(self.problem, grid), spec.options["noise_std"])
        if spec.behaviour == "uniform":
            return UniformPolicy()
        raise ConfigError(
            f"task {self.describe()} has no behaviour '{spec.behaviour}' (it has {BEHAVIOURS})"
        )

    def behaviour_density(self, attrs: Mapping[str, Any]) -> _StepDensity | None:
        """The exact density of the policy the dataset records."""
        spec = attrs.get("behavior_policy_spec")
        if not isinstance(spec, Mapping):
            return None
        return _StepDensity(policy_from_dict(dict(spec), self.problem), self.problem.horizon)

    def plot_episodes(self, observations: list[np.ndarray], path: Path, title: str) -> bool:
        """The episodes' positions over the reward field."""
        rows = [
            episode[:, 0] for episode in observations if len(episode) == self.problem.horizon + 1
        ]
        positions = np.stack(rows) if rows else np.zeros((0, self.problem.horizon + 1))
        plot_reward_field(self.problem, positions, path, title)
        return True


def _build(name: str, env_kwargs: Mapping[str, Any]) -> Task:
    return Nav1D(env_kwargs)


FAMILY = TaskFamily(name="nav1d", env_ids={"nav1d": ENV_ID}, build=_build)
