"""The IQL critic: twin Q networks, their frozen target copies, and a V network.

`loss(batch)` and `update_target()` are the primitives of any training loop (see `fit.py`);
`q(obs, act)` scores actions, and `q_chunk(obs, actions)` the first `spec.action_chunk` actions
of action sequences, for selection and alignment. Inputs and outputs are in raw units:
the critic normalises observations and actions inside with normalisers saved in its weights,
and its values are in the (transformed) reward units it was trained with.

References:
    Kostrikov, Nair, Levine, "Offline Reinforcement Learning with Implicit Q-Learning", ICLR 2022.
    Hansen-Estruch et al., "IDQL: Implicit Q-Learning as an Actor-Critic Method with Diffusion
    Policies", 2023 (LayerNorm critic; selection by the min of the target Qs).
    Li, Zhou, Levine, "Reinforcement Learning with Action Chunking", NeurIPS 2025 (Q of an
    action chunk, k-step backups).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from dmc_core.data import TransitionDataset
from dmc_core.models.normalizer import RangeNormalizer
from dmc_critic.batches import TransitionBatch
from dmc_critic.described import Described
from dmc_critic.losses import expectile_loss, td_target
from dmc_critic.networks import ScalarMLP
from dmc_critic.spec import CriticSpec

__all__ = ["IQLCritic", "build_critic"]


class IQLCritic(Described):
    """Twin Q(s, a) MLPs with Polyak-averaged target copies, and V(s) fitted by expectiles.

    With `spec.action_chunk` = k > 1, `a` is the chunk a_t..a_t+k-1, flattened step by step
    (each step normalised by the one action normaliser; `act_dim` stays one step's size).

    Shapes:
        obs: (B, obs_dim); act: (B, action_chunk * act_dim); values: (B,).
    """

    kind = "iql"

    def __init__(
        self, spec: CriticSpec, obs_normalizer: RangeNormalizer, act_normalizer: RangeNormalizer
    ) -> None:
        """Build untrained networks; the targets start as exact copies of the online Qs."""
        super().__init__()
        self.spec = spec
        self.obs_normalizer = obs_normalizer
        self.act_normalizer = act_normalizer
        q_in = obs_normalizer.dim + spec.action_chunk * act_normalizer.dim
        self.q_nets = nn.ModuleList([self._mlp(q_in) for _ in range(2)])
        self.q_targets = copy.deepcopy(self.q_nets).requires_grad_(False)
        self.v_net = self._mlp(obs_normalizer.dim)

    @property
    def chunk(self) -> int:
        """How many actions Q scores (`spec.action_chunk`)."""
        return self.spec.action_chunk

    def _mlp(self, in_dim: int) -> ScalarMLP:
        s = self.spec
        return ScalarMLP(in_dim, s.hidden, s.layers, s.fourier_frequencies, s.layer_norm)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The online Q and V parameters (the targets only move by `update_target`)."""
        yield from self.q_nets.parameters()
        yield from self.v_net.parameters()

    def _q_input(self, obs: Tensor, act: Tensor) -> Tensor:
        self._check(obs, self.obs_dim, "obs")
        self._check(act, self.chunk * self.act_dim, "act")
        if obs.shape[:-1] != act.shape[:-1]:
            raise ValueError(f"obs {tuple(obs.shape)} and act {tuple(act.shape)} batch mismatch")
        steps = act.unflatten(-1, (self.chunk, self.act_dim))
        normalized = self.act_normalizer.normalize(steps).flatten(-2)
        return torch.cat([self.obs_normalizer.normalize(obs), normalized], dim=-1)

    @staticmethod
    def _check(x: Tensor, dim: int, name: str) -> None:
        if x.ndim < 1 or x.shape[-1] != dim:
            raise ValueError(f"{name} must have shape (..., {dim}), got {tuple(x.shape)}")

    def twin_q(self, obs: Tensor, act: Tensor, target: bool = False) -> Tensor:
        """Both Q heads, online or target. Shapes: (B, obs_dim), (B, act_dim) -> (2, B)."""
        x = self._q_input(obs, act)
        nets = self.q_targets if target else self.q_nets
        return torch.stack([net(x) for net in nets])

    def q(self, obs: Tensor, act: Tensor) -> Tensor:
        """min over the twin *target* Qs: the score IDQL's released `eval_actions` selects by.

        The target networks are the smoothed (Polyak) version of the online ones, and the min is
        IQL's guard against over-estimation; V is trained against the same quantity. Gradients
        flow to `act` (and `obs`), not to any parameter.

        Shapes:
            obs: (..., obs_dim); act: (..., act_dim); returns: (...,).
        """
        return self.twin_q(obs, act, target=True).min(dim=0).values

    def q_chunk(self, obs: Tensor, actions: Tensor) -> Tensor:
        """`q` of the first `spec.action_chunk` actions of each action sequence (the first
        action alone for a critic of single actions).

        Shapes:
            obs: (..., obs_dim); actions: (..., L, act_dim) with L >= action_chunk; returns (...,).

        Raises:
            ValueError: sequences shorter than the critic's chunk.
        """
        if actions.ndim < 2 or actions.shape[-2] < self.chunk:
            raise ValueError(
                f"this critic scores chunks of {self.chunk} actions (action_chunk), got action "
                f"sequences of shape {tuple(actions.shape)}"
            )
        return self.q(obs, actions[..., : self.chunk, :].flatten(-2))

    def v(self, obs: Tensor) -> Tensor:
        """The state value V(s). Shapes: obs (..., obs_dim) -> (...,)."""
        self._check(obs, self.obs_dim, "obs")
        return self.v_net(self.obs_normalizer.normalize(obs))

    def loss(self, batch: TransitionBatch) -> tuple[Tensor, dict[str, float]]:
        """V's expectile loss plus the twin TD losses, for one optimiser step over both.

        L_V = mean L2^tau(min_i Qbar_i(s, a) - V(s)) against the target Qs, and
        L_Q = sum_i mean (r + discount^steps (1 - done) V(s') - Q_i(s, a))^2 with V(s')
        detached (steps = 1 unless the rows are action chunks).
        The two losses touch disjoint parameters and neither sees the other's gradient, so one
        Adam step on their sum equals CORL's V step followed by its Q step with next_v computed
        before the V update (the JAX original uses the updated V in the Q step instead).

        Returns:
            the scalar loss and float metrics (loss, v_loss, q_loss, q_mean, v_mean, adv_mean,
            target_mean).
        """
        with torch.no_grad():
            target_q = self.q(batch.obs, batch.act)
            next_v = self.v(batch.next_obs)
            discount = self.spec.discount**batch.steps
            target = td_target(batch.reward, batch.done, next_v, discount)
        value = self.v(batch.obs)
        advantage = target_q - value
        v_loss = expectile_loss(advantage, self.spec.expectile).mean()
        q_online = self.twin_q(batch.obs, batch.act)
        q_loss = (q_online - target.unsqueeze(0)).square().mean(dim=1).sum()
        total = v_loss + q_loss
        metrics = {
            "loss": float(total.detach()),
            "v_loss": float(v_loss.detach()),
            "q_loss": float(q_loss.detach()),
            "q_mean": float(q_online.detach().mean()),
            "v_mean": float(value.detach().mean()),
            "adv_mean": float(advantage.detach().mean()),
            "target_mean": float(target.mean()),
        }
        return total, metrics

    @torch.no_grad()
    def update_target(self) -> None:
        """Polyak step: target <- (1 - rate) * target + rate * online, rate = target_update."""
        targets, onlines = list(self.q_targets.parameters()), list(self.q_nets.parameters())
        if len(targets) != len(onlines):
            raise RuntimeError("the target Qs and the online Qs have different parameter lists")
        torch._foreach_lerp_(targets, onlines, self.spec.target_update)


def build_critic(spec: CriticSpec, dataset: TransitionDataset) -> IQLCritic:
    """An untrained critic whose normalisers are fitted to the dataset's ranges.

    Observations are fitted over both `observations` and `next_observations`, since V is
    evaluated on s'. Weights are initialised from torch's global RNG (seed it first).
    """
    obs = RangeNormalizer.fit(np.concatenate([dataset.observations, dataset.next_observations]))
    act = RangeNormalizer.fit(dataset.actions)
    return IQLCritic(spec, obs, act)
