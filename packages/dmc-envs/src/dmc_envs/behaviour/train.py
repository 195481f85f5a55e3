"""Stage `train_behaviour`: a task's SAC behaviour agent, kept at the medium and expert levels.

    python -m dmc_envs train_behaviour --name hopper --out data/behaviour/hopper \
        --replay data/datasets/hopper/medium_replay.hdf5

The entry `train_behaviour.agents.<name>` is a task of the registry (`hopper`, ...) and its
SAC budget (`dmc_envs.behaviour.config.AgentSpec`). Writes into `--out`:
- `medium.safetensors` / `.yaml`: the actor at the first evaluation that reached
  `medium_level`; `expert.safetensors` / `.yaml`: the best-evaluated actor within the budget
  (`dmc_envs.behaviour.actor`: weights plus a YAML spec; no pickle);
- `--replay`: the replay buffer's rows up to the medium step as a dataset (D4RL's
  medium-replay), with `<name>.stats.json` beside D4RL's level;
- `live/`: the learning curve of normalised deterministic evaluation returns, and the training
  episodes' returns; `timing.json`: wall time and env steps per second.
The run resumes after a kill (`.resume/`, see `dmc_envs.behaviour.sac`).
"""

from __future__ import annotations

import argparse
import json
import logging
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from dmc_core.atomic import atomic_write_text
from dmc_core.cli import Arg, Stage
from dmc_core.config import entry, write_resolved_config
from dmc_core.data import TransitionDataset
from dmc_core.errors import ConfigError
from dmc_envs.behaviour.actor import SquashedGaussianActor, save_actor
from dmc_envs.behaviour.config import AgentSpec, TrainBehaviourConfig
from dmc_envs.behaviour.levels import agent_provenance, write_with_level
from dmc_envs.behaviour.sac import KeptAgent, SacRun, TrainingOutcome
from dmc_envs.tasks import Task, build_task

__all__ = ["TRAIN_STAGE", "replay_dataset", "train_behaviour"]

log = logging.getLogger(__name__)


def train_behaviour(config: TrainBehaviourConfig, args: argparse.Namespace) -> None:
    """Train (or resume) the agent `args.name` and write its kept actors and medium replay."""
    spec = entry(config.agents, args.name, "train_behaviour.agents", args.params)
    task = build_task(args.name, {})
    out = Path(args.out)
    outcome = SacRun(task, spec, out).train()
    assert outcome is not None
    if outcome.medium is None:
        raise ConfigError(
            f"train_behaviour.agents.{args.name}.medium_level: the evaluation never reached "
            f"{spec.medium_level} in {outcome.steps} env steps (best {outcome.expert.score:.1f} "
            f"at step {outcome.expert.step}); raise steps (the run continues from its snapshot) "
            "or lower medium_level"
        )
    about = _about(task, spec)
    for level, kept in (("medium", outcome.medium), ("expert", outcome.expert)):
        _write_actor(out / f"{level}.safetensors", outcome, kept, {**about, "level": level})
    replay = replay_dataset(outcome, task, {**about, **_at(outcome.medium)})
    write_with_level(Path(args.replay), replay, task)
    write_resolved_config(config, out / "train_behaviour.config.yaml", "train_behaviour")
    timing = {
        "seconds": outcome.seconds,
        "env_steps": outcome.steps,
        "env_steps_per_second": outcome.steps / max(outcome.seconds, 1e-9),
        "seconds_to_medium": outcome.medium.seconds,
        "seconds_to_expert": outcome.expert.seconds,
    }
    atomic_write_text(out / "timing.json", json.dumps(timing, indent=2) + "\n")
    log.info(
        "%s: medium %.1f at step %d, expert %.1f at step %d (%d env steps, %.0f s)",
        args.name,
        outcome.medium.score,
        outcome.medium.step,
        outcome.expert.score,
        outcome.expert.step,
        outcome.steps,
        outcome.seconds,
    )


def _about(task: Task, spec: AgentSpec) -> dict[str, Any]:
    return {
        "agent": f"SAC (stable-baselines3 {version('stable-baselines3')})",
        "task": task.name,
        "env_id": task.env_id,
        "seed": spec.seed,
        "eval_episodes": spec.eval_episodes,
        "eval": "deterministic (the Gaussian's mean), fixed seeded starts",
        "medium_evaluation": spec.medium_evaluation,
    }


def _at(kept: KeptAgent) -> dict[str, Any]:
    at = {
        "checkpoint_step": kept.step,
        "eval_normalized_return": kept.score,
        "eval_return": kept.mean_return,
    }
    if kept.sampled_score is not None:
        at["eval_sampled_normalized_return"] = kept.sampled_score
    return at


def _write_actor(
    path: Path, outcome: TrainingOutcome, kept: KeptAgent, about: dict[str, Any]
) -> None:
    actor = SquashedGaussianActor(outcome.shape)
    actor.load_state_dict(kept.weights)
    save_actor(path, actor, {**about, **_at(kept)})


def replay_dataset(
    outcome: TrainingOutcome, task: Task, about: dict[str, Any]
) -> TransitionDataset:
    """The buffer's rows up to the medium step as a dataset: actions back on the box, dones
    split into terminals and timeouts as the buffer recorded them, the episode running at the
    medium step cut there (a timeout)."""
    replay = outcome.replay
    low = np.asarray(outcome.shape.action_low, dtype=np.float32)
    high = np.asarray(outcome.shape.action_high, dtype=np.float32)
    timeouts = replay["timeouts"].astype(bool)
    terminals = replay["dones"].astype(bool) & ~timeouts
    if not (terminals[-1] or timeouts[-1]):
        timeouts[-1] = True
    recipe = {
        "behavior_policy": (
            f"the replay buffer of {about['agent']} up to its medium checkpoint (step "
            f"{about['checkpoint_step']}): uniform random actions for the warm-up, then the "
            "stochastic policy as it learned (no single density)"
        ),
    }
    return TransitionDataset(
        observations=replay["observations"],
        actions=(low + 0.5 * (replay["actions"] + 1.0) * (high - low)).astype(np.float32),
        rewards=replay["rewards"],
        terminals=terminals,
        timeouts=timeouts,
        next_observations=replay["next_observations"],
        attrs=agent_provenance(
            task, "medium_replay", about["seed"], recipe, about, "train_behaviour"
        ),
    )


TRAIN_STAGE = Stage(
    name="train_behaviour",
    summary="Train a task's SAC behaviour agent; keep it at the medium and expert levels.",
    schema=TrainBehaviourConfig,
    args=(
        Arg("--name", "agent entry of train_behaviour.agents (a task: hopper, ...)"),
        Arg("--out", "folder of the kept actors and the learning curves", output=True),
        Arg("--replay", "the medium-replay dataset to write (.hdf5)", output=True),
    ),
    run=train_behaviour,
)
