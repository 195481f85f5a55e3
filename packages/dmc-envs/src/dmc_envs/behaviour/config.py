"""Schemas of the behaviour stages (`train_behaviour`, `behaviour_datasets`: their params
sections)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from dmc_core.config import BaseConfig, knob

__all__ = ["AgentSpec", "BehaviourDatasetsConfig", "LevelsSpec", "TrainBehaviourConfig"]


def _two_layers() -> list[int]:
    return [256, 256]


@dataclass(frozen=True)
class AgentSpec:
    """One SAC behaviour agent of a task (D4RL's recipe): its budget, when it counts as medium,
    and SAC's settings (stable-baselines3's defaults unless said)."""

    steps: int = knob(300_000, ge=1, doc="env steps of the budget (a multiple of snapshot_every)")
    medium_level: float = knob(
        doc="normalised deterministic evaluation return whose first reach is kept as medium"
    )
    medium_evaluation: str = knob(
        "deterministic",
        choices=("deterministic", "sampled"),
        doc="actions of the evaluation medium_level is compared with: the Gaussian's mean, or "
        "samples from it (as the datasets are collected)",
    )
    learning_starts: int = knob(10_000, ge=1, doc="uniform random steps before SAC updates")
    batch_size: int = knob(256, ge=1, doc="transitions per SAC update")
    learning_rate: float = knob(3e-4, gt=0.0, doc="Adam step size of actor, critics, alpha")
    gamma: float = knob(0.99, gt=0.0, lt=1.0, doc="discount")
    tau: float = knob(0.005, gt=0.0, le=1.0, doc="Polyak rate of the target critics")
    hidden: list[int] = knob(factory=_two_layers, doc="hidden widths of actor and critics")
    train_every: int = knob(1, ge=1, doc="env steps between update rounds")
    gradient_steps: int = knob(1, ge=1, doc="SAC updates per round")
    eval_every: int = knob(10_000, ge=1, doc="env steps between deterministic evaluations")
    eval_episodes: int = knob(10, ge=1, doc="episodes per evaluation (fixed seeded starts)")
    snapshot_every: int = knob(10_000, ge=1, doc="env steps between resumable snapshots")
    seed: int = knob(0, ge=0, doc="seed of the agent, its episodes' starts and its actions")
    # One thread: on a 2-core VM one walker2d run went 71 env steps/s with 1 thread and 39 with
    # 2 (the same run, minutes apart, alone on the machine): these networks are too small to
    # share.
    threads: int = knob(1, ge=0, doc="torch threads (0: torch's default)")

    def invalid_fields(self) -> Iterator[tuple[str, str]]:
        """Cross-field rules: the budget ends on a snapshot boundary; hidden layers exist."""
        if self.steps % self.snapshot_every:
            yield (
                "steps",
                f"{self.steps} must be a multiple of snapshot_every ({self.snapshot_every})",
            )
        if not self.hidden or min(self.hidden) < 1:
            yield "hidden", f"{self.hidden} must list positive widths"


@dataclass(frozen=True)
class TrainBehaviourConfig:
    """Stage `train_behaviour`: SAC agents whose checkpoints collect the D4RL-style datasets."""

    base: BaseConfig = knob(factory=BaseConfig)
    agents: dict[str, AgentSpec] = knob(factory=dict)


@dataclass(frozen=True)
class LevelsSpec:
    """The D4RL-style datasets collected from one task's behaviour agent."""

    agents: str = knob(
        doc="folder of the task's medium and expert actors (pipelines/behaviour/<task>, or "
        "data/behaviour/<task> from train_behaviour)"
    )
    transitions: int = knob(
        1_000_000, ge=1, doc="rows of medium and of expert (medium_expert: both)"
    )
    seed: int = knob(0, ge=0, doc="seed of the collection's starts and sampled actions")


@dataclass(frozen=True)
class BehaviourDatasetsConfig:
    """Stage `behaviour_datasets`: medium, expert and medium_expert of a task."""

    base: BaseConfig = knob(factory=BaseConfig)
    tasks: dict[str, LevelsSpec] = knob(factory=dict)
