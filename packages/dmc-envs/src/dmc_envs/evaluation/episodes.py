"""Vectorised evaluation over a task's gymnasium vector environment.

Each of the `episodes` environments plays one episode from its seeded reset. Every decision is
one call of the proposer for all running episodes times their candidates, one critic call to
score the candidates and one selection. Episodes end at different steps (terminations and
truncations per environment): an ended episode stops deciding and its later steps are ignored,
and the rollout ends when every episode has ended. Every executed transition is recorded in the
dataset layout (online fine-tuning learns from it).

References:
    "Maximize Your Diffusion", §4 (protocol: episodes x candidates, coherency, Eq. 15-16);
    Hansen-Estruch et al., IDQL (2023) (candidates selected by the critic).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from dmc_core.data import TransitionDataset
from dmc_core.seeding import torch_generator
from dmc_critic import select_candidates
from dmc_envs.evaluation.coherency import CoherencyProbe
from dmc_envs.evaluation.proposers import Proposal, Proposer
from dmc_envs.pictures import episode_observations
from dmc_envs.tasks import Task
from dmc_envs.tasks.base import EpisodeScore

__all__ = ["EpisodeResult", "ObservationHistory", "Scorer", "Selection", "roll_out"]

Scorer = Callable[[Tensor, Tensor], Tensor]
"""Q(obs (N, obs_dim), actions (N, L, act_dim)) -> (N,): the critic that ranks candidates by
`Proposal.scored_actions` (a policy's executed chunk, a planner's planned actions): their first
action, or as many as the critic scores (`IQLCritic.q_chunk`)."""


@dataclass(frozen=True)
class Selection:
    """How one decision is made: `candidates` proposals, picked by `rule`."""

    rule: str
    candidates: int
    temperature: float = 0.1


@dataclass(frozen=True)
class EpisodeResult:
    """What a batch of evaluation episodes produced.

    `successes` is None where the task defines no success; `coherency` is None where it could
    not be measured (`coherency_note` says why); `scores` holds each of the task's episode
    scores (`Task.episode_scores`) by name, empty where it defines none.

    Shapes:
        returns, lengths, successes, each of scores: (episodes,); transitions: sum(lengths)
        rows, episode-major.
    """

    returns: np.ndarray
    lengths: np.ndarray
    successes: np.ndarray | None
    coherency: float | None
    coherency_note: str
    decisions: int
    transitions: TransitionDataset
    scores: Mapping[str, np.ndarray] = field(default_factory=dict)

    def outcomes(self) -> dict[str, Any]:
        """Each episode's return, length, success (None where the task defines none) and
        scores, in episode order, as JSON lists: what paired comparisons and intervals need."""
        successes = None if self.successes is None else self.successes.astype(bool).tolist()
        return {
            "returns": self.returns.astype(float).tolist(),
            "lengths": self.lengths.astype(int).tolist(),
            "successes": successes,
            "scores": {name: values.astype(float).tolist() for name, values in self.scores.items()},
        }

    def observations(self) -> list[np.ndarray]:
        """Every episode's observations, with the one after its last step appended."""
        data = self.transitions
        return episode_observations(
            data.observations, data.next_observations, data.episode_slices()
        )


class _Recorder:
    """The transitions of every step, kept time-major and gathered episode-major at the end."""

    def __init__(self) -> None:
        self.steps: list[tuple[np.ndarray, ...]] = []

    def add(self, alive: np.ndarray, *arrays: np.ndarray) -> None:
        """One environment step: which episodes were running, and obs, action, reward,
        terminated, truncated, next obs of every environment."""
        self.steps.append((alive.copy(), *(np.asarray(a).copy() for a in arrays)))

    def dataset(self) -> TransitionDataset:
        """Each episode's rows in order, episode after episode."""
        alive = np.stack([step[0] for step in self.steps], axis=1)  # (E, T)
        columns = [np.stack([step[k] for step in self.steps], axis=1) for k in range(1, 7)]
        episode, time = np.nonzero(alive)  # row-major: episode-major, time inside
        obs, act, rew, term, trunc, nxt = (c[episode, time] for c in columns)
        return TransitionDataset(
            observations=obs.astype(np.float32),
            actions=act.astype(np.float32),
            rewards=rew.astype(np.float32),
            terminals=term.astype(bool),
            timeouts=trunc.astype(bool) & ~term.astype(bool),
            next_observations=nxt.astype(np.float32),
        )


class _EpisodeScores:
    """The task's episode scores of a batch, updated step by step (`EpisodeScore`)."""

    def __init__(self, scores: Sequence[EpisodeScore], count: int) -> None:
        self.scores = tuple(scores)
        self.values = {
            s.name: np.full(count, -np.inf if s.reduce == "max" else np.nan) for s in scores
        }

    def update(self, counted: np.ndarray, reward: np.ndarray, info: Mapping) -> None:
        """Fold one step's values into the episodes that were running (`counted`); a step
        whose info lacks a score's entry leaves that score as it was."""
        for score in self.scores:
            if score.source == "reward":
                step = np.asarray(reward, dtype=np.float64)
            elif score.source in info:
                step = np.asarray(info[score.source], dtype=np.float64)
            else:
                continue
            values = self.values[score.name]
            if score.reduce == "max":
                values[counted] = np.maximum(values[counted], step[counted])
            else:
                values[counted] = step[counted]


