"""MetaWorld manipulation tasks (Sawyer arm, v3 envs) as a family of the registry.

Tasks: `button-press`, `drawer-open`, `sweep-into`, `plate-slide` (metaworld's
`button-press-v3`, `drawer-open-v3`, `sweep-into-v3`, `plate-slide-v3`). Observations have 39
dimensions (hand, gripper, object poses, the same one step earlier, and the goal position),
actions 4 in [-1, 1] (hand displacement, gripper effort); an episode lasts 500 steps
(metaworld's `max_path_length`) and never terminates early. Each step's reward lies in [0, 10]
and the env reports `info["success"]`, which the vector env passes on (`success = True`): the
success rate over episodes is the score that matters here; returns are normalised by the reward's
range (0 and 10 x 500), a scale that needs no measured references.

Starts (`starts`): every episode draws the task's positions uniformly from metaworld's random
reset space of the env (its `_random_reset_space`, read by `_get_state_rand_vec`):

    button-press   button x in [-0.1, 0.1], y in [0.85, 0.9] (the goal, the button's hole, follows)
    drawer-open    drawer x in [-0.1, 0.1] (the goal, the drawer pulled open, follows)
    sweep-into     puck x in [-0.1, 0.1], y in [0.6, 0.7]; goal fixed up to +-0.001
    plate-slide    goal x in [-0.1, 0.1], y in [0.85, 0.9]; the plate starts fixed

The draw comes from the env's own generator (metaworld's `seeded_rand_vec` mode), which
`reset(seed=s)` reseeds (`env.seed(s)`): vector env i is seeded s + i, and the episodes that
follow (next-step autoreset) continue its generator, so the starts depend on s alone. This is
neither MT1's protocol (50 positions fixed in advance, one chosen per reset by a separate
generator) nor metaworld's `goal_observable` classes (one position per env instance): it gives
every episode a fresh position, seeded. The goal is observable (as in MT1): the scripted
policies read it. The envs are built from metaworld's classes directly, not by
`gymnasium.make`, so no passive env checker wraps them; their observation space is the one
declared for an observable goal (`gymnasium.make("Meta-World/MT1", ...)` declares the hidden
goal's zero bounds, hence the checker's warnings there), and the observations lie in it.
Datasets record the env id `Meta-World/<env name>-goal-observable` (after metaworld's names of
its goal-observable variants; gymnasium registers no such id), which the registry maps back.

Behaviours (`collect`): `expert`, metaworld's scripted policy of the task plus a little
truncated Gaussian noise; `medium`, the same with more noise and most actions replaced by
uniform random ones, so that it succeeds far less often; `uniform`, uniform random actions.
The noise scale and the random fraction are `options["noise_std"]` and
`options["random_fraction"]`, `RECIPES` where an option is absent (`make_dataset` always passes
both, its entry's values, so a profile states them: pipelines/profiles/metaworld.yaml); the
density of every behaviour is exact (`dmc_envs.tasks.metaworld_behaviour`).

Frames (`render_env`): from metaworld's `corner` camera, turned the right way up, rendered
offscreen with EGL (`dmc_envs.tasks.rendering` sets `MUJOCO_GL=egl` unless it is set).

`metaworld` (the dmc-envs `metaworld` extra) is imported only when a task is built.

References:
    Yu et al., "Meta-World: A Benchmark and Evaluation for Multi-Task and Meta Reinforcement
    Learning" (CoRL 2019; arXiv:1910.10897, v2 2021): the tasks, the reward range and the
    success criterion; metaworld 3.1.1 (Farama Foundation): the v3 envs and the scripted
    policies (metaworld/policies).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
from tqdm.auto import tqdm

from dmc_core.data import TransitionDataset
from dmc_core.errors import ConfigError
from dmc_envs.tasks.base import (
    BehaviourDensity,
    CollectSpec,
    ReturnScale,
    Task,
    UniformBoxDensity,
    columns_dataset,
)
from dmc_envs.tasks.gymnasium_task import GymnasiumTask
from dmc_envs.tasks.metaworld_behaviour import SPEC_TYPE, NoisyScriptedPolicy
from dmc_envs.tasks.registry import TaskFamily
from dmc_envs.tasks.rendering import use_offscreen_gl

__all__ = [
    "BEHAVIOURS",
    "COLLECT_ENVS",
    "ENV_NAMES",
    "FAMILY",
    "RECIPES",
    "RENDER_CAMERA",
    "MetaWorldTask",
    "Recipe",
]

log = logging.getLogger(__name__)

#: Task name -> metaworld's env name.
ENV_NAMES = {
    "button-press": "button-press-v3",
    "drawer-open": "drawer-open-v3",
    "sweep-into": "sweep-into-v3",
    "plate-slide": "plate-slide-v3",
}

#: Behaviours a MetaWorld dataset can be collected with.
BEHAVIOURS = ("expert", "medium", "uniform")


@dataclass(frozen=True)
class Recipe:
    """A noisy scripted behaviour's defaults (pipelines/profiles/metaworld.yaml states them)."""

    noise_std: float
    random_fraction: float


