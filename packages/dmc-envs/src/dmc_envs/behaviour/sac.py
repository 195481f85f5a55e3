"""A SAC behaviour agent trained by D4RL's recipe, resumable after a kill at any instant.

stable-baselines3's SAC gives the networks, the replay buffer and the update (`SAC.train`);
this module owns the loop around them, so that it decides what a snapshot holds and when:
- one env, stepped here; actions uniform on the box for the first `learning_starts` steps, then
  sampled from the stochastic policy; `gradient_steps` updates every `train_every` steps;
- every `eval_every` steps a deterministic evaluation on `eval_episodes` fixed seeded starts,
  normalised by the task's references: the first to reach `medium_level` is kept as the medium
  agent (with the replay buffer's rows up to that step, D4RL's medium-replay), the best within
  the budget as the expert;
- snapshot boundaries fall at the first episode end at or after each multiple of
  `snapshot_every`. There the random generators (torch's and NumPy's global ones, which SAC's
  sampling draws from, and the warm-up actions') are re-seeded from (seed, step), and the next
  episode's start is seeded from (seed, episode). So the state a snapshot must carry is the
  networks, the three optimisers, the entropy coefficient, the replay buffer, the kept
  agents and the counters; one safetensors file, written by atomic rename
  (`dmc_core.training.resume.Snapshot`). A run resumed from it continues exactly as the
  uninterrupted run did.
- the run ends at the boundary at `steps` (a multiple of `snapshot_every`), whose snapshot is
  kept: raising `steps` later continues the same run (the budget is not in the fingerprint).

References:
    Fu et al., D4RL (2020), §5 and its generation scripts (SAC; medium = an agent stopped early,
    medium-replay = its buffer up to then, expert = the trained agent); Haarnoja et al., "Soft
    Actor-Critic Algorithms and Applications" (2018) (automatic entropy tuning).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch
from tqdm.auto import tqdm

from dmc_core.seeding import seed_everything
from dmc_core.training.curves import Curves
from dmc_core.training.resume import (
    Snapshot,
    fingerprint,
    load_optimizer_tensors,
    optimizer_tensors,
    prefixed_tensors,
    unprefixed,
)
from dmc_envs.behaviour.actor import ActorShape, SquashedGaussianActor
from dmc_envs.behaviour.config import AgentSpec
from dmc_envs.tasks import Task

__all__ = ["BUFFER_FIELDS", "KeptAgent", "SacRun", "TrainingOutcome"]

log = logging.getLogger(__name__)

#: The replay buffer's columns, as stable-baselines3 names them.
BUFFER_FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")

# Offsets that keep the evaluation's starts apart from the training episodes'.
_EVAL_SEED_OFFSET = 1_000_003
_EPISODE_SEED_STRIDE = 1_000_000_007


@dataclass
class KeptAgent:
    """A checkpoint the run keeps: the actor's weights and where and how it was evaluated."""

    step: int
    score: float
    mean_return: float
    weights: dict[str, torch.Tensor]
    seconds: float | None = None  # wall time of the run when it was kept (None: not recorded)
    sampled_score: float | None = None  # normalised return of sampled actions (None: not run)

    def record(self) -> dict[str, float]:
        """The JSON part, without the wall time (the weights travel as tensors)."""
        record = {"step": self.step, "score": self.score, "mean_return": self.mean_return}
        if self.sampled_score is not None:
            record["sampled_score"] = self.sampled_score
        return record


@dataclass(frozen=True)
class TrainingOutcome:
    """What a finished run hands to the stage: the kept agents and the medium-replay rows."""

    medium: KeptAgent | None
    expert: KeptAgent
    replay: dict[str, np.ndarray]
    shape: ActorShape
    steps: int
    updates: int
    episodes: int
    seconds: float


class _SpacesOnly(gymnasium.Env):
    """The spaces stable-baselines3 builds its networks for; it never steps this env."""

    def __init__(self, observation_space: gymnasium.Space, action_space: gymnasium.Space):
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed: int | None = None, options: Any = None) -> Any:
        raise RuntimeError("the behaviour trainer steps its own envs")

    def step(self, action: Any) -> Any:
        raise RuntimeError("the behaviour trainer steps its own envs")


