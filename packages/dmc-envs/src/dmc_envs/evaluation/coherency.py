"""Coherency scores (paper Eq. 15-16): how well generated samples respect what the data allows.

Planners: the mean probability that a planned transition (s_j, a_j, s_{j+1}) follows the true
dynamics, a Gaussian kernel exp(-d^2 / (2 w^2)) on d = s_{j+1} - T(s_j, a_j), in [0, 1].
Policies: the mean density of the generated actions under the dataset's behaviour policy
pi_beta(a | s) (known exactly for Nav1D's datasets), as a density (not bounded by 1).

References:
    "Maximize Your Diffusion", §4.1, Eq. 15-16.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from dmc_envs.nav1d.behaviour import BehaviourPolicy
from dmc_envs.nav1d.task import Nav1DTask

__all__ = ["plan_coherency", "policy_coherency"]


def plan_coherency(task: Nav1DTask, states: Tensor, actions: Tensor, width: float) -> float:
    """Mean dynamics kernel over every planned transition of every candidate.

    Shapes:
        states: (..., H, obs_dim) with the position first; actions: (..., H or H - 1, act_dim).
    """
    s = states[..., 0].double().numpy()
    a = actions[..., 0].double().numpy()
    steps = min(s.shape[-1] - 1, a.shape[-1])
    if steps < 1:
        raise ValueError("a plan needs at least two states to have a transition")
    gap = s[..., 1 : steps + 1] - task.next_state(s[..., :steps], a[..., :steps])
    return float(np.exp(-0.5 * (gap / width) ** 2).mean())


def policy_coherency(
    behaviour: BehaviourPolicy, state: np.ndarray, t: int, actions: Tensor
) -> float:
    """Mean behaviour density of the first action of every candidate at the current states.

    Shapes:
        state: (B,); actions: (B, n, action_exec, act_dim).
    """
    n = actions.shape[1]
    first = actions[:, :, 0, 0].double().numpy().reshape(-1)
    return float(behaviour.density(np.repeat(state, n), t, first).mean())