#: The noisy scripted behaviours' defaults. Success rate / mean return over 20 seeded episodes:
#: expert: button-press 1.00 / 548, drawer-open 1.00 / 4028, sweep-into 0.85 / 1798,
#: plate-slide 1.00 / 4543; medium: 0.00 / 257, 0.20 / 1353, 0.55 / 1074, 0.50 / 1619. The
#: success rate falls steeply with the random fraction (button-press: 0.95 at 0.7, 0.65 at
#: 0.75), so a profile may set it per task (pipelines/profiles/metaworld.yaml).
RECIPES = {
    "expert": Recipe(noise_std=0.1, random_fraction=0.0),
    "medium": Recipe(noise_std=0.3, random_fraction=0.8),
}

#: Envs stepped side by side while collecting (env i of the batch starts from seed + i).
COLLECT_ENVS = 8

#: The camera of rendered frames: metaworld's view of the table from its front corner.
RENDER_CAMERA = "corner"

#: Collections of at least this many transitions show a progress bar.
_PROGRESS_FROM = 20_000

#: MetaWorld's reward per step lies in [0, 10] (every v3 env's `evaluate_state`).
_MAX_STEP_REWARD = 10.0

# A behaviour's action rule: observations (n, 39) -> actions (n, 4).
_Act = Callable[[np.ndarray], np.ndarray]


def _env_id(env_name: str) -> str:
    """The id a dataset records, after metaworld's goal-observable variant names."""
    return f"Meta-World/{env_name}-goal-observable"


class _SeededStarts(gymnasium.Wrapper):
    """A metaworld env whose `reset(seed=s)` reseeds the generator that draws its positions.

    metaworld's own `reset` ignores its seed argument; its `seed(s)` reseeds `np_random`, from
    which `_get_state_rand_vec` draws when `seeded_rand_vec` is set."""

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reseed (if `seed` is given), then start an episode at a freshly drawn position."""
        if seed is not None:
            self.env.unwrapped.seed(seed)
        return self.env.reset()


class _UprightFrames(gymnasium.Wrapper):
    """Frames the right way up: metaworld's cameras render them upside down."""

    def render(self) -> np.ndarray:
        """Shapes: (height, width, 3) uint8."""
        return np.ascontiguousarray(self.env.render()[::-1])


def _build_env(env_name: str, **render: Any) -> gymnasium.Env:
    """metaworld's env `env_name`, goal observable, a new position drawn at every reset;
    `render` are the class's rendering arguments (render_mode, camera_name, width, height)."""
    classes = importlib.import_module("metaworld.env_dict").ALL_V3_ENVIRONMENTS
    env = classes[env_name](**render)
    # As metaworld's goal-observable classes set up their envs, but without freezing the
    # position after the first reset (see the module docstring).
    env._partially_observable = False
    env.__dict__.pop("sawyer_observation_space", None)  # a cached property of the observability
    env.observation_space = env.sawyer_observation_space
    env._freeze_rand_vec = False
    env.seeded_rand_vec = True
    env._set_task_called = True
    return _SeededStarts(env)


def _make_render_env(env_name: str, size: int) -> gymnasium.Env:
    """`_build_env` rendering (size, size, 3) frames from `RENDER_CAMERA`, offscreen."""
    use_offscreen_gl()
    env = _build_env(
        env_name, render_mode="rgb_array", camera_name=RENDER_CAMERA, width=size, height=size
    )
    return _UprightFrames(env)


