"""Helpers for dmc-envs' own tests (kept here so that no test file copies them).

The countdown toy task: env i of a batch terminates after `lengths[i]` steps (or is truncated
at its limit), pays the action's value at every step, and reports success once its running sum
passes 1 (and keeps going), so exact returns, lengths, success counts and recorded transitions
are known by hand.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from dmc_core.data import TransitionDataset
from dmc_envs.evaluation.proposers import Proposal
from dmc_envs.tasks import CollectSpec, ReturnScale, Task

__all__ = ["Constant", "Countdown", "CountdownEnvs"]


class CountdownEnvs(gymnasium.vector.VectorEnv):
    """Env i ends after `lengths[i]` steps; the observation is (env index, step)."""

    def __init__(self, lengths: list[int], limit: int) -> None:
        self.num_envs, self.lengths, self.limit = len(lengths), np.array(lengths), limit
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.single_action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.t = np.zeros(self.num_envs, dtype=int)
        self.total = np.zeros(self.num_envs)
        self.ended = np.zeros(self.num_envs, dtype=bool)

    def _obs(self) -> np.ndarray:
        return np.stack([np.arange(self.num_envs), self.t], axis=1).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict]:
        self.t[:] = 0
        self.total[:] = 0.0
        self.ended[:] = False
        return self._obs(), {}

    def step(self, actions: np.ndarray) -> tuple:
        restart = self.ended.copy()  # next-step autoreset: the action is ignored
        reward = np.where(restart, 0.0, np.asarray(actions)[:, 0])
        self.t = np.where(restart, 0, self.t + 1)
        self.total = np.where(restart, 0.0, self.total + reward)
        terminated = ~restart & (self.t >= self.lengths)
        truncated = ~restart & ~terminated & (self.t >= self.limit)
        self.ended = terminated | truncated
        info = {"success": self.total > 1.0, "_success": np.ones(self.num_envs, dtype=bool)}
        return self._obs(), reward, terminated, truncated, info


class Countdown(Task):
    """The toy task: it has a success criterion and none of the optional pieces."""

    name, env_id, env_kwargs = "countdown", "test/Countdown-v0", {}
    starts = "fixed"
    success = True

    def __init__(self, lengths: list[int], limit: int = 100) -> None:
        self.lengths, self.max_episode_steps = lengths, limit
        self.returns = ReturnScale(0.0, 10.0, "test")

    def make_vector_env(self, num_envs: int) -> gymnasium.vector.VectorEnv:
        assert num_envs == len(self.lengths)
        return CountdownEnvs(self.lengths, self.max_episode_steps)

    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array([-1.0]), np.array([1.0])

    def collect(self, spec: CollectSpec) -> tuple[TransitionDataset, dict[str, Any]]:
        raise NotImplementedError


class Constant:
    """Every candidate is the action `value`; records the batch of every call."""

    role, history_len, device = "policy", 2, torch.device("cpu")

    def __init__(self, value: float, action_exec: int = 1) -> None:
        self.value, self.action_exec = value, action_exec
        self.batches: list[int] = []

    def propose(self, history: Tensor, n: int, generator: torch.Generator) -> Proposal:
        self.batches.append(history.shape[0])
        actions = torch.full((history.shape[0], n, self.action_exec, 1), self.value)
        return Proposal(actions=actions)
