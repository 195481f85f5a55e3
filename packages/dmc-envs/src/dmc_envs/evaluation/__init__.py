"""Evaluation by the paper's protocol: vectorised rollouts, selection, scores, coherency."""

from __future__ import annotations

from dmc_envs.evaluation.baselines import OptimalProposer, RandomProposer
from dmc_envs.evaluation.coherency import (
    PlanCoherency,
    PolicyCoherency,
    coherency_probe,
)
from dmc_envs.evaluation.config import (
    Budget,
    EvalProtocol,
    EvaluateConfig,
    RunSpec,
    SummarizeConfig,
)
from dmc_envs.evaluation.entropy import histogram_entropy
from dmc_envs.evaluation.episodes import EpisodeResult, Selection, roll_out
from dmc_envs.evaluation.policies import PolicyProposer
from dmc_envs.evaluation.proposers import ModelProposer, Proposal, Proposer

__all__ = [
    "Budget",
    "EpisodeResult",
    "EvalProtocol",
    "EvaluateConfig",
    "ModelProposer",
    "OptimalProposer",
    "PlanCoherency",
    "PolicyCoherency",
    "PolicyProposer",
    "Proposal",
    "Proposer",
    "RandomProposer",
    "RunSpec",
    "Selection",
    "SummarizeConfig",
    "coherency_probe",
    "histogram_entropy",
    "roll_out",
]
