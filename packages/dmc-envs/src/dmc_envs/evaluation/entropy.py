"""Entropy of a model's candidate set: how diverse its samples for one decision are.

Alignment narrows the sample distribution (paper §4.3); this measures by how much. The estimate
is the Shannon entropy (nats) of a histogram of the candidates' first action over the action
range, summed over action dimensions (marginals), averaged over the decisions probed. It lies in
[0, act_dim * log(min(candidates, bins))]: 0 when every candidate falls in one bin.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["histogram_entropy"]


def histogram_entropy(actions: Tensor, low: Tensor, high: Tensor, bins: int) -> float:
    """Mean over decisions of the binned entropy of their candidates (see module doc).

    Samples outside [low, high] count in the edge bins.

    Shapes:
        actions: (B, n, act_dim) candidates of B decisions; low, high: (act_dim,).
    """
    if actions.ndim != 3:
        raise ValueError(f"actions must have shape (B, n, act_dim), got {tuple(actions.shape)}")
    span = (high - low).clamp_min(1e-12)
    scaled = (actions.double() - low.double()) / span.double()
    index = (scaled * bins).floor().clamp(0, bins - 1).long()  # (B, n, act_dim)
    counts = torch.zeros(*index.shape[:1], index.shape[2], bins, dtype=torch.float64)
    counts.scatter_add_(
        2, index.transpose(1, 2), torch.ones_like(index.transpose(1, 2), dtype=torch.float64)
    )
    p = counts / actions.shape[1]
    terms = torch.where(p > 0, -p * p.log(), torch.zeros_like(p))
    return float(terms.sum(dim=(1, 2)).mean())
