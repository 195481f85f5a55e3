"""The task interface: what every stage may ask of a benchmark, and what it may lack.

A task is one control problem (Nav1D, Hopper-v5, ...). Every task gives the stages what they all
need: a seeded vectorised gymnasium environment, its episode limit, its action bounds, and how its
returns are normalised. The rest is optional and declared: a stage that needs a piece the task
lacks calls `Task.require`, which stops it before any work, naming the piece and the task.

Optional pieces:
- `dynamics`: the gap between a planned next state and the true dynamics' (planner coherency,
  paper Eq. 15);
- `differentiable_dynamics`: the same gap on tensors (alignment's `dynamics_weight`);
- `plan_reward`: the return of a planned trajectory (alignment's `plan_return` reward);
- `behaviour_density(attrs)`: the density of the policy that collected a dataset (policy
  coherency, paper Eq. 16);
- `success`: whether the environment reports `info["success"]` (success rates);
- `episode_scores`: how an episode is scored besides its return (`EpisodeScore`: a per-step
  quantity, the reward or an `info` entry, reduced over the episode to its final or best value;
  the evaluation reports each one's mean, e.g. PushT's final coverage);
- pictures: `plot_episodes` draws rolled-out episodes (a generic return histogram otherwise);
- `render_env(size)`: one environment that renders its frames (`render()` gives a (size, size,
  3) uint8 image) and otherwise behaves as env 0 of `make_vector_env` (the same starts for
  `reset(seed=s)`, the same steps): the evaluation's contact sheets of episodes.

References:
    "Maximize Your Diffusion", §4 (protocol, Eq. 15-16); Fu et al., D4RL (2020) (normalised score).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import gymnasium
import numpy as np
from torch import Tensor

from dmc_core.data import TransitionDataset
from dmc_core.errors import ConfigError
from dmc_envs.behaviour.density import density_from_spec

__all__ = [
    "BehaviourDensity",
    "CollectSpec",
    "Dynamics",
    "EpisodeScore",
    "MissingPieceError",
    "PlanReward",
    "RenderEnv",
    "ReturnScale",
    "Task",
    "TorchDynamics",
    "UniformBoxDensity",
    "columns_dataset",
]


class MissingPieceError(ConfigError):
    """A stage needs an optional piece of a task that this task does not offer."""


@dataclass(frozen=True)
class ReturnScale:
    """Normalised score = 100 (R - low) / (high - low): 0 at `low`, 100 at `high`.

    `source` says where the two references come from (shown with every score)."""

    low: float
    high: float
    source: str

    def __post_init__(self) -> None:
        """Refuse a scale that maps every return to the same score."""
        if not self.high > self.low:
            raise ValueError(f"reference returns need high > low, got {self.low}, {self.high}")

    def normalized(self, returns: Any) -> Any:
        """A float for a scalar, else an array of the input's shape."""
        scores = 100.0 * (np.asarray(returns, dtype=np.float64) - self.low) / (self.high - self.low)
        return scores if scores.ndim else float(scores)


@dataclass(frozen=True)
class EpisodeScore:
    """A score of each episode besides its return: a per-step quantity reduced over the episode.

    `source` is `"reward"` (the step reward) or the key of an `info` entry the environment
    reports at every step; `reduce` is `"final"` (its value after the episode's last step) or
    `"max"` (its best value over the episode). The evaluation reports `<name>_mean`."""

    name: str
    source: str
    reduce: str

    def __post_init__(self) -> None:
        """Refuse an unknown reduction."""
        if self.reduce not in ("final", "max"):
            raise ValueError(f"episode score '{self.name}': reduce must be final or max")


