"""The MuJoCo locomotion tasks (Hopper, HalfCheetah, Walker2d; gymnasium v5) of the registry.

They give what every task gives (a seeded vector env, 1000-step episodes, action bounds,
D4RL's normalised score) and two optional pieces, `dynamics` (planner coherency, by stepping a
private copy of the simulator: `dmc_envs.tasks.mujoco_dynamics`) and `render_env` (frames,
offscreen: `dmc_envs.tasks.rendering`). They have no differentiable
dynamics and no plan reward (MuJoCo is not differentiable here), and report no success.

Datasets are collected by two behaviours: `uniform`, actions uniform on the action box, after
D4RL's random datasets (D4RL's `--random`; uniform actions have a density known exactly, which
policy coherency needs), and `actor`, actions sampled from a behaviour agent's stochastic policy
(`options["actor"]`: a file of `dmc_envs.behaviour`), after D4RL's medium and expert datasets.
Both roll out whole episodes of at most 1000 steps, the last one cut.

`gymnasium` and `mujoco` (the dmc-envs `mujoco` extra) are imported only when a task is built,
so the registry loads without them.

References:
    Fu et al., "D4RL: Datasets for Deep Data-Driven Reinforcement Learning" (2020): the random
    datasets and the reference scores (d4rl/infos.py, REF_MIN_SCORE and REF_MAX_SCORE);
    gymnasium's MuJoCo v5 environments.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
import torch
from tqdm.auto import tqdm

from dmc_core.data import TransitionDataset
from dmc_core.errors import ConfigError
from dmc_envs.behaviour.actor import load_actor
from dmc_envs.behaviour.density import actor_spec
from dmc_envs.tasks.base import CollectSpec, ReturnScale, Task, UniformBoxDensity, columns_dataset
from dmc_envs.tasks.gymnasium_task import GymnasiumTask
from dmc_envs.tasks.mujoco_dynamics import StepGaps
from dmc_envs.tasks.registry import TaskFamily
from dmc_envs.tasks.rendering import use_offscreen_gl

__all__ = ["BEHAVIOURS", "COLLECT_ENVS", "FAMILY", "LocomotionTask"]

# A behaviour's action rule: observations (n, obs_dim) -> actions (n, act_dim).
_Act = Callable[[np.ndarray], np.ndarray]

#: Behaviours a locomotion dataset can be collected with.
BEHAVIOURS = ("uniform", "actor")

#: Envs stepped side by side while collecting. Part of the recipe: env i of the batch starts
#: from seed + i, so another number gives another dataset. The vector env steps them one after
#: another in this process; more envs only share its per-step overhead. Measured on 2 CPU cores
#: for 100k transitions: 8 was fastest or within noise of it for each env (1: up to a third
#: slower; a process per env, AsyncVectorEnv, was 3x slower than this).
COLLECT_ENVS = 8

#: D4RL's episode limit for these envs.
MAX_EPISODE_STEPS = 1000

#: Collections at least this long show a progress bar.
_PROGRESS_FROM = 20_000

_REFERENCE_SOURCE = (
    "D4RL's reference returns for {name} (d4rl/infos.py REF_MIN_SCORE: a random policy, 0; "
    "REF_MAX_SCORE: an expert policy, 100); D4RL measured them on the -v2 mujoco-py envs, so "
    "on {env_id} the scale is an approximation"
)


@dataclass(frozen=True)
class _Spec:
    """What differs between the locomotion tasks."""

    env_id: str
    ref_min: float
    ref_max: float
    # The bound the env's observation clips joint velocities to (None: unclipped).
    velocity_clip: float | None


# Reference returns: d4rl/infos.py, REF_MIN_SCORE and REF_MAX_SCORE of the <name>-*-v2
# datasets. Velocity clips: gymnasium's
# hopper_v5.py and walker2d_v5.py `_get_obs` (half_cheetah_v5.py does not clip).
_SPECS: dict[str, _Spec] = {
    "hopper": _Spec("Hopper-v5", -20.272305, 3234.3, 10.0),
    "halfcheetah": _Spec("HalfCheetah-v5", -280.178953, 12135.0, None),
    "walker2d": _Spec("Walker2d-v5", 1.629008, 4592.3, 10.0),
}


class LocomotionTask(GymnasiumTask):
    """One gymnasium MuJoCo locomotion env as a task (see the module docstring)."""

    max_episode_steps = MAX_EPISODE_STEPS
    starts = "gymnasium's reset noise around the initial pose; env i of a batch seeded seed + i"
    success = False

    def __init__(self, name: str, env_kwargs: Mapping[str, Any]) -> None:
        """Build the task `name` (a key of `FAMILY.env_ids`) with gymnasium.make's kwargs.

        Raises:
            ModuleNotFoundError: `mujoco` is not installed (the registry names the extra).
            ConfigError: gymnasium refuses `env_kwargs`.
        """
        # Import here, so that a missing extra fails when a task is built, not at import.
        importlib.import_module("mujoco")
        spec = _SPECS[name]
        self.name = name
        self.env_id = spec.env_id
        self.env_kwargs = dict(env_kwargs)
        self.returns = ReturnScale(
            spec.ref_min,
            spec.ref_max,
            _REFERENCE_SOURCE.format(name=name, env_id=spec.env_id),
        )
        self._read_action_box()
        self.dynamics = StepGaps(self.env_id, self.env_kwargs, spec.velocity_clip)

    def collect(self, spec: CollectSpec) -> tuple[TransitionDataset, dict[str, Any]]:
        """`spec.transitions` rows (or, if that is 0, `spec.episodes` whole episodes) of the
        behaviour's actions, episodes stored one after another: uniform random actions, or the
        stochastic actions of the actor `spec.options["actor"]` names.

        Episodes are stored in the order they end (ties: by env index). Collection stops once
        the ended episodes hold `spec.transitions` rows; the episode that crosses that number
        is cut there and its last kept row is marked a timeout (an episode cut short, as by a
        time limit). The other envs' unfinished episodes are dropped.

        References:
            Fu et al., D4RL (2020): the random, medium and expert datasets (see the module
            docstring).

        Raises:
            ConfigError: an unknown behaviour, no actor file, or a spec that asks for nothing.
        """
        self.check_collect_spec(spec, BEHAVIOURS)
        act, attrs = self._behaviour(spec)
        dataset = _concatenate(_collect(self, spec, act), spec.transitions)
        return dataset, {**attrs, "collect_num_envs": COLLECT_ENVS}

    def _behaviour(self, spec: CollectSpec) -> tuple[_Act, dict[str, Any]]:
        """The behaviour's action rule (observations -> actions) and its provenance."""
        where = f"seed {spec.seed}; {COLLECT_ENVS} envs side by side, env i seeded {spec.seed} + i"
        if spec.behaviour == "uniform":
            low, high = self.action_bounds()
            rng = np.random.default_rng(spec.seed)
            attrs = {
                "behavior_policy": (
                    f"uniform random actions on the action box (behavior_policy_spec), drawn "
                    f"from {where}"
                ),
                "behavior_policy_spec": UniformBoxDensity(low, high).to_dict(),
            }
            return lambda obs: rng.uniform(low, high, size=(len(obs), low.size)), attrs
        path = spec.options.get("actor")
        if not path:
            raise ConfigError(f"task {self.describe()}: behaviour 'actor' needs an actor file")
        actor, about = load_actor(path)
        generator = torch.Generator().manual_seed(spec.seed)
        attrs = {
            "behavior_policy": (
                f"actions sampled from the stochastic policy of {path} ({about.get('agent')}, "
                f"checkpoint step {about.get('checkpoint_step')}), drawn from {where}"
            ),
            "behavior_policy_spec": actor_spec(path),
        }

        @torch.no_grad()
        def act(obs: np.ndarray) -> np.ndarray:
            return actor.act(torch.as_tensor(obs, dtype=torch.float32), generator).numpy()

        return act, attrs

    def render_env(self, size: int) -> gymnasium.Env:
        """One env as env 0 of `make_vector_env`, rendering (size, size, 3) frames from
        gymnasium's tracking camera, offscreen with EGL (`MUJOCO_GL`, unless set)."""
        use_offscreen_gl()
        return self._make_env(render_mode="rgb_array", width=size, height=size)

    def _make_env(self, **render: Any) -> gymnasium.Env:
        """The task's env; `render` are gymnasium.make's rendering arguments (none: no frames)."""
        # Actions beyond the box are clipped by the env, as Nav1D's dynamics clip them: MuJoCo
        # would clamp the control anyway, but the control cost would see the raw action, and a
        # diffusion sample's tail beyond [-1, 1] would be charged for force it never applied.
        return gymnasium.wrappers.ClipAction(self._gymnasium_make(**render))


