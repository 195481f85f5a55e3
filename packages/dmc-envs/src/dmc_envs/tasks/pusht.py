"""PushT (gym-pusht 0.1.8, `gym_pusht/PushT-v0`) as two tasks of the registry, one per observation.

The agent, a disc, pushes a T-shaped block onto a fixed goal pose (256, 256, pi/4); an action
is the point in [0, 512]^2 the agent is PD-steered towards (10 substeps per step). The two tasks
differ only in what the agent observes:
- `pusht` (`obs_type: state`): (agent_x, agent_y, block_x, block_y, block_angle), the angle in
  [-pi, pi) (it wraps);
- `pusht-keypoints` (`obs_type: environment_state_agent_pos`, gym-pusht's keypoint
  observation, flattened): (agent_x, agent_y, then x, y of the T's eight corners), 18 numbers
  that move continuously with the block, Diffusion Policy's low-dim PushT observation (its
  `pusht_lowdim` task observes the agent and keypoints of the T).
The rest is the same for both. The reward is the block's
coverage of the goal, clip(coverage / 0.95, 0, 1); an episode terminates with success when the
coverage exceeds 0.95 and is cut at 300 steps. Starts draw the agent and the block uniformly
(gym-pusht's reset), from the seed alone.

The task gives what every task gives (a seeded vector env, the 300-step limit, the action box,
a return scale from 0 to 300, the most reward an episode can collect), the env's success as
`info["success"]`, and two episode scores (`episode_scores`, recorded by the evaluation beside
return and success): `final_coverage`, the coverage after the episode's last step, and
`max_reward`, the best step reward of the episode, Diffusion Policy's PushT score
(`test/mean_score`), and frames of its episodes (`render_env`, drawn by pygame without a
display). It has no dynamics, differentiable dynamics or plan reward.

Datasets are collected by three behaviours, one episode after another, episode k from seed
`spec.seed + k` (as env k of a vector env reset with `spec.seed`):
- `uniform`: targets uniform on the action box (density known: `UniformBoxDensity`);
- `expert`: the push-primitive planner of `dmc_envs.tasks.pusht_expert`, after Diffusion
  Policy's proficient-human (ph) demonstrations; options `expert_noise` (std of Gaussian noise
  added to every target, pixels, then clipped to the box; default 0) and `successful_only`
  (keep only episodes that reach the goal, as the ph demonstrations do; default True);
- `mixed`: operators of several skills, after robomimic's multi-human (mh) data: episode k is
  played by operator k mod n; option `operators`, a list of {noise, contact_spacing, depths}
  (default `MIXED_OPERATORS`: the expert, a noisier one with fewer pushes, and a still noisier
  one with still fewer), and `successful_only` (default True).
With `successful_only`, `episodes` counts kept episodes and at most `max_attempts_factor`
(default 4) times as many are played. The collection's own success rate is recorded
(`collection_episodes`, `collection_successes`).

Behaviour density. A planner's action is a deterministic but non-closed-form function of the
state (the best of simulated primitives, executed open loop between decisions), and with
noise the density of a recorded action given the state needs the planner's noise-free action
there. The dataset layout keeps no such column, so the planner behaviours record their density
as unknown (`behavior_policy_spec` of type `pusht_planner`, `behaviour_density` -> None): policy
coherency is not measured on them, rather than measured against a made-up density. The
`uniform` behaviour's density is exact.

`gym_pusht` (the dmc-envs `pusht` extra) is imported only when the task is built.

References:
    Chi et al., "Diffusion Policy: Visuomotor Policy Learning via Action Diffusion" (RSS 2023):
    PushT's protocol and score; Florence et al., "Implicit Behavioral Cloning" (CoRL 2021): the
    PushT task; Mandlekar et al., "What Matters in Learning from Offline Human Demonstrations
    for Robot Manipulation" (CoRL 2021): ph and mh datasets; gym-pusht 0.1.8 (huggingface).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium
import numpy as np

from dmc_core.data import TransitionDataset
from dmc_core.errors import ConfigError
from dmc_envs.tasks.base import (
    BehaviourDensity,
    CollectSpec,
    EpisodeScore,
    ReturnScale,
    Task,
    UniformBoxDensity,
    columns_dataset,
)
from dmc_envs.tasks.gymnasium_task import GymnasiumTask
from dmc_envs.tasks.pusht_expert import PushState, PushTPlanner
from dmc_envs.tasks.registry import TaskFamily

__all__ = ["BEHAVIOURS", "FAMILY", "MIXED_OPERATORS", "PushTTask"]

ENV_ID = "gym_pusht/PushT-v0"
MAX_EPISODE_STEPS = 300
BEHAVIOURS = ("uniform", "expert", "mixed")
#: The operators of the `mixed` behaviour (robomimic's mh has better, okay and worse ones).
MIXED_OPERATORS: tuple[Mapping[str, Any], ...] = (
    {"noise": 0.0, "contact_spacing": 12.0, "depths": [2.0, 5.0, 12.0, 25.0, 45.0]},
    {"noise": 4.0, "contact_spacing": 20.0, "depths": [3.0, 10.0, 30.0]},
    {"noise": 8.0, "contact_spacing": 30.0, "depths": [5.0, 20.0]},
)
#: gym-pusht's observation types the tasks read (gymnasium.make's `obs_type`), and their tasks.
OBSERVATIONS = {"state": "pusht", "environment_state_agent_pos": "pusht-keypoints"}
#: Each task's gymnasium.make kwargs; a PushTTask built directly observes the state.
_TASK_KWARGS = {task: {"obs_type": obs_type} for obs_type, task in OBSERVATIONS.items()}
_DEFAULT_KWARGS = _TASK_KWARGS["pusht"]
#: The smallest frame gym-pusht can draw (its target cross is 1/96 of the frame thick).
MIN_FRAME_PIXELS = 96
_RETURN_SOURCE = (
    "0 to 300: the least and the most reward a PushT episode can collect (300 steps of reward "
    "clip(coverage / 0.95, 0, 1)); an episode that succeeds early ends with less than 300"
)

# A behaviour's action rule: (observation (5,) or (18,), info) -> action (2,); reset at each
# episode. Both observations begin with the agent's position.
_Act = Callable[[np.ndarray, Mapping[str, Any]], np.ndarray]


class _SuccessInfo(gymnasium.Wrapper):
    """Surfaces gym-pusht's `info["is_success"]` as `info["success"]` (what evaluation reads)."""

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        observation, info = self.env.reset(**kwargs)
        return observation, {**info, "success": bool(info.get("is_success", False))}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        info = {**info, "success": bool(info.get("is_success", False))}
        return observation, reward, terminated, truncated, info