class Dynamics(Protocol):
    """How far planned transitions are from the true dynamics (planner coherency)."""

    def gaps(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """The distance of each planned next state from the one the dynamics give, in the
        task's state units; NaN where a transition cannot be measured (its start is not fully
        observed, or the simulator diverged).

        Shapes:
            states: (..., H, obs_dim); actions: (..., H or H - 1, act_dim) -> (..., steps).
        """
        ...


class TorchDynamics(Protocol):
    """`Dynamics.gaps` on tensors, differentiable in the plan."""

    def __call__(self, states: Tensor, actions: Tensor) -> Tensor:
        """Shapes: states (B, H, obs_dim), actions (B, H, act_dim) -> (B, H - 1)."""
        ...


class PlanReward(Protocol):
    """The task's return along planned states from the decision's observation."""

    def __call__(self, states: Tensor, observation: Tensor) -> Tensor:
        """Shapes: states (B, H, obs_dim) planned; observation (B, obs_dim) -> (B,)."""
        ...


class RenderEnv(Protocol):
    """Builds one environment whose `render()` gives frames (`Task.render_env`)."""

    def __call__(self, size: int) -> gymnasium.Env:
        """An env as env 0 of the task's vector env, rendering (size, size, 3) uint8 frames.

        Raises:
            RenderUnavailableError: it cannot render here (`dmc_envs.tasks.rendering`).
            ValueError: `size` is too small for the task's drawing.
        """
        ...


class BehaviourDensity(Protocol):
    """The density of the policy that collected a dataset (policy coherency)."""

    def density(self, observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Shapes: observations (N, obs_dim), actions (N, act_dim) -> (N,)."""
        ...


class UniformBoxDensity:
    """Actions uniform on the box [low, high] (D4RL's random datasets): 1 / volume inside."""

    def __init__(self, low: Sequence[float], high: Sequence[float]) -> None:
        """Keep the box's corners."""
        self.low = np.asarray(low, dtype=np.float64)
        self.high = np.asarray(high, dtype=np.float64)
        self.value = float(1.0 / np.prod(self.high - self.low))

    def density(self, observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """1 / volume where every coordinate lies in the box, else 0."""
        a = np.asarray(actions, dtype=np.float64)
        inside = np.all((a >= self.low) & (a <= self.high), axis=-1)
        return np.where(inside, self.value, 0.0)

    def to_dict(self) -> dict[str, Any]:
        """The `behavior_policy_spec` a dataset records."""
        return {"type": "uniform", "low": self.low.tolist(), "high": self.high.tolist()}


@dataclass(frozen=True)
class CollectSpec:
    """What `make_dataset` asks a task to collect (a `make_dataset.datasets` entry's knobs).

    `transitions > 0` asks for that many rows (the episode that crosses the count is cut there
    and ends as a timeout); `transitions == 0` asks for `episodes` whole episodes. `options` are
    the family-specific knobs (Nav1D's start interval, noise and optimum grid); a family ignores
    those it has no use for.
    """

    behaviour: str
    episodes: int
    transitions: int
    seed: int
    options: Mapping[str, Any]


class Task(ABC):
    """One control problem behind one interface (see the module docstring).

    Attributes:
        name: the registry name (`nav1d`, `hopper`, ...).
        env_id: the gymnasium id a dataset records.
        env_kwargs: the keyword arguments that rebuild this task.
        max_episode_steps: the episode limit (truncation).
        returns: how returns are normalised.
        starts: how the environment draws an episode's start (written into results).
        success: whether the environment reports `info["success"]`.
        episode_scores: the scores of an episode besides its return (none by default).
        collect_options: the family's own `CollectSpec.options` that a dataset entry's
            `options` may set (make_dataset refuses others).
    """

    name: str
    env_id: str
    env_kwargs: Mapping[str, Any]
    max_episode_steps: int
    returns: ReturnScale
    starts: str
    success: bool = False
    episode_scores: tuple[EpisodeScore, ...] = ()
    collect_options: tuple[str, ...] = ()
    dynamics: Dynamics | None = None
    differentiable_dynamics: TorchDynamics | None = None
    plan_reward: PlanReward | None = None
    # A family that renders defines a method of this name (see `RenderEnv`).
    render_env: RenderEnv | None = None

    @abstractmethod
    def make_vector_env(self, num_envs: int) -> gymnasium.vector.VectorEnv:
        """`num_envs` copies of the environment; `reset(seed=s)` makes every start depend on
        `s` alone, and an episode that ends is reset on the next `step` (gymnasium's
        next-step autoreset)."""

    @abstractmethod
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The action space's low and high corners. Shapes: (act_dim,), (act_dim,)."""

    @abstractmethod
    def collect(self, spec: CollectSpec) -> tuple[TransitionDataset, dict[str, Any]]:
        """A dataset by the task's recipe for `spec.behaviour`, and the provenance attributes
        the recipe adds (its behaviour policy and, where known, its density's spec).

        Raises:
            ConfigError: the task has no such behaviour.
        """

    def behaviour_density(self, attrs: Mapping[str, Any]) -> BehaviourDensity | None:
        """The density of the policy that collected a dataset with these attributes, if known.

        The default reads `behavior_policy_spec`: a uniform box (type `uniform`), a behaviour
        agent's actor or a mixture of actors (`dmc_envs.behaviour.density`)."""
        spec = attrs.get("behavior_policy_spec")
        if not isinstance(spec, Mapping):
            return None
        if spec.get("type") == "uniform" and "low" in spec:
            return UniformBoxDensity(spec["low"], spec["high"])
        return density_from_spec(spec)

    def check_collect_spec(self, spec: CollectSpec, behaviours: Sequence[str]) -> None:
        """Refuse a behaviour the task does not have and a spec that asks for nothing.

        Raises:
            ConfigError: naming the behaviour (and the task's) or the sizes asked for.
        """
        if spec.behaviour not in behaviours:
            raise ConfigError(
                f"task {self.describe()} has no behaviour '{spec.behaviour}' "
                f"(it has {', '.join(behaviours)})"
            )
        if spec.transitions < 0 or spec.episodes < 0 or spec.transitions == spec.episodes == 0:
            raise ConfigError(
                f"task {self.describe()}: a dataset needs transitions > 0 or episodes > 0, got "
                f"transitions={spec.transitions}, episodes={spec.episodes}"
            )

    def plot_episodes(self, observations: list[np.ndarray], path: Path, title: str) -> bool:
        """Draw rolled-out episodes (each (T + 1, obs_dim)) into `path`; False if the task has
        no picture of its own (the caller then draws a generic one)."""
        return False

    def describe(self) -> str:
        """`name (env_id)`, as errors name a task."""
        return f"'{self.name}' ({self.env_id})"

    def require(self, piece: str, needed_by: str) -> Any:
        """The optional piece `piece` (an attribute name), or `MissingPieceError` naming what
        needs it and the task."""
        value = getattr(self, piece, None)
        if value is None:
            raise MissingPieceError(
                f"{needed_by} needs the task's {piece.replace('_', ' ')}, and task "
                f"{self.describe()} has none"
            )
        return value

    def provenance(self) -> dict[str, Any]:
        """The attributes every dataset of this task records (env, bounds, references)."""
        low, high = self.action_bounds()
        return {
            "env_id": self.env_id,
            "env_kwargs": dict(self.env_kwargs),
            "action_low": [float(v) for v in low],
            "action_high": [float(v) for v in high],
            "ref_min_score": self.returns.low,
            "ref_max_score": self.returns.high,
            "ref_score_source": self.returns.source,
        }


def columns_dataset(arrays: Mapping[str, np.ndarray]) -> TransitionDataset:
    """Collected columns (observations, actions, rewards, terminals, timeouts,
    next_observations) as a dataset in the layout's dtypes, without attributes."""
    return TransitionDataset(
        observations=arrays["observations"].astype(np.float32),
        actions=arrays["actions"].astype(np.float32),
        rewards=arrays["rewards"].astype(np.float32),
        terminals=arrays["terminals"].astype(bool),
        timeouts=arrays["timeouts"].astype(bool),
        next_observations=arrays["next_observations"].astype(np.float32),
        attrs={},
    )