class MetaWorldTask(GymnasiumTask):
    """One metaworld v3 env as a task (see the module docstring)."""

    success = True
    starts = (
        "metaworld's random reset space of the task (object and goal positions, uniform), one "
        "draw per episode from the env's generator; reset(seed=s) seeds env i of a batch with "
        "s + i and later episodes continue its generator"
    )

    def __init__(self, name: str, env_kwargs: Mapping[str, Any]) -> None:
        """Build the task `name` (a key of `ENV_NAMES`).

        Raises:
            ModuleNotFoundError: `metaworld` is not installed (the registry names the extra).
            ConfigError: `env_kwargs` is not empty (the envs take none).
        """
        if env_kwargs:
            raise ConfigError(
                f"MetaWorld task '{name}' takes no env_kwargs, got {sorted(env_kwargs)}"
            )
        importlib.import_module("metaworld")
        self.name = name
        self.env_name = ENV_NAMES[name]
        self.env_id = _env_id(self.env_name)
        self.env_kwargs = {}
        probe = self._make_env()
        self.max_episode_steps = int(probe.unwrapped.max_path_length)
        self._action_box = probe.unwrapped.action_space
        probe.close()
        self.returns = ReturnScale(
            0.0,
            _MAX_STEP_REWARD * self.max_episode_steps,
            f"the range of MetaWorld's returns: 0 and {_MAX_STEP_REWARD:g} (the most a step "
            f"earns) x {self.max_episode_steps} steps; no measured references (the success rate "
            "is the score that matters)",
        )

    def render_env(self, size: int) -> gymnasium.Env:
        """One env as env 0 of `make_vector_env`, rendering (size, size, 3) frames from the
        table's corner (`RENDER_CAMERA`) offscreen with EGL (`MUJOCO_GL`, unless set)."""
        return _make_render_env(self.env_name, size)

    def _make_env(self, **render: Any) -> gymnasium.Env:
        """The task's env (`info["success"]` at every step); `render` are the env class's
        rendering arguments."""
        return _build_env(self.env_name, **render)

    def collect(self, spec: CollectSpec) -> tuple[TransitionDataset, dict[str, Any]]:
        """`spec.transitions` rows (or, if that is 0, `spec.episodes` whole episodes) of the
        behaviour, episodes stored in the order they end (ties: by env index).

        The episode that crosses `spec.transitions` is cut there and its last kept row marked
        a timeout; the other envs' unfinished episodes are dropped. The attributes record the
        behaviour (`behavior_policy`, `behavior_policy_spec`) and, over the stored episodes,
        the success rate (an episode succeeds if the env reports success at any of its steps)
        and the mean return.

        Raises:
            ConfigError: an unknown behaviour, bad noise options, or a spec that asks for
                nothing.
        """
        self.check_collect_spec(spec, BEHAVIOURS)
        act, attrs = self._behaviour(spec)
        episodes = _kept(_run_episodes(self, spec, act), spec)
        successes = np.array([e.successes.any() for e in episodes])
        returns = np.array([e.columns["rewards"].sum(dtype=np.float64) for e in episodes])
        log.info(
            "%s %s: %d episodes, success rate %.3f, mean return %.1f",
            self.name,
            spec.behaviour,
            len(episodes),
            successes.mean(),
            returns.mean(),
        )
        return _concatenate(episodes), {
            **attrs,
            "collect_num_envs": COLLECT_ENVS,
            "success_rate": float(successes.mean()),
            "return_mean": float(returns.mean()),
        }

    def behaviour_density(self, attrs: Mapping[str, Any]) -> BehaviourDensity | None:
        """The noisy scripted policy a `metaworld_scripted` spec records; otherwise the
        default (uniform actions: `Task.behaviour_density`)."""
        spec = attrs.get("behavior_policy_spec")
        if isinstance(spec, Mapping) and spec.get("type") == SPEC_TYPE:
            return NoisyScriptedPolicy.from_dict(spec)
        return super().behaviour_density(attrs)

    def _behaviour(self, spec: CollectSpec) -> tuple[_Act, dict[str, Any]]:
        """The behaviour's action rule (observations -> actions) and its provenance."""
        # A child of the seed's sequence: the actions' stream is not env 0's start stream.
        rng = np.random.default_rng(np.random.SeedSequence(spec.seed).spawn(1)[0])
        where = f"seed {spec.seed}; {COLLECT_ENVS} envs side by side, env i seeded {spec.seed} + i"
        low, high = self.action_bounds()
        if spec.behaviour == "uniform":
            attrs = {
                "behavior_policy": (
                    f"uniform random actions on the action box (behavior_policy_spec), from {where}"
                ),
                "behavior_policy_spec": UniformBoxDensity(low, high).to_dict(),
            }
            return lambda obs: rng.uniform(low, high, size=(len(obs), low.size)), attrs
        recipe = RECIPES[spec.behaviour]
        policy = NoisyScriptedPolicy(
            self.env_name,
            noise_std=float(spec.options.get("noise_std", recipe.noise_std)),
            random_fraction=float(spec.options.get("random_fraction", recipe.random_fraction)),
            low=low,
            high=high,
        )
        attrs = {
            "behavior_policy": f"{policy.describe()}, from {where}",
            "behavior_policy_spec": policy.to_dict(),
        }
        return lambda obs: policy.sample(obs, rng), attrs


