"""Denoising credit assignment kappa_t over the trained steps of a chain (spec §4.1).

- `uniform`: every trained step counts the same (DDPO).
- `decreasing`: kappa = decay^(steps left to z_0), so the step that makes z_0 counts most and
  the noisier ones less (DPPO's gamma_denoising).
- `direction`: retrospective, per sample: how well the step's direction z_t - z_{t-1} agrees
  with the whole chain's z_T - z_0 (cosine similarity, negative agreement counted as 0).

Weights are normalised to mean 1 over the trained steps, so that switching kind keeps the
learning rate's meaning.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from dmc_align.spec import CreditSpec
from dmc_core.diffusion import StepRecord

__all__ = ["credit_weights"]


def credit_weights(spec: CreditSpec, steps: Sequence[StepRecord], trained: int) -> Tensor:
    """kappa for the last `trained` steps of a recorded chain, normalised to mean 1.

    Shapes:
        returns: (trained, B), row k for steps[len(steps) - trained + k].
    """
    batch = steps[0].z_t.shape[0]
    device = steps[0].z_t.device
    if spec.kind == "uniform":
        return torch.ones(trained, batch, device=device)
    if spec.kind == "decreasing":
        left = torch.arange(trained - 1, -1, -1, device=device, dtype=torch.float32)
        weights = (spec.decay**left)[:, None].expand(trained, batch)
        return weights / weights.mean()
    chain = (steps[0].z_t - steps[-1].z_prev).flatten(1)
    directions = torch.stack(
        [(step.z_t - step.z_prev).flatten(1) for step in steps[len(steps) - trained :]]
    )
    similarity = torch.nn.functional.cosine_similarity(directions, chain[None], dim=2)
    weights = similarity.clamp(min=0.0).detach()
    return weights / weights.mean(dim=0, keepdim=True).clamp(min=1e-8)
