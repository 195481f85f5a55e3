"""Evaluation by the paper's protocol: vectorised rollouts, selection, scores, coherency."""

from __future__ import annotations

from dmc_envs.evaluation.baselines import OptimalProposer, RandomProposer
from dmc_envs.evaluation.coherency import plan_coherency, policy_coherency
from dmc_envs.evaluation.config import (
    Budget,
    EvalProtocol,
    EvaluateConfig,
    RunSpec,
    SummarizeConfig,
)
from dmc_envs.evaluation.entropy import histogram_entropy
from dmc_envs.evaluation.episodes import EpisodeResult, Selection, roll_out, start_states
from dmc_envs.evaluation.proposers import ModelProposer, Proposal, Proposer

__all__ = [
    "Budget",
    "EpisodeResult",
    "EvalProtocol",
    "EvaluateConfig",
    "ModelProposer",
    "OptimalProposer",
    "Proposal",
    "Proposer",
    "RandomProposer",
    "RunSpec",
    "Selection",
    "SummarizeConfig",
    "histogram_entropy",
    "plan_coherency",
    "policy_coherency",
    "roll_out",
    "start_states",
]