@dataclass
class _Episode:
    """One episode's rows: the six dataset columns, and whether the env reported success at
    each step. Shapes: columns (T, ...), successes (T,)."""

    columns: dict[str, np.ndarray]
    successes: np.ndarray

    def __len__(self) -> int:
        return int(self.successes.size)

    def cut(self, rows: int) -> _Episode:
        """The first `rows` rows, the last one marked a timeout (as if the time ran out)."""
        columns = {key: value[:rows].copy() for key, value in self.columns.items()}
        if not (columns["terminals"][-1] or columns["timeouts"][-1]):
            columns["timeouts"][-1] = True
        return _Episode(columns, self.successes[:rows])


_COLUMNS = ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")


def _episode(rows: list[tuple[Any, ...]]) -> _Episode:
    """Stack (obs, action, reward, terminal, timeout, next_obs, success) rows."""
    stacked = [np.stack(column) for column in zip(*rows, strict=True)]
    return _Episode(dict(zip(_COLUMNS, stacked[:-1], strict=True)), stacked[-1].astype(bool))


def _run_episodes(task: MetaWorldTask, spec: CollectSpec, act: _Act) -> list[_Episode]:
    """Step `COLLECT_ENVS` envs with the behaviour's actions until enough episodes ended."""
    envs = task.make_vector_env(COLLECT_ENVS)
    by_rows = spec.transitions > 0
    total_rows = spec.transitions if by_rows else spec.episodes * task.max_episode_steps
    running: list[list[tuple[Any, ...]]] = [[] for _ in range(COLLECT_ENVS)]
    ended: list[_Episode] = []
    observations, _ = envs.reset(seed=spec.seed)
    # With next-step autoreset, the step after an episode's last one only resets that env
    # (its action is ignored): no transition.
    resetting = np.zeros(COLLECT_ENVS, dtype=bool)
    bar = tqdm(
        total=total_rows, unit="transition", desc=task.name, disable=total_rows < _PROGRESS_FROM
    )
    ended_rows = 0
    try:
        while not (ended_rows >= spec.transitions if by_rows else len(ended) >= spec.episodes):
            # Cast before stepping, so the stored actions are exactly the ones executed.
            actions = np.asarray(act(observations), dtype=np.float32)
            next_obs, rewards, terminated, truncated, info = envs.step(actions)
            success = np.asarray(info.get("success", np.zeros(COLLECT_ENVS)), dtype=bool)
            stepped = np.flatnonzero(~resetting)
            for i in stepped:
                running[i].append(
                    (
                        observations[i],
                        actions[i],
                        rewards[i],
                        terminated[i],
                        truncated[i],
                        next_obs[i],
                        success[i],
                    )
                )
                if terminated[i] or truncated[i]:
                    ended.append(_episode(running[i]))
                    ended_rows += len(running[i])
                    running[i] = []
            bar.update(min(stepped.size, total_rows - bar.n))
            resetting = terminated | truncated
            observations = next_obs
    finally:
        bar.close()
        envs.close()
    return ended


def _kept(ended: list[_Episode], spec: CollectSpec) -> list[_Episode]:
    """The episodes the dataset stores: the first `spec.episodes`, or as many rows as
    `spec.transitions` asks, the last episode cut."""
    if spec.transitions == 0:
        return ended[: spec.episodes]
    kept, rows = [], 0
    for episode in ended:
        if rows + len(episode) >= spec.transitions:
            kept.append(episode.cut(spec.transitions - rows))
            break
        kept.append(episode)
        rows += len(episode)
    return kept


def _concatenate(episodes: list[_Episode]) -> TransitionDataset:
    """The episodes back to back in the dataset's dtypes.

    Shapes: each episode's columns (T_k, ...) -> a dataset of sum_k T_k rows."""
    arrays = {key: np.concatenate([e.columns[key] for e in episodes]) for key in _COLUMNS}
    return columns_dataset(arrays)


def _build(name: str, env_kwargs: Mapping[str, Any]) -> Task:
    return MetaWorldTask(name, env_kwargs)


FAMILY = TaskFamily(
    name="metaworld",
    env_ids={name: _env_id(env_name) for name, env_name in ENV_NAMES.items()},
    build=_build,
    extra="metaworld",
)