class _Episodes:
    """Rows of each env's running episode, and the episodes that ended, in order."""

    def __init__(self, num_envs: int) -> None:
        self.running: list[list[tuple[np.ndarray, ...]]] = [[] for _ in range(num_envs)]
        self.ended: list[dict[str, np.ndarray]] = []
        self.rows = 0

    def add(self, env: int, row: tuple[np.ndarray, ...], ends: bool) -> None:
        """Append (obs, action, reward, terminal, timeout, next_obs) to env `env`'s episode."""
        self.running[env].append(row)
        if ends:
            columns = zip(*self.running[env], strict=True)
            keys = ("observations", "actions", "rewards", "terminals", "timeouts")
            self.ended.append(
                dict(zip((*keys, "next_observations"), map(np.stack, columns), strict=True))
            )
            self.rows += len(self.running[env])
            self.running[env] = []

    def progress(self, by_rows: bool) -> int:
        """The rows (`by_rows`) or the episodes that have ended so far."""
        return self.rows if by_rows else len(self.ended)


def _collect(task: LocomotionTask, spec: CollectSpec, act: _Act) -> list[dict[str, np.ndarray]]:
    """Step `COLLECT_ENVS` envs with the behaviour's actions until enough episodes ended."""
    envs = task.make_vector_env(COLLECT_ENVS)
    by_rows = spec.transitions > 0
    total = spec.transitions if by_rows else spec.episodes
    store = _Episodes(COLLECT_ENVS)
    observations, _ = envs.reset(seed=spec.seed)
    # With next-step autoreset, the step after an episode's last one only resets that env
    # (its action is ignored): no transition.
    resetting = np.zeros(COLLECT_ENVS, dtype=bool)
    unit = "transition" if by_rows else "episode"
    try:
        with tqdm(total=total, unit=unit, desc=task.name, disable=total < _PROGRESS_FROM) as bar:
            while store.progress(by_rows) < total:
                # Cast before stepping, so the stored actions are exactly the ones executed.
                actions = np.asarray(act(observations), dtype=np.float32)
                next_obs, rewards, terminated, truncated, _ = envs.step(actions)
                before = store.progress(by_rows)
                for i in np.flatnonzero(~resetting):
                    row = (
                        observations[i],
                        actions[i],
                        rewards[i],
                        terminated[i],
                        truncated[i],
                        next_obs[i],
                    )
                    store.add(int(i), row, bool(terminated[i] or truncated[i]))
                bar.update(min(store.progress(by_rows), total) - before)
                resetting = terminated | truncated
                observations = next_obs
    finally:
        envs.close()
    return store.ended if by_rows else store.ended[: spec.episodes]


def _concatenate(episodes: list[dict[str, np.ndarray]], rows: int) -> TransitionDataset:
    """The episodes back to back in the dataset's dtypes, cut to `rows` rows if rows > 0.

    Shapes:
        each episode's arrays (T_k, ...) -> a dataset of sum_k T_k rows (or `rows`).
    """
    arrays = {key: np.concatenate([e[key] for e in episodes]) for key in episodes[0]}
    if rows > 0 and arrays["rewards"].shape[0] > rows:
        arrays = {key: value[:rows] for key, value in arrays.items()}
        if not (arrays["terminals"][rows - 1] or arrays["timeouts"][rows - 1]):
            # The episode cut short ends here: by a timeout, as if its time limit were reached.
            arrays["timeouts"][rows - 1] = True
    return columns_dataset(arrays)


def _build(name: str, env_kwargs: Mapping[str, Any]) -> Task:
    return LocomotionTask(name, env_kwargs)


FAMILY = TaskFamily(
    name="mujoco",
    env_ids={name: spec.env_id for name, spec in _SPECS.items()},
    build=_build,
    extra="mujoco",
)