class SacRun:
    """One agent's training (see the module docstring)."""

    def __init__(self, task: Task, spec: AgentSpec, directory: Path) -> None:
        """Build the env, the evaluation envs and SAC for `task` with `spec`; snapshots live in
        `directory/.resume`."""
        from stable_baselines3 import SAC  # the trainer alone imports stable-baselines3
        from stable_baselines3.common.logger import Logger

        if spec.threads:
            torch.set_num_threads(spec.threads)
        self.task, self.spec = task, spec
        self.env = task.make_vector_env(1)
        self.eval_envs = task.make_vector_env(spec.eval_episodes)
        low, high = task.action_bounds()
        box = gymnasium.spaces.Box(low.astype(np.float32), high.astype(np.float32))
        spaces = _SpacesOnly(self.env.single_observation_space, box)
        seed_everything(spec.seed)
        self.model = SAC(
            "MlpPolicy",
            spaces,
            learning_rate=spec.learning_rate,
            # The budget's last episode may run past `steps`: the buffer never wraps.
            buffer_size=spec.steps + task.max_episode_steps,
            learning_starts=spec.learning_starts,
            batch_size=spec.batch_size,
            tau=spec.tau,
            gamma=spec.gamma,
            policy_kwargs={"net_arch": list(spec.hidden)},
            device="cpu",
            seed=spec.seed,
        )
        self.model.set_logger(Logger(folder=None, output_formats=[]))
        self.shape = ActorShape(
            obs_dim=int(np.prod(self.env.single_observation_space.shape)),
            act_dim=int(low.size),
            hidden=tuple(spec.hidden),
            action_low=tuple(float(v) for v in low),
            action_high=tuple(float(v) for v in high),
        )
        # The budget and the thread count may change between runs: a longer budget continues
        # the same run, and threads change only how fast it goes.
        plain = {k: v for k, v in dataclasses.asdict(spec).items() if k not in ("steps", "threads")}
        self.snapshot = Snapshot.of_output(directory, fingerprint(task.env_id, plain))
        self.curves_dir = directory / "live"
        self.step = self.episodes = 0
        self.medium: KeptAgent | None = None
        self.best: KeptAgent | None = None
        self.seconds = 0.0
        self.warmup = np.random.default_rng(spec.seed)

    # ----- the loop -------------------------------------------------------------------------

    def train(self, stop_after: int | None = None) -> TrainingOutcome | None:
        """Train to the budget (resuming a snapshot if there is one) and return the outcome;
        with `stop_after`, stop after that many env steps of this call, as a kill would
        (nothing is written), and return None."""
        curves = Curves(self.curves_dir, self._resume())
        self._reseed()
        observation = self._reset()
        self._clock = time.monotonic()
        start_step = self.step
        episode_return = 0.0
        with tqdm(
            total=self.spec.steps, initial=self.step, desc=self.task.name, unit="step"
        ) as bar:
            finished = self.step >= self.spec.steps  # resumed from the budget's last snapshot
            while not finished:
                if stop_after is not None and self.step - start_step >= stop_after:
                    return None
                observation, reward, ended = self._act_and_learn(observation)
                episode_return += reward
                bar.update(1)
                if self.step % self.spec.eval_every == 0:
                    self._evaluate(curves, bar)
                if not ended:
                    continue
                self.episodes += 1
                curves.log(self.step, {"train/episode_return": episode_return})
                episode_return = 0.0
                if self._at_boundary():
                    self._reseed()
                    self.seconds = self._elapsed()
                    self._clock = time.monotonic()
                    self._save(curves)
                    finished = self.step >= self.spec.steps
                if not finished:
                    observation = self._reset()
        log.info("%s: %d env steps, %.0f s in all", self.task.name, self.step, self.seconds)
        curves.write_summary(self._summary())
        return self._outcome()

    def _act_and_learn(self, observation: np.ndarray) -> tuple[np.ndarray, float, bool]:
        """One env step, stored in the buffer, then the updates due. Returns the next
        observation, the reward and whether the episode ended."""
        model, spec = self.model, self.spec
        if self.step < spec.learning_starts:
            low, high = self.shape.action_low, self.shape.action_high
            action = self.warmup.uniform(low, high)[None].astype(np.float32)
        else:
            action, _ = model.predict(observation, deterministic=False)
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        done = bool(terminated[0] or truncated[0])
        model.replay_buffer.add(
            observation,
            next_obs,
            model.policy.scale_action(action),
            reward,
            np.array([done]),
            [{"TimeLimit.truncated": bool(truncated[0] and not terminated[0])}],
        )
        self.step += 1
        if self.step > spec.learning_starts and self.step % spec.train_every == 0:
            model.train(gradient_steps=spec.gradient_steps, batch_size=spec.batch_size)
        return next_obs, float(reward[0]), done

    def _at_boundary(self) -> bool:
        """Whether this episode end is the first at or after a multiple of `snapshot_every`
        (or after the budget) since the last boundary."""
        every = self.spec.snapshot_every
        return self.step // every > self._last_boundary // every or self.step >= self.spec.steps

    def _reseed(self) -> None:
        """Re-seed every random stream the loop draws from, from (seed, step)."""
        derived = int(np.random.SeedSequence([self.spec.seed, self.step]).generate_state(1)[0])
        seed_everything(derived)
        self.warmup = np.random.default_rng([self.spec.seed, self.step])
        self._last_boundary = self.step

    def _reset(self) -> np.ndarray:
        """Start the next episode from a start seeded by (seed, episode)."""
        seed = (self.spec.seed * _EPISODE_SEED_STRIDE + self.episodes) % 2**31
        observation, _ = self.env.reset(seed=seed)
        return observation

    # ----- evaluation and kept agents ----------------------------------------------------------

    def _evaluate(self, curves: Curves, bar: tqdm) -> None:
        """Deterministic returns on fixed starts; keep the medium and the best agents. With
        `medium_evaluation: sampled`, the medium level is compared with the returns of actions
        sampled from the policy, as the datasets are collected, until it is reached."""
        returns = first_episode_returns(
            self.eval_envs,
            lambda obs: self.model.predict(obs, deterministic=True)[0],
            self.spec.seed + _EVAL_SEED_OFFSET,
        )
        mean = float(returns.mean())
        score = float(self.task.returns.normalized(mean))
        logged = {"eval/normalized_return": score, "eval/return": mean}
        sampled = None
        if self.medium is None and self.spec.medium_evaluation == "sampled":
            sampled = self._sampled_score()
            logged["eval/sampled_normalized_return"] = sampled
        curves.log(self.step, logged)
        bar.set_postfix(score=f"{score:.1f}")
        medium_score = score if sampled is None else sampled
        reaches_medium = self.medium is None and medium_score >= self.spec.medium_level
        is_best = self.best is None or score > self.best.score
        if not (reaches_medium or is_best):
            return  # copy the actor only when it is kept
        weights = _actor_weights(self.model)
        kept = KeptAgent(self.step, score, mean, weights, self._elapsed(), sampled)
        if reaches_medium:
            self.medium = kept
            log.info(
                "%s: medium level %.1f reached at step %d (%s evaluation)",
                self.task.name,
                medium_score,
                self.step,
                self.spec.medium_evaluation,
            )
        if is_best:
            self.best = kept

    def _sampled_score(self) -> float:
        """The normalised mean return of the policy's sampled actions on the evaluation's
        starts, drawn from a generator of their own (the training's streams are untouched)."""
        actor = SquashedGaussianActor(self.shape)
        actor.load_state_dict(_actor_weights(self.model))
        generator = torch.Generator().manual_seed(self.spec.seed * _EPISODE_SEED_STRIDE + self.step)

        def act(observations: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                batch = torch.as_tensor(observations, dtype=torch.float32)
                return actor.act(batch, generator).numpy()

        returns = first_episode_returns(self.eval_envs, act, self.spec.seed + _EVAL_SEED_OFFSET)
        return float(self.task.returns.normalized(float(returns.mean())))

    # ----- snapshots -----------------------------------------------------------------------

    def _save(self, curves: Curves) -> None:
        model = self.model
        tensors = prefixed_tensors("policy/", model.policy.state_dict())
        tensors["log_ent_coef"] = model.log_ent_coef.detach()
        for name, optimizer in self._optimizers().items():
            tensors |= prefixed_tensors(f"{name}/", optimizer_tensors(optimizer))
        rows = model.replay_buffer.pos
        for field in BUFFER_FIELDS:
            tensors[f"buffer/{field}"] = torch.from_numpy(
                getattr(model.replay_buffer, field)[:rows]
            )
        record: dict[str, Any] = {
            "episodes": self.episodes,
            "updates": model._n_updates,
            "seconds": self.seconds,
            "curves": curves.state(),
        }
        for name in ("medium", "best"):
            kept = getattr(self, name)
            if kept is not None:
                tensors |= prefixed_tensors(f"{name}/", kept.weights)
                record[name] = {**kept.record(), "seconds": kept.seconds}
        self.snapshot.write(self.step, tensors, record)

    def _resume(self) -> dict[str, Any]:
        """Load the snapshot, if any; return its curves' rows."""
        self._last_boundary = 0
        found = self.snapshot.read()
        if found is None:
            return {}
        step, tensors, record = found
        model = self.model
        model.policy.load_state_dict(unprefixed(tensors, "policy/"))
        with torch.no_grad():
            model.log_ent_coef.copy_(tensors["log_ent_coef"])
        for name, optimizer in self._optimizers().items():
            load_optimizer_tensors(optimizer, unprefixed(tensors, f"{name}/"))
        buffer = model.replay_buffer
        for field in BUFFER_FIELDS:
            getattr(buffer, field)[:step] = tensors[f"buffer/{field}"].numpy()
        buffer.pos = step
        self.step, self.episodes = step, int(record["episodes"])
        model._n_updates, self.seconds = int(record["updates"]), float(record["seconds"])
        for name in ("medium", "best"):
            if name in record:
                weights = unprefixed(tensors, f"{name}/")
                setattr(self, name, KeptAgent(**record[name], weights=weights))
        log.info("%s: resumed at step %d from %s", self.task.name, step, self.snapshot.path)
        return record["curves"]

    def _elapsed(self) -> float:
        """Wall time of the run so far, over every call that trained it."""
        return self.seconds + time.monotonic() - self._clock

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        model = self.model
        return {
            "optim_actor": model.actor.optimizer,
            "optim_critic": model.critic.optimizer,
            "optim_alpha": model.ent_coef_optimizer,
        }

    # ----- the end -------------------------------------------------------------------------

    def _summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"env_steps": self.step, "updates": self.model._n_updates}
        for name, kept in (("medium", self.medium), ("expert", self.best)):
            summary[name] = kept.record() if kept is not None else None
        return summary

    def _outcome(self) -> TrainingOutcome:
        assert self.best is not None, "the budget covers at least one evaluation"
        rows = self.medium.step if self.medium is not None else 0
        buffer = self.model.replay_buffer
        replay = {field: getattr(buffer, field)[:rows, 0].copy() for field in BUFFER_FIELDS}
        return TrainingOutcome(
            medium=self.medium,
            expert=self.best,
            replay=replay,
            shape=self.shape,
            steps=self.step,
            updates=self.model._n_updates,
            episodes=self.episodes,
            seconds=self.seconds,
        )


def first_episode_returns(
    envs: gymnasium.vector.VectorEnv, act: Callable[[np.ndarray], np.ndarray], seed: int
) -> np.ndarray:
    """The first episode's return of every env of `envs`, reset with `seed`, acting with `act`.

    Shapes:
        act: (num_envs, obs_dim) -> (num_envs, act_dim); result (num_envs,).
    """
    observations, _ = envs.reset(seed=seed)
    returns = np.zeros(envs.num_envs)
    running = np.ones(envs.num_envs, dtype=bool)
    while running.any():
        observations, rewards, terminated, truncated, _ = envs.step(act(observations))
        returns += np.where(running, rewards, 0.0)
        running &= ~(terminated | truncated)
    return returns


def _actor_weights(model: Any) -> dict[str, torch.Tensor]:
    """The actor's weights under `SquashedGaussianActor`'s names (a copy)."""
    names = ("latent_pi.", "mu.", "log_std.")
    state = model.actor.state_dict()
    return {k: v.detach().clone() for k, v in state.items() if k.startswith(names)}
