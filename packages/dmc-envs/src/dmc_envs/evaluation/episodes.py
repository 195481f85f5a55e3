"""Vectorised Nav1D evaluation: every episode and every candidate of a decision in one batch.

All episodes run in lock-step (Nav1D episodes have a fixed length), so each decision is one
call of the proposer for the whole batch of episodes times candidates, one critic call to score
the candidates and one selection; the environment step is a numpy expression over the batch.

References:
    "Maximize Your Diffusion", §4 (protocol: episodes x candidates, coherency, Eq. 15-16);
    Hansen-Estruch et al., IDQL (2023) (candidates selected by the critic).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from dmc_core.seeding import torch_generator
from dmc_critic import select_candidates
from dmc_envs.evaluation.coherency import plan_coherency, policy_coherency
from dmc_envs.evaluation.proposers import Proposal, Proposer
from dmc_envs.nav1d.behaviour import BehaviourPolicy
from dmc_envs.nav1d.task import Nav1DTask

__all__ = ["EpisodeResult", "ObservationHistory", "Scorer", "Selection", "roll_out", "start_states"]

Scorer = Callable[[Tensor, Tensor], Tensor]
"""Q(obs (N, obs_dim), action (N, act_dim)) -> (N,): the critic that ranks candidates."""


@dataclass(frozen=True)
class Selection:
    """How one decision is made: `candidates` proposals, picked by `rule`."""

    rule: str
    candidates: int
    temperature: float = 0.1


@dataclass(frozen=True)
class EpisodeResult:
    """What a batch of evaluation episodes produced.

    Shapes:
        returns: (episodes,); positions: (episodes, H + 1) the states visited;
        actions: (episodes, H) the actions executed (online fine-tuning learns from them).
    """

    returns: np.ndarray
    positions: np.ndarray
    coherency: float
    decisions: int
    actions: np.ndarray


def start_states(episodes: int, seed: int) -> np.ndarray:
    """The evaluation's start states: uniform on [-1, 1] (spec §5), from `seed`."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=episodes)


def roll_out(
    task: Nav1DTask,
    proposer: Proposer,
    selection: Selection,
    scorer: Scorer | None,
    behaviour: BehaviourPolicy,
    *,
    episodes: int,
    seed: int,
    coherency_width: float,
) -> EpisodeResult:
    """Roll `proposer` out for `episodes` full episodes from `start_states(episodes, seed)`.

    Planners are scored on the dynamics coherency of their plans, policies on the behaviour
    density of their candidates (see `dmc_envs.evaluation.coherency`).
    """
    state = start_states(episodes, seed)
    positions = [state.copy()]
    returns = np.zeros(episodes)
    history = ObservationHistory(task.observe(state, 0), proposer.history_len)
    sampling = torch_generator(seed, proposer.device)
    picking = torch_generator(seed + 1)
    coherency: list[float] = []
    actions: list[np.ndarray] = []
    t = decisions = 0
    while t < task.horizon:
        proposal = proposer.propose(history.tensor(), selection.candidates, sampling)
        chosen = _select(proposal, history.newest(), selection, scorer, picking)
        coherency.append(_coherency(task, behaviour, proposal, state, t, coherency_width))
        decisions += 1
        for j in range(min(proposer.action_exec, task.horizon - t)):
            action = chosen[:, j, 0].double().numpy()
            actions.append(action)
            state = task.next_state(state, action)
            returns += task.reward(t, state)
            t += 1
            positions.append(state.copy())
            history.push(task.observe(state, t))
    return EpisodeResult(
        returns,
        np.stack(positions, axis=1),
        float(np.mean(coherency)),
        decisions,
        np.stack(actions, axis=1),
    )


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
        scores = scorer(obs, actions[:, :, 0].reshape(batch * n, -1)).reshape(batch, n)
    chosen, _ = select_candidates(
        selection.rule, actions, scores, generator, temperature=selection.temperature
    )
    return chosen


def _coherency(
    task: Nav1DTask,
    behaviour: BehaviourPolicy,
    proposal: Proposal,
    state: np.ndarray,
    t: int,
    width: float,
) -> float:
    if proposal.plan_states is not None and proposal.plan_actions is not None:
        return plan_coherency(task, proposal.plan_states, proposal.plan_actions, width)
    return policy_coherency(behaviour, state, t, proposal.actions)


class ObservationHistory:
    """The last `length` observations of every episode (the first one repeated at the start,
    as the training windows pad)."""

    def __init__(self, first: np.ndarray, length: int) -> None:
        """Start every episode's history at its first observation. Shapes: first (B, obs)."""
        self.frames = [torch.from_numpy(first)] * length

    def push(self, observation: np.ndarray) -> None:
        """Append the newest observation of every episode, dropping the oldest."""
        self.frames = [*self.frames[1:], torch.from_numpy(observation)]

    def newest(self) -> Tensor:
        """Shapes: (B, obs_dim)."""
        return self.frames[-1]

    def tensor(self) -> Tensor:
        """Shapes: (B, To, obs_dim)."""
        return torch.stack(self.frames, dim=1)