class _Running:
    """A batch of episodes as it plays: which still run, their returns, lengths, successes,
    episode scores and observation histories, and every transition they made."""

    def __init__(
        self,
        first: np.ndarray,
        history_len: int,
        success: bool,
        scores: Sequence[EpisodeScore] = (),
    ) -> None:
        count = first.shape[0]
        self.alive = np.ones(count, dtype=bool)
        self.returns, self.lengths = np.zeros(count), np.zeros(count, dtype=int)
        self.successes = np.zeros(count, dtype=bool) if success else None
        self.scores = _EpisodeScores(scores, count)
        self.history = ObservationHistory(first, history_len)
        self.recorder = _Recorder()

    def advance(self, step: Callable[[np.ndarray], tuple], actions: np.ndarray) -> None:
        """Step every environment; only the episodes that were running count."""
        before, previous = self.alive.copy(), self.history.newest().numpy()
        observation, reward, terminated, truncated, info = step(actions)
        self.recorder.add(before, previous, actions, reward, terminated, truncated, observation)
        self.returns[before] += reward[before]
        self.lengths[before] += 1
        if self.successes is not None and "success" in info:
            self.successes[before] |= np.asarray(info["success"], dtype=bool)[before]
        self.scores.update(before, reward, info)
        self.alive &= ~(terminated | truncated)
        self.history.push(observation)

    def execute(
        self, step: Callable[[np.ndarray], tuple], deciding: np.ndarray, chunk: Tensor
    ) -> None:
        """Execute each deciding episode's chunk (B, action_exec, act_dim) until it ends."""
        for j in range(chunk.shape[1]):
            running = self.alive[deciding]
            if not running.any():
                return
            actions = np.zeros((self.alive.size, chunk.shape[2]))
            actions[deciding[running]] = chunk[running, j].double().numpy()
            self.advance(step, actions)

    def result(self, coherency: list[float], decisions: int) -> EpisodeResult:
        """What the batch produced, with the mean of the measured coherencies."""
        value = float(np.mean(coherency)) if coherency else None
        note = "" if value is not None else "not measured"
        return EpisodeResult(
            self.returns,
            self.lengths,
            self.successes,
            value,
            note,
            decisions,
            self.recorder.dataset(),
            self.scores.values,
        )


def roll_out(
    task: Task,
    proposer: Proposer,
    selection: Selection,
    scorer: Scorer | None,
    *,
    episodes: int,
    seed: int,
    coherency: CoherencyProbe | None = None,
    coherency_every: int = 1,
    label: str | None = None,
) -> EpisodeResult:
    """Roll `proposer` out for `episodes` episodes of `task`, reset with `seed`.

    `coherency` (if given) measures the candidates of every `coherency_every`-th decision.
    `label` names a progress bar over the episode limit's steps (none without it).
    """
    sampling, picking = torch_generator(seed, proposer.device), torch_generator(seed + 1)
    envs = task.make_vector_env(episodes)
    bar = tqdm(total=task.max_episode_steps, desc=label, unit="step", disable=label is None)
    try:
        first, _ = envs.reset(seed=seed)
        batch = _Running(first, proposer.history_len, task.success, task.episode_scores)
        measured: list[float] = []
        decisions = 0
        while batch.alive.any():
            deciding = np.flatnonzero(batch.alive)
            current = batch.history.tensor()[deciding]
            proposal = proposer.propose(current, selection.candidates, sampling)
            chosen = _select(proposal, current[:, -1], selection, scorer, picking)
            if coherency is not None and decisions % coherency_every == 0:
                value = coherency(proposal, current[:, -1].numpy())
                measured += [] if value is None else [value]
            decisions += 1
            batch.execute(envs.step, deciding, chosen)
            _show_progress(bar, batch)
        return batch.result(measured, decisions)
    finally:
        bar.close()
        envs.close()


def _show_progress(bar: tqdm, batch: _Running) -> None:
    """Advance `bar` to the longest episode's length, with the episodes still running."""
    bar.set_postfix(running=int(batch.alive.sum()), refresh=False)
    bar.update(int(batch.lengths.max()) - bar.n)


def _select(
    proposal: Proposal,
    observation: Tensor,
    selection: Selection,
    scorer: Scorer | None,
    generator: torch.Generator,
) -> Tensor:
    """The executed action chunk of each episode. Shapes: returns (B, action_exec, act_dim)."""
    actions = proposal.actions
    batch, n = actions.shape[:2]
    scores = None
    if selection.rule in ("q_argmax", "q_softmax"):
        if scorer is None:
            raise ValueError(f"selection rule '{selection.rule}' needs a critic")
        obs = observation.repeat_interleave(n, dim=0)
        scores = scorer(obs, proposal.scored_actions.flatten(0, 1)).reshape(batch, n)
    chosen, _ = select_candidates(
        selection.rule, actions, scores, generator, temperature=selection.temperature
    )
    return chosen


class ObservationHistory:
    """The last `length` observations of every episode (the first one repeated at the start,
    as the training windows pad)."""

    def __init__(self, first: np.ndarray, length: int) -> None:
        """Start every episode's history at its first observation. Shapes: first (B, obs)."""
        self.frames = [torch.from_numpy(np.asarray(first, dtype=np.float32))] * length

    def push(self, observation: np.ndarray) -> None:
        """Append the newest observation of every episode, dropping the oldest."""
        frame = torch.from_numpy(np.asarray(observation, dtype=np.float32))
        self.frames = [*self.frames[1:], frame]

    def newest(self) -> Tensor:
        """Shapes: (B, obs_dim)."""
        return self.frames[-1]

    def tensor(self) -> Tensor:
        """Shapes: (B, To, obs_dim)."""
        return torch.stack(self.frames, dim=1)
