"""EDA: Efficient Diffusion Alignment of a bottleneck diffusion model with Q (spec §4.7).

For every state the frozen behaviour model pi_phi (the foundation: adapters off) draws K
candidate action chunks a^1..a^K, labelled by Q(s, a^k_0) (the reward of the pass). An update
draws one time t per state, shared by its K candidates, and an independent noise per candidate,
a^k_t = alpha_t a^k + sigma_t eps^k, and minimises the cross-entropy

    L = -sum_k target_k log softmax_k( beta [f_theta(a^k_t | s, t) - f_phi(a^k_t | s, t)] )

with target = softmax_k(alpha Q(s, a^k)) (value-based, Eq. 14) or one-hot on argmax_k Q
(preference-based, Eq. 15; with K = 2 it is DPO on beta (f_theta - f_phi)). The unknown
per-state constants of the log-densities f cancel inside the softmax. It is log K while
theta = phi. At the optimum pi_theta ~ pi_phi exp(alpha Q / beta) (Prop. 3.1).

Departures from the released code: f_theta is computed with gradients and only f_phi under
no_grad (the released `update_policy` computes both under one `torch.no_grad()` block, so its
loss has no graph: the "no grad" issue); tensors keep their (states, K) shape, never squeezed.
Candidates are drawn afresh from the frozen reference for each batch of states rather than once
for the whole dataset before training: the reference is frozen, so they come from the same
distribution; the pass loop only sees states in batches.

References:
    Chen et al., "Aligning Diffusion Behaviors with Q-functions for Efficient Continuous
    Control" (NeurIPS 2024), Sec. 3.2-3.3, Eqs. 14-16; anchors-alignment §6.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional

from dmc_align.lora import reference_mode
from dmc_align.methods.base import AlignContext
from dmc_align.spec import METHOD_MODEL_KINDS
from dmc_core.errors import ConfigError

__all__ = ["EDA", "eda_loss", "eda_targets"]


def eda_targets(q: Tensor, alpha: float, variant: str, standardise: bool = False) -> Tensor:
    """The target distribution over each state's K candidates.

    value: softmax_K(alpha Q), Q standardised within the state first when `standardise`;
    preference: one-hot on argmax_K Q.

    Shapes:
        q: (N, K); returns (N, K), rows summing to 1.
    """
    if variant == "preference":
        return functional.one_hot(q.argmax(dim=1), q.shape[1]).to(q.dtype)
    if variant != "value":
        raise ValueError(f"unknown EDA variant {variant!r}; known: value, preference")
    if standardise:
        std = q.std(dim=1, unbiased=False, keepdim=True).clamp(min=1e-6)
        q = (q - q.mean(dim=1, keepdim=True)) / std
    return torch.softmax(alpha * q, dim=1)


def eda_loss(f_model: Tensor, f_ref: Tensor, target: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """Per-state cross-entropy between `target` and softmax_K(beta (f_model - f_ref)).

    Shapes:
        f_model, f_ref, target: (N, K). returns (loss (N,), logits (N, K)).

    References:
        Chen et al. (2024), Eq. 14.
    """
    logits = beta * (f_model - f_ref)
    return -(target * functional.log_softmax(logits, dim=1)).sum(dim=1), logits


class EDA:
    """The `eda` method (see the module docstring)."""

    def __init__(self, context: AlignContext) -> None:
        """Read the pass's `eda` knobs; the model must expose a log-density (a BDM)."""
        kinds = METHOD_MODEL_KINDS["eda"]
        if context.model.kind not in kinds:
            raise ConfigError(
                f"method eda aligns {' or '.join(kinds)} models (it needs the log-density f); "
                f"'{context.spec.model}' is a {context.model.kind}"
            )
        self.context = context
        self.spec = context.spec.eda
        self.updates_per_batch = self.spec.updates_per_batch
        self.loss_has_scale = True
        self._batch: tuple[Tensor, Tensor, Tensor] | None = None

    def collect(self, history: Tensor, generator: torch.Generator) -> dict[str, float]:
        """K candidates per state from the frozen reference, labelled by the reward (Q)."""
        model, k = self.context.model, self.spec.candidates
        repeated = history.repeat_interleave(k, dim=0)
        with reference_mode(model):
            z0 = model.sample(repeated, generator, record=False).x0
            reward = self.context.score(z0, repeated, history.shape[0])
        q = reward.reshape(-1, k)
        self._batch = (z0.detach(), repeated, q.detach())
        spread = q.max(dim=1).values - q.min(dim=1).values
        return {"reward": float(q.mean()), "reward_spread": float(spread.mean())}

    def loss(self, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """The EDA cross-entropy at one shared t per state and independent noises."""
        assert self._batch is not None, "collect() first"
        model, spec = self.context.model, self.spec
        z0, repeated, q = self._batch
        states, k = q.shape
        formulation = model.formulation
        t = formulation.draw_times(states, generator, z0.device).repeat_interleave(k)
        noise = torch.randn(z0.shape, generator=generator, dtype=z0.dtype, device=z0.device)
        z_t = formulation.q_sample(z0, t, noise)  # type: ignore[attr-defined]
        f_model = model.energy(z_t, repeated, t).reshape(states, k)  # type: ignore[operator]
        with reference_mode(model):  # f_phi only: f_theta above keeps its graph
            f_ref = model.energy(z_t, repeated, t).reshape(states, k)  # type: ignore[operator]
        target = eda_targets(q, spec.alpha, spec.variant, spec.standardise_q)
        loss, logits = eda_loss(f_model, f_ref, target, spec.beta)
        logits = logits.detach()
        return loss.mean(), {
            "accuracy": float((logits.argmax(dim=1) == q.argmax(dim=1)).float().mean()),
            "logit_spread": float((logits.max(dim=1).values - logits.min(dim=1).values).mean()),
        }
