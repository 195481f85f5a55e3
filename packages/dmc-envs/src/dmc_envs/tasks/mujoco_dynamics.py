"""One-step MuJoCo dynamics for planner coherency: how far a planned next state is from physics.

A locomotion observation (gymnasium's v5 Hopper, HalfCheetah, Walker2d) is the joint positions
without the torso's x coordinate, then the joint velocities. The x coordinate is not observed
and nothing in the dynamics depends on it (the floor is flat and infinite), so a state is
rebuilt from an observation as qpos = [0, obs[:nq - 1]], qvel = obs[nq - 1:] (qpos = obs[:nq]
where the env is told to observe x). The simulator is stepped once with the planned action,
exactly as the env's `step` does (`frame_skip` MuJoCo steps with the action as control), and
the observation is built from the result the way the env builds it.

Hopper and Walker2d clip the velocities they observe to [-10, 10]. From an observation with a
velocity at the clip the true velocity is unknown, so the state is rebuilt with the clipped
value and the gap of that transition includes the difference (under uniform random actions
about a third of Walker2d's states have one; Hopper's almost never). `StepGaps.exact` says which
transitions start from a fully observed state.

References:
    Todorov et al., "MuJoCo" (2012) (mj_step); gymnasium's `mujoco/hopper_v5.py`,
    `half_cheetah_v5.py`, `walker2d_v5.py` (the observation and the step).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["StepGaps"]


class StepGaps:
    """`Dynamics.gaps` of a MuJoCo locomotion env, simulated one transition at a time.

    The simulator is a private copy of the env (built on first use, never the vector env's),
    driven through MuJoCo's `MjData` directly so that one transition costs one `mj_step`
    call and a few array copies.
    """

    def __init__(
        self, env_id: str, env_kwargs: Mapping[str, Any], velocity_clip: float | None
    ) -> None:
        """Remember how to build the env; `velocity_clip` is the bound the env's observation
        clips velocities to (None: not clipped)."""
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs)
        self.velocity_clip = velocity_clip
        self._sim: _Simulator | None = None

    def gaps(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """RMS over observation dimensions of (simulated s_{j+1} - planned s_{j+1}), raw units;
        NaN where the gap cannot be measured: the step diverged, or the start's velocity sits at
        the observation's clip (its true velocity is unknown; see `exact`).

        Shapes:
            states: (..., H, obs_dim); actions: (..., H or H - 1, act_dim) -> (..., steps),
            steps = min(H - 1, actions' H).
        """
        sim = self._simulator()
        s, a, steps = self._transitions(states, actions, sim)
        batch = s.shape[:-2]
        start = s[..., :steps, :].reshape(-1, sim.obs_dim)
        planned = s[..., 1 : steps + 1, :].reshape(-1, sim.obs_dim)
        predicted = self.next_observations(start, a[..., :steps, :].reshape(-1, sim.act_dim))
        rms = np.sqrt(np.mean((predicted - planned) ** 2, axis=-1)).reshape(*batch, steps)
        return np.where(self.exact(s)[..., :steps], rms, np.nan)

    def exact(self, states: np.ndarray) -> np.ndarray:
        """Whether each transition's start is fully observed (no velocity at the clip), so
        that its gap measures the plan alone.

        Shapes:
            states: (..., H, obs_dim) -> (..., H - 1).
        """
        sim = self._simulator()
        s = np.asarray(states, dtype=np.float64)
        if self.velocity_clip is None:
            return np.ones((*s.shape[:-2], s.shape[-2] - 1), dtype=bool)
        velocities = s[..., :-1, sim.obs_dim - sim.nv :]
        return np.all(np.abs(velocities) < self.velocity_clip, axis=-1)

    def next_observations(self, observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """The observation one env step after each (observation, action).

        NaN rows where MuJoCo reports that the step diverged (it then resets its state, so
        there is no next state to compare with).

        Shapes:
            observations: (N, obs_dim); actions: (N, act_dim) -> (N, obs_dim).
        """
        sim = self._simulator()
        obs = np.asarray(observations, dtype=np.float64)
        act = np.asarray(actions, dtype=np.float64)
        qpos, qvel = sim.state(obs)
        out_qpos, out_qvel = np.empty_like(qpos), np.empty_like(qvel)
        diverged = np.zeros(obs.shape[0], dtype=bool)
        for i in range(obs.shape[0]):
            out_qpos[i], out_qvel[i], diverged[i] = sim.step(qpos[i], qvel[i], act[i])
        predicted = sim.observe(out_qpos, out_qvel, self.velocity_clip)
        predicted[diverged] = np.nan
        return predicted

    def _transitions(
        self, states: np.ndarray, actions: np.ndarray, sim: _Simulator
    ) -> tuple[np.ndarray, np.ndarray, int]:
        s = np.asarray(states, dtype=np.float64)
        a = np.asarray(actions, dtype=np.float64)
        if s.ndim < 2 or s.shape[-1] != sim.obs_dim:
            raise ValueError(f"states must be (..., H, {sim.obs_dim}), got shape {s.shape}")
        if a.ndim != s.ndim or a.shape[-1] != sim.act_dim or a.shape[:-2] != s.shape[:-2]:
            raise ValueError(
                f"actions must be (..., H or H - 1, {sim.act_dim}) with the states' batch "
                f"shape {s.shape[:-2]}, got shape {a.shape}"
            )
        steps = min(s.shape[-2] - 1, a.shape[-2])
        if steps < 1:
            raise ValueError("a plan needs at least two states and one action for a transition")
        return s, a, steps

    def _simulator(self) -> _Simulator:
        if self._sim is None:
            self._sim = _Simulator(self.env_id, self.env_kwargs)
        return self._sim


class _Simulator:
    """The env's MuJoCo model with a data of its own, and the obs <-> state maps."""

    def __init__(self, env_id: str, env_kwargs: Mapping[str, Any]) -> None:
        # Imported here: the module loads without the `mujoco` extra.
        gymnasium = importlib.import_module("gymnasium")
        self.mujoco = importlib.import_module("mujoco")
        env = gymnasium.make(env_id, **env_kwargs)
        unwrapped = env.unwrapped
        self.model = unwrapped.model
        self.frame_skip = int(unwrapped.frame_skip)
        self.obs_dim = int(env.observation_space.shape[0])
        self.act_dim = int(env.action_space.shape[0])
        env.close()
        self.data = self.mujoco.MjData(self.model)
        self.nq, self.nv = int(self.model.nq), int(self.model.nv)
        # The observation holds every position but x, or every position (the env's
        # `exclude_current_positions_from_observation`); either way the velocities follow.
        self.skip_x = self.obs_dim == self.nq - 1 + self.nv
        if not self.skip_x and self.obs_dim != self.nq + self.nv:
            raise ValueError(
                f"{env_id}: observations of width {self.obs_dim} are not positions and "
                f"velocities (nq={self.nq}, nv={self.nv})"
            )
        self._bad_qacc = self.mujoco.mjtWarning.mjWARN_BADQACC

    def state(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """qpos, qvel of each observation (x = 0 where it is not observed).

        Shapes:
            obs: (N, obs_dim) -> (N, nq), (N, nv).
        """
        npos = self.obs_dim - self.nv
        qpos = np.zeros((obs.shape[0], self.nq))
        qpos[:, self.nq - npos :] = obs[:, :npos]
        return qpos, obs[:, npos:].copy()

    def observe(
        self, qpos: np.ndarray, qvel: np.ndarray, velocity_clip: float | None
    ) -> np.ndarray:
        """The env's observation of each state.

        Shapes:
            qpos: (N, nq); qvel: (N, nv) -> (N, obs_dim).
        """
        positions = qpos[:, 1:] if self.skip_x else qpos
        if velocity_clip is not None:
            qvel = np.clip(qvel, -velocity_clip, velocity_clip)
        return np.concatenate([positions, qvel], axis=1)

    def step(self, qpos: np.ndarray, qvel: np.ndarray, ctrl: np.ndarray) -> tuple[Any, Any, bool]:
        """One env step from (qpos, qvel) with control `ctrl`: qpos', qvel', and whether the
        simulation diverged."""
        data = self.data
        data.qpos[:] = qpos
        data.qvel[:] = qvel
        data.ctrl[:] = ctrl
        # The solver's warm start would otherwise carry over from the previous transition:
        # zeroing it makes each gap a function of its own transition only.
        data.qacc_warmstart[:] = 0.0
        before = data.warning[self._bad_qacc].number
        self.mujoco.mj_step(self.model, data, nstep=self.frame_skip)
        return data.qpos, data.qvel, bool(data.warning[self._bad_qacc].number != before)
