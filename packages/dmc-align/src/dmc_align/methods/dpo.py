"""Diffusion-DPO on pairs of reference-model samples ranked by the reward (spec §4.2).

For each condition the reference model (the foundation: adapters off) draws `candidates`
samples; the best by r(z_0) is the winner and the worst the loser. Both members of a pair are
noised with the same t and the same noise, and

    F(theta) = l(theta, x) - l(ref, x),  l = mean over dimensions of ||eps - eps(z_t, t)||^2
    L = -log sigmoid(-beta w(lambda_t) (F_w - F_l))

which is log 2 while the model equals the reference. `w` is 1, or min-SNR-gamma weighting
normalised to mean 1 over the sampler's steps so that beta keeps its meaning.

References:
    Wallace et al., "Diffusion Model Alignment Using Direct Preference Optimization" (2023),
    Eq. 14; Hang et al., "Efficient Diffusion Training via Min-SNR Weighting Strategy" (2023).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional

from dmc_align.lora import reference_mode
from dmc_align.methods.base import AlignContext, no_update
from dmc_core.diffusion.formulation import Formulation

__all__ = ["DPO", "diffusion_dpo_loss", "min_snr_weights"]


def diffusion_dpo_loss(
    model_winner: Tensor,
    model_loser: Tensor,
    ref_winner: Tensor,
    ref_loser: Tensor,
    beta: float,
    weights: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-pair Diffusion-DPO loss and its logit from the four denoising losses.

    Shapes:
        all losses (P,); weights (P,) or None. returns (loss (P,), inside (P,)).
    """
    inside = -beta * ((model_winner - ref_winner) - (model_loser - ref_loser))
    if weights is not None:
        inside = inside * weights
    return -functional.logsigmoid(inside), inside


def min_snr_weights(formulation: Formulation, t: Tensor, gamma: float) -> Tensor:
    """min(SNR, gamma) / SNR at times t (eps-prediction), normalised to mean 1 over the steps.

    Shapes:
        t: (P,) in the formulation's units; returns (P,).
    """

    def raw(times: Tensor) -> Tensor:
        snr = formulation.snr(times)
        return snr.clamp(max=gamma) / snr

    grid = formulation.draw_times(4096, torch.Generator().manual_seed(0), "cpu")
    return raw(t) / raw(grid).mean().to(t.device)


class DPO:
    """The `dpo` method (see the module docstring)."""

    def __init__(self, context: AlignContext) -> None:
        """Read the pass's `dpo` knobs."""
        self.context = context
        self.spec = context.spec.dpo
        self.updates_per_batch = self.spec.updates_per_batch
        self.loss_has_scale = True
        self._pairs: tuple[Tensor, Tensor, Tensor] | None = None

    def collect(self, history: Tensor, generator: torch.Generator) -> dict[str, float]:
        """Sample the reference `candidates` times per condition; keep best vs worst."""
        model, spec = self.context.model, self.spec
        repeated = history.repeat_interleave(spec.candidates, dim=0)
        with reference_mode(model):
            z0 = model.sample(repeated, generator, record=False).x0
            reward = self.context.score(z0, repeated, history.shape[0])
        grouped = reward.reshape(-1, spec.candidates)
        best, worst = grouped.argmax(dim=1), grouped.argmin(dim=1)
        gap = grouped.max(dim=1).values - grouped.min(dim=1).values
        keep = gap > max(spec.min_reward_gap, 0.0)
        rows = torch.arange(history.shape[0]) * spec.candidates
        samples = z0.detach()
        self._pairs = (
            samples[(rows + best)[keep]],
            samples[(rows + worst)[keep]],
            history[keep],
        )
        return {
            "reward": float(reward.mean()),
            "pairs": float(keep.sum()),
            "reward_gap": float(gap.mean()),
        }

    def loss(self, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """The DPO loss of the collected pairs at one shared (t, noise) per pair."""
        assert self._pairs is not None, "collect() first"
        model, spec = self.context.model, self.spec
        winner, loser, history = self._pairs
        if winner.shape[0] == 0:
            return no_update(model), {"accuracy": 0.0}
        t = model.formulation.draw_times(winner.shape[0], generator, winner.device)
        noise = torch.randn(winner.shape, generator=generator, device=winner.device)
        shared = {"t": t, "noise": noise}
        losses = [model.denoising_loss(x, history, **shared) for x in (winner, loser)]
        with reference_mode(model):
            ref = [model.denoising_loss(x, history, **shared) for x in (winner, loser)]
        weights = None
        if spec.snr_weighting == "min_snr":
            weights = min_snr_weights(model.formulation, t, spec.min_snr_gamma)
        loss, inside = diffusion_dpo_loss(losses[0], losses[1], ref[0], ref[1], spec.beta, weights)
        inside = inside.detach()
        return loss.mean(), {
            "accuracy": float((inside > 0).float().mean()),
            "logit": float(inside.mean()),
        }
