"""Nav1D: one-dimensional navigation towards a moving reward bump.

The toy control task of §4.1 of "Maximize Your Diffusion", with a gymnasium environment, an
exact-enough dynamic-programming solver, behaviour policies with known densities, vectorised
D4RL-style data collection and a reward-field plot.

References:
    "Maximize Your Diffusion", §4.1 (Nav1D).
"""

from __future__ import annotations

from dmc_envs.nav1d.behaviour import (
    BehaviourPolicy,
    NoisyOptimalPolicy,
    UniformPolicy,
    policy_from_dict,
)
from dmc_envs.nav1d.env import ENV_ID, Nav1DEnv, register_nav1d
from dmc_envs.nav1d.plot import plot_reward_field
from dmc_envs.nav1d.rollout import rollout
from dmc_envs.nav1d.solve import Nav1DSolution, solve
from dmc_envs.nav1d.task import Nav1DTask

__all__ = [
    "ENV_ID",
    "BehaviourPolicy",
    "Nav1DEnv",
    "Nav1DSolution",
    "Nav1DTask",
    "NoisyOptimalPolicy",
    "UniformPolicy",
    "plot_reward_field",
    "policy_from_dict",
    "register_nav1d",
    "rollout",
    "solve",
]