class _FlatKeypoints(gymnasium.ObservationWrapper):
    """gym-pusht's keypoint observation, a dict, as one vector: agent_pos (2), then
    environment_state (16: x, y of the T's eight corners), all in pixels."""

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        self.observation_space = gymnasium.spaces.Box(0.0, 512.0, shape=(18,), dtype=np.float64)

    def observation(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([observation["agent_pos"], observation["environment_state"]])


class PushTTask(GymnasiumTask):
    """gym-pusht's PushT with state or keypoint observations as a task (see the module
    docstring)."""

    name = "pusht"
    env_id = ENV_ID
    max_episode_steps = MAX_EPISODE_STEPS
    starts = (
        "gym-pusht's reset: agent position uniform on [50, 450)^2, block position on "
        "[100, 400)^2, block angle on [-pi, pi); env i of a batch seeded seed + i"
    )
    success = True
    collect_options = ("successful_only", "expert_noise", "operators", "max_attempts_factor")
    episode_scores = (
        EpisodeScore("final_coverage", "coverage", "final"),
        EpisodeScore("max_reward", "reward", "max"),
    )

    def __init__(self, env_kwargs: Mapping[str, Any]) -> None:
        """Build the task with gymnasium.make's kwargs (default: state observations); its
        name follows the observation (`OBSERVATIONS`).

        Raises:
            ModuleNotFoundError: gym-pusht is not installed (the registry names the extra).
            ConfigError: the kwargs ask for observations other than `OBSERVATIONS`, or
                gymnasium refuses them.
        """
        importlib.import_module("gym_pusht")  # registers the env; fails without the extra
        self.env_kwargs = {**_DEFAULT_KWARGS, **env_kwargs}
        obs_type = self.env_kwargs["obs_type"]
        if obs_type not in OBSERVATIONS:
            raise ConfigError(
                f"task 'pusht': env_kwargs.obs_type must be one of {sorted(OBSERVATIONS)} (the "
                f"planner and the models read vectors), got '{obs_type}'"
            )
        self.name = OBSERVATIONS[obs_type]
        self.returns = ReturnScale(0.0, float(MAX_EPISODE_STEPS), _RETURN_SOURCE)
        self._read_action_box()

    def collect(self, spec: CollectSpec) -> tuple[TransitionDataset, dict[str, Any]]:
        """`spec.episodes` whole episodes (or, if `spec.transitions` > 0, episodes until that
        many rows, the last one cut and marked a timeout) of the behaviour, episode k from seed
        `spec.seed + k`; see the module docstring for the behaviours and their options.

        Raises:
            ConfigError: an unknown behaviour, a malformed option, a spec that asks for
                nothing, or too few successful episodes within the attempts allowed.
        """
        self.check_collect_spec(spec, BEHAVIOURS)
        operators, attrs = self._behaviour(spec)
        successful_only = spec.behaviour != "uniform" and _flag(spec, "successful_only", True)
        kept, played, successes = self._play(spec, operators, successful_only)
        dataset = _concatenate(kept, spec.transitions)
        return dataset, {
            **attrs,
            "successful_only": successful_only,
            "collection_episodes": played,
            "collection_successes": successes,
            "success_rate": float(np.mean([e["success"] for e in kept])),
        }

    def behaviour_density(self, attrs: Mapping[str, Any]) -> BehaviourDensity | None:
        """The uniform behaviour's density; None for the planner behaviours (unknown: see the
        module docstring)."""
        spec = attrs.get("behavior_policy_spec")
        if isinstance(spec, Mapping) and spec.get("type") == "pusht_planner":
            return None
        return super().behaviour_density(attrs)

    def _behaviour(self, spec: CollectSpec) -> tuple[list[Callable[[], _Act]], dict[str, Any]]:
        """Per operator a factory of its per-episode action rule (episode k uses operator
        k mod n), and the provenance."""
        where = f"episode k from seed {spec.seed} + k"
        low, high = self.action_bounds()
        if spec.behaviour == "uniform":
            rng = np.random.default_rng(spec.seed)
            attrs = {
                "behavior_policy": (
                    f"uniform random targets on the action box (behavior_policy_spec), {where}"
                ),
                "behavior_policy_spec": UniformBoxDensity(low, high).to_dict(),
            }

            def uniform_rule() -> _Act:
                return lambda observation, info: rng.uniform(low, high)

            return [uniform_rule], attrs
        settings = _operator_settings(spec)
        rng = np.random.default_rng(spec.seed)
        operators = [_planner_operator(s, rng, low, high) for s in settings]
        name = "the expert" if spec.behaviour == "expert" else "operators of several skills"
        attrs = {
            "behavior_policy": (
                f"push-primitive planner on a private simulator (dmc_envs.tasks.pusht_expert), "
                f"{name}, Gaussian noise on the targets clipped to the box; episode k played by "
                f"operator k mod {len(settings)}; {where}; density unknown"
            ),
            "behavior_policy_spec": {"type": "pusht_planner", "operators": settings},
        }
        return operators, attrs

    def _play(
        self, spec: CollectSpec, operators: list[Callable[[], _Act]], successful_only: bool
    ) -> tuple[list[dict[str, np.ndarray]], int, int]:
        """Episodes until enough are kept: (kept episodes, episodes played, successes)."""
        factor = int(spec.options.get("max_attempts_factor", 4))
        wanted = spec.episodes if spec.transitions == 0 else None
        # Episodes that succeed are short (about 150 steps), those that fail 300 steps long.
        needed = wanted if wanted is not None else -(-spec.transitions // 50)
        limit = needed * factor if successful_only else needed * MAX_EPISODE_STEPS
        kept: list[dict[str, np.ndarray]] = []
        played = successes = rows = 0
        env = self._make_env()
        try:
            while played < limit:
                episode = _episode(env, spec.seed + played, operators[played % len(operators)]())
                played += 1
                successes += int(episode["success"])
                if episode["success"] or not successful_only:
                    kept.append(episode)
                    rows += len(episode["rewards"])
                if (wanted is not None and len(kept) >= wanted) or (
                    wanted is None and rows >= spec.transitions
                ):
                    return kept, played, successes
        finally:
            env.close()
        raise ConfigError(
            f"task {self.describe()}: behaviour '{spec.behaviour}' with successful_only kept "
            f"{len(kept)} of {played} episodes, fewer than asked for (raise "
            f"options.max_attempts_factor, {factor}, or set successful_only: false)"
        )

    def render_env(self, size: int) -> gymnasium.Env:
        """One env as env 0 of `make_vector_env`, rendering (size, size, 3) frames of the arena
        (pygame draws them without a display), the last target marked with a cross.

        Raises:
            ValueError: `size` < `MIN_FRAME_PIXELS` (gym-pusht draws the cross 1/96 as thick).
        """
        if size < MIN_FRAME_PIXELS:
            raise ValueError(f"task 'pusht' renders frames of at least {MIN_FRAME_PIXELS} pixels")
        return self._make_env(
            render_mode="rgb_array", visualization_width=size, visualization_height=size
        )

    def _make_env(self, **render: Any) -> gymnasium.Env:
        """The task's env; `render` are gym-pusht's rendering arguments (none: its defaults)."""
        env = self._gymnasium_make(**render)
        if self.env_kwargs["obs_type"] == "environment_state_agent_pos":
            env = _FlatKeypoints(env)
        # Targets beyond the box are clipped, so a diffusion sample's tail stays in the arena.
        return _SuccessInfo(gymnasium.wrappers.ClipAction(env))


def _flag(spec: CollectSpec, key: str, default: bool) -> bool:
    value = spec.options.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"task 'pusht': options.{key} must be true or false, got {value!r}")
    return value


def _operator_settings(spec: CollectSpec) -> list[dict[str, Any]]:
    """The operators' {noise, contact_spacing, depths}, checked.

    Raises:
        ConfigError: an operator with a negative noise, a spacing not > 0 or no depths.
    """
    if spec.behaviour == "expert":
        noise = float(spec.options.get("expert_noise", 0.0))
        raw: Sequence[Mapping[str, Any]] = [{**MIXED_OPERATORS[0], "noise": noise}]
    else:
        raw = spec.options.get("operators", MIXED_OPERATORS)
    settings = []
    for i, operator in enumerate(raw):
        unknown = set(operator) - {"noise", "contact_spacing", "depths"}
        noise = float(operator.get("noise", 0.0))
        spacing = float(operator.get("contact_spacing", 12.0))
        depths = [float(d) for d in operator.get("depths", MIXED_OPERATORS[0]["depths"])]
        if unknown or noise < 0 or spacing <= 0 or not depths:
            raise ConfigError(
                f"task 'pusht': options.operators[{i}] needs noise >= 0, contact_spacing > 0 "
                f"and some depths (and no other keys), got {dict(operator)}"
            )
        settings.append({"noise": noise, "contact_spacing": spacing, "depths": depths})
    if not settings:
        raise ConfigError("task 'pusht': options.operators is empty")
    return settings


def _planner_operator(
    settings: Mapping[str, Any], rng: np.random.Generator, low: np.ndarray, high: np.ndarray
) -> Callable[[], _Act]:
    """A factory of one operator's action rule (fresh for each episode)."""
    planner = PushTPlanner(
        depths=tuple(settings["depths"]), contact_spacing=settings["contact_spacing"]
    )

    def episode_rule() -> _Act:
        queue: list[np.ndarray] = []

        def act(observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
            if not queue:
                state = PushState(
                    np.asarray(observation[:2], dtype=np.float64),
                    np.asarray(info["vel_agent"], dtype=np.float64),
                    np.asarray(info["block_pose"], dtype=np.float64),
                )
                queue.extend(planner.plan(state))
            target = queue.pop(0)
            if settings["noise"] > 0:
                target = target + rng.normal(0.0, settings["noise"], size=2)
            return np.clip(target, low, high)

        return act

    return episode_rule


def _episode(env: gymnasium.Env, seed: int, act: _Act) -> dict[str, np.ndarray]:
    """One whole episode from `seed`. Shapes: rows (T, ...); `success` a bool array ()."""
    observation, info = env.reset(seed=seed)
    rows = []
    success = False
    while True:
        action = np.asarray(act(observation, info), dtype=np.float32)
        next_observation, reward, terminated, truncated, info = env.step(action)
        rows.append((observation, action, reward, terminated, truncated, next_observation))
        success |= bool(info["success"])
        observation = next_observation
        if terminated or truncated:
            break
    keys = ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")
    episode = {
        key: np.stack(column) for key, column in zip(keys, zip(*rows, strict=True), strict=True)
    }
    return {**episode, "success": np.array(success)}


def _concatenate(episodes: list[dict[str, np.ndarray]], rows: int) -> TransitionDataset:
    """The episodes back to back, cut to `rows` rows if rows > 0 (the cut marked a timeout).

    Shapes: each episode's arrays (T_k, ...) -> a dataset of sum_k T_k rows (or `rows`)."""
    keys = ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")
    arrays = {key: np.concatenate([e[key] for e in episodes]) for key in keys}
    if rows > 0 and arrays["rewards"].shape[0] > rows:
        arrays = {key: value[:rows] for key, value in arrays.items()}
        if not (arrays["terminals"][rows - 1] or arrays["timeouts"][rows - 1]):
            arrays["timeouts"][rows - 1] = True
    arrays["timeouts"] = arrays["timeouts"].astype(bool) & ~arrays["terminals"].astype(bool)
    return columns_dataset(arrays)


def _build(name: str, env_kwargs: Mapping[str, Any]) -> Task:
    return PushTTask({**_TASK_KWARGS[name], **env_kwargs})


FAMILY = TaskFamily(
    name="pusht",
    env_ids={task: ENV_ID for task in _TASK_KWARGS},
    build=_build,
    extra="pusht",
    default_kwargs=_TASK_KWARGS,
)
