"""Coherency scores (paper Eq. 15-16): how well generated samples respect what the data allows.

Planners: the mean probability that a planned transition (s_j, a_j, s_{j+1}) follows the true
dynamics, a Gaussian kernel exp(-d^2 / (2 w^2)) on the gap d between s_{j+1} and the state the
task's dynamics reach (`Task.dynamics`), in [0, 1].
Policies: the mean density of the generated first actions under the dataset's behaviour policy
pi_beta(a | s) (`Task.behaviour_density`), as a density (not bounded by 1).
A task without the piece a model's coherency needs gives no score: `coherency_probe` then
returns None and the reason, which the results rows carry.

References:
    "Maximize Your Diffusion", §4.1, Eq. 15-16.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from dmc_envs.evaluation.proposers import Proposal
from dmc_envs.tasks import BehaviourDensity, Dynamics, Task

__all__ = ["CoherencyProbe", "PlanCoherency", "PolicyCoherency", "coherency_probe"]


class PlanCoherency:
    """Mean dynamics kernel over the planned transitions of the candidates (at most `plans`
    candidates per decision; 0 = all)."""

    def __init__(self, dynamics: Dynamics, width: float, plans: int = 0) -> None:
        """Keep the task's dynamics gaps and the kernel width (state units)."""
        self.dynamics, self.width, self.plans = dynamics, width, plans

    def __call__(self, proposal: Proposal, observation: np.ndarray) -> float | None:
        """Shapes: proposal.plan_states (B, n, H, obs_dim); observation (B, obs_dim)."""
        if proposal.plan_states is None or proposal.plan_actions is None:
            return None
        states, actions = proposal.plan_states, proposal.plan_actions
        if self.plans:
            states, actions = states[:, : self.plans], actions[:, : self.plans]
        gap = self.dynamics.gaps(states.double().numpy(), actions.double().numpy())
        kernel = np.exp(-0.5 * (gap / self.width) ** 2)
        if np.isnan(kernel).any():  # transitions the task could not check are skipped
            kernel = kernel[~np.isnan(kernel)]
        return float(kernel.mean()) if kernel.size else None


class PolicyCoherency:
    """Mean behaviour density of the first action of every candidate at the current
    observations."""

    def __init__(self, density: BehaviourDensity) -> None:
        """Keep the dataset's behaviour density."""
        self.density = density

    def __call__(self, proposal: Proposal, observation: np.ndarray) -> float:
        """Shapes: proposal.actions (B, n, action_exec, act_dim); observation (B, obs_dim)."""
        n = proposal.actions.shape[1]
        first = proposal.actions[:, :, 0].double().numpy().reshape(-1, proposal.actions.shape[-1])
        return float(self.density.density(np.repeat(observation, n, axis=0), first).mean())


CoherencyProbe = PlanCoherency | PolicyCoherency


def coherency_probe(
    task: Task, role: str, attrs: Mapping[str, Any], width: float, plans: int = 0
) -> tuple[CoherencyProbe | None, str]:
    """The coherency measure of a model of `role` on a dataset with `attrs`, or None and why."""
    if role == "planner":
        if task.dynamics is None:
            return None, f"task {task.describe()} has no known dynamics"
        return PlanCoherency(task.dynamics, width, plans), ""
    density = task.behaviour_density(attrs)
    if density is None:
        return None, "the dataset records no behaviour policy with a known density"
    return PolicyCoherency(density), ""
