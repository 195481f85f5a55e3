"""Schemas of the dmc-envs stages (their `params.yaml` sections)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dmc_core.config import BaseConfig, knob

__all__ = ["DatasetSpec", "MakeDatasetConfig", "Nav1DConfig"]


@dataclass(frozen=True)
class Nav1DConfig:
    """The Nav1D task (spec §5); every dataset and every evaluation of it uses these values."""

    horizon: int = knob(16, ge=1, le=1000, doc="episode length H, in steps")
    step_size: float = knob(0.2, gt=0.0, le=2.0, doc="gamma: s' = clip(s + gamma a, -1, 1)")
    reward_width: float = knob(0.15, gt=0.0, doc="sigma of the reward bumps, in state units")
    reward_width_spread: float = knob(0.0, ge=0.0, lt=1.0, doc="per-step width jitter, fraction")
    reward_seed: int = knob(0, ge=0, doc="seed of the reward field (bump means and widths)")


@dataclass(frozen=True)
class DatasetSpec:
    """How one dataset is collected: the task's behaviour, how much, the seed (and the knobs
    of some tasks' behaviours: Nav1D's start interval, a noisy behaviour's noise)."""

    behaviour: str = knob(
        "uniform",
        doc="behaviour policy of the task's recipe (nav1d: uniform, noisy_optimal; "
        "mujoco: uniform, D4RL's random; metaworld: expert, medium, uniform; pusht: expert, "
        "mixed, uniform)",
    )
    episodes: int = knob(2000, ge=1, doc="number of episodes (when transitions is 0)")
    transitions: int = knob(
        0, ge=0, doc="rows to collect, the last episode cut as a timeout (0: whole episodes)"
    )
    start_low: float = knob(-1.0, ge=-1.0, le=1.0, doc="nav1d: starts ~ U[start_low, start_high]")
    start_high: float = knob(1.0, ge=-1.0, le=1.0, doc="nav1d: starts ~ U[start_low, start_high]")
    noise_std: float = knob(
        0.2, gt=0.0, doc="nav1d noisy_optimal, metaworld expert/medium: std of the action noise"
    )
    random_fraction: float = knob(
        0.0,
        ge=0.0,
        le=1.0,
        doc="metaworld expert/medium: probability that a step's action is uniform random",
    )
    seed: int = knob(0, ge=0, doc="seed of the start states and the behaviour's actions")
    options: dict[str, Any] = knob(
        factory=dict,
        doc="a task family's own behaviour knobs, by name (pusht: successful_only, "
        "expert_noise, operators, max_attempts_factor); the task lists those it reads",
    )

    def invalid_fields(self) -> Iterator[tuple[str, str]]:
        """Cross-field rules: the start interval must not be empty."""
        if self.start_low >= self.start_high:
            yield "start_low", f"{self.start_low} must be below start_high ({self.start_high})"


def _paper_datasets() -> dict[str, DatasetSpec]:
    # The paper's three Nav1D datasets: random behaviour with partial and with full state
    # coverage, and an expert (optimal policy with exploration noise).
    return {
        "partial": DatasetSpec(episodes=1000, start_low=-1.0, start_high=0.0, seed=1),
        "full": DatasetSpec(episodes=2000, seed=2),
        "expert": DatasetSpec(behaviour="noisy_optimal", episodes=1000, seed=3),
    }


@dataclass(frozen=True)
class MakeDatasetConfig:
    """Stage `make_dataset`: collect datasets of the pipeline's task (`base.task`) by its
    recipes, in the D4RL layout."""

    base: BaseConfig = knob(factory=BaseConfig)
    nav1d: Nav1DConfig = knob(factory=Nav1DConfig)
    datasets: dict[str, DatasetSpec] = knob(factory=_paper_datasets)
    optimum_grid_per_step: int = knob(40, ge=1, le=1000, doc="nav1d: DP grid points per step")
    plot_trajectories: int = knob(40, ge=0, doc="dataset trajectories drawn in the picture")
