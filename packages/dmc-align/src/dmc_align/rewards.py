"""r(z_0): the reward signal of a sample, and the entropy bonus against narrowing (spec §4.1, §4.6).

- `q_first_action`: the critic's Q(s, a_0) of the sample's first action at the current
  observation (every model kind); for a critic of action chunks (`action_chunk` k > 1), its Q of
  the sample's first k actions.
- `plan_return`: the task's return along the planned trajectory (`Task.plan_reward`), for
  planners (only as honest as the plan is coherent: the critic never sees it).
- `DynamicsConsistent`: either of them, for planners, minus a weight x the share of the plan's
  transitions that break the dynamics. Q of the first action is blind to the rest of the plan, so
  ranking plans by it alone lets the plans drift away from anything the dynamics allow.

Both are differentiable in z_0, which Q-value policy gradient needs. The entropy bonus of a sample
is the Kozachenko-Leonenko term log(distance to the nearest other sample of the same condition):
it rewards spread, so every method that ranks or weights by reward sees it.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from dmc_core.models import ControlModel, scored_actions
from dmc_critic import IQLCritic
from dmc_envs.tasks import PlanReward, TorchDynamics

__all__ = [
    "DynamicsConsistent",
    "PlanReturn",
    "QFirstAction",
    "RewardModel",
    "entropy_bonus",
    "nearest_neighbour_log",
]


class RewardModel(Protocol):
    """r(z_0) of a batch of samples given their histories, differentiable in z_0."""

    def __call__(self, model: ControlModel, z0: Tensor, history: Tensor) -> Tensor:
        """Shapes: z0 (B, horizon, transition_dim) normalised; history (B, To, obs); -> (B,)."""
        ...


class QFirstAction:
    """Q(s, a_0): the (frozen) critic's value of the first decoded action at the newest
    observation (the smaller of the twin target Qs, as IQL uses).

    The critic scores the action as it will be executed, clipped to the dataset's action range:
    outside it the critic has seen no data, and its extrapolation is what a gradient method would
    exploit first. The part of an action beyond the range costs `bound_penalty` x its squared
    size (in normalised units), which also gives a gradient back into the range.
    """

    def __init__(self, critic: IQLCritic, bound_penalty: float = 10.0) -> None:
        """Keep the critic, frozen and in eval mode."""
        self.critic = critic.eval()
        self.bound_penalty = bound_penalty
        for parameter in critic.parameters():
            parameter.requires_grad_(False)

    def advantage(self, observation: Tensor, actions: Tensor) -> Tensor:
        """A(s, a) = Q(s, a) - V(s) of action sequences in raw units (a dataset's own, in its
        range), a being their first action or the critic's chunk of them (`q_chunk`).

        Shapes:
            observation: (B, obs_dim); actions: (B, L, act_dim); returns (B,).
        """
        return self.critic.q_chunk(observation, actions) - self.critic.v(observation)

    def __call__(self, model: ControlModel, z0: Tensor, history: Tensor) -> Tensor:
        """Q of each sample's first action (for a critic of action chunks, the first actions of
        its executed chunk or plan: `scored_actions`), clipped to the range, minus the bound
        penalty."""
        sequence = scored_actions(model, z0)[:, : self.critic.chunk]
        first = model.act_normalizer.normalize(sequence)
        inside = first.clamp(-1.0, 1.0)
        beyond = (first - inside).pow(2).sum(dim=(1, 2))
        actions = model.act_normalizer.unnormalize(inside)
        return self.critic.q_chunk(history[:, -1], actions) - self.bound_penalty * beyond


class PlanReturn:
    """The task's return along the planned states (planners only; `Task.plan_reward`)."""

    def __init__(self, plan_reward: PlanReward) -> None:
        """Keep the task's plan reward."""
        self.plan_reward = plan_reward

    def __call__(self, model: ControlModel, z0: Tensor, history: Tensor) -> Tensor:
        """The plan's return from the decision's newest observation."""
        if model.role != "planner":
            raise ValueError(f"plan_return needs a planner, {model.kind} plans nothing")
        states, _ = model.decode_plan(z0)  # type: ignore[attr-defined]
        return self.plan_reward(states, history[:, -1])


class DynamicsConsistent:
    """A planner's reward minus `weight` x (1 - the plan's mean dynamics kernel).

    The kernel of a planned transition is exp(-d^2 / 2 w^2) with d the task's gap between s_{j+1}
    and T(s_j, a_j) (`Task.differentiable_dynamics`), the
    coherency measure of evaluation (paper Eq. 15): 1 for a plan the dynamics can carry out, 0 for
    one whose states jump. Rankings then prefer, among plans of similar reward, the coherent ones.
    """

    def __init__(self, base: RewardModel, gaps: TorchDynamics, width: float, weight: float):
        """Wrap `base`; `gaps` is the task's differentiable dynamics gap, `width` the kernel's
        w in its units."""
        self.base, self.gaps = base, gaps
        self.width, self.weight = width, weight

    def __call__(self, model: ControlModel, z0: Tensor, history: Tensor) -> Tensor:
        """base(z0) - weight x (1 - mean kernel over the plan's transitions)."""
        return self.base(model, z0, history) - self.weight * (1.0 - self.kernel(model, z0))

    def kernel(self, model: ControlModel, z0: Tensor) -> Tensor:
        """Mean dynamics kernel of every plan. Shapes: z0 (B, H, transition_dim) -> (B,)."""
        if model.role != "planner":
            raise ValueError(f"dynamics consistency needs a planner, {model.kind} plans nothing")
        states, actions = model.decode_plan(z0)  # type: ignore[attr-defined]
        gap = self.gaps(states, actions)
        return torch.exp(-0.5 * (gap / self.width) ** 2).mean(dim=1)


def nearest_neighbour_log(samples: Tensor, groups: int) -> Tensor:
    """log of each sample's distance to the nearest other sample of its group.

    Samples are grouped consecutively: rows g*k .. g*k + k - 1 share a condition.

    Shapes:
        samples: (groups * k, ...) with k >= 2; returns (groups * k,).
    """
    flat = samples.reshape(groups, samples.shape[0] // groups, -1)
    if flat.shape[1] < 2:
        raise ValueError("the entropy bonus needs at least two samples per condition")
    distance = torch.cdist(flat, flat)
    eye = torch.eye(flat.shape[1], dtype=torch.bool, device=samples.device)
    nearest = distance.masked_fill(eye, float("inf")).min(dim=2).values
    return torch.log(nearest + 1e-6).reshape(-1)


def entropy_bonus(samples: Tensor, groups: int, weight: float) -> Tensor:
    """weight x the Kozachenko-Leonenko term of every sample (0 when weight is 0).

    References:
        Kozachenko & Leonenko (1987): the entropy estimate is the mean log nearest-neighbour
        distance up to constants.
    """
    if weight == 0.0:
        return samples.new_zeros(samples.shape[0])
    return weight * nearest_neighbour_log(samples, groups)
