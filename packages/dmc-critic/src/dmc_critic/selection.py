"""Choosing one action (or plan) per state among M generated candidates.

References:
    Hansen-Estruch et al., "IDQL: Implicit Q-Learning as an Actor-Critic Method with Diffusion
    Policies", 2023 (argmax of Q over N samples, released `eval_actions`).
    Wang, Hunt, Zhou, "Diffusion Policies as an Expressive Policy Class for Offline RL",
    ICLR 2023 (sampling an index from softmax(Q) over the samples).
    Chi et al., "Diffusion Policy", RSS 2023 (one sample, or their average: `expectation`).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["SELECTION_RULES", "select_candidates"]

#: none: candidate 0 (callers generate one); q_argmax: best score; q_softmax: index drawn from
#: softmax(scores / temperature); expectation: the mean candidate.
SELECTION_RULES = ("none", "q_argmax", "q_softmax", "expectation")
_SCORED = ("q_argmax", "q_softmax")


def select_candidates(
    rule: str,
    candidates: Tensor,
    scores: Tensor | None = None,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
) -> tuple[Tensor, Tensor | None]:
    """Select one candidate per batch row by `rule` (see `SELECTION_RULES`).

    Args:
        rule: one of `SELECTION_RULES`.
        candidates: M candidates per row.
        scores: a score per candidate (e.g. the critic's Q); needed by q_argmax and q_softmax.
        generator: draws q_softmax's index (required there).
        temperature: q_softmax's temperature, > 0 (small: argmax, large: uniform).

    Returns:
        the selected candidates and their indices (None for `expectation`, which averages).

    Shapes:
        candidates: (B, M, ...); scores: (B, M); returns (B, ...) and (B,) long.

    Raises:
        ValueError: an unknown rule, missing or non-finite scores, shapes that do not match, no
            candidates, a temperature <= 0, or no generator for q_softmax.
    """
    _check_inputs(rule, candidates, scores, temperature)
    batch = candidates.shape[0]
    if rule == "expectation":
        return candidates.mean(dim=1), None
    if rule == "none":
        index = torch.zeros(batch, dtype=torch.long, device=candidates.device)
    elif rule == "q_argmax":
        assert scores is not None
        index = scores.argmax(dim=1)
    else:
        assert scores is not None
        index = _softmax_index(scores, temperature, generator)
    index = index.to(candidates.device)
    rows = torch.arange(batch, device=candidates.device)
    return candidates[rows, index], index


def _softmax_index(scores: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
    if generator is None:
        raise ValueError("q_softmax draws an index: pass a torch.Generator")
    # Softmax in float64 after subtracting the row max, so tiny temperatures do not overflow.
    logits = scores.double() / temperature
    probs = torch.softmax(logits - logits.max(dim=1, keepdim=True).values, dim=1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def _check_inputs(rule: str, candidates: Tensor, scores: Tensor | None, temperature: float) -> None:
    if rule not in SELECTION_RULES:
        raise ValueError(f"unknown selection rule {rule!r}; choices: {list(SELECTION_RULES)}")
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if candidates.ndim < 2:
        raise ValueError(f"candidates must have shape (B, M, ...), got {tuple(candidates.shape)}")
    if candidates.shape[1] < 1:
        raise ValueError("candidates must hold at least one candidate per row (M >= 1)")
    if rule in _SCORED and scores is None:
        raise ValueError(f"selection rule {rule!r} needs scores of shape (B, M)")
    if scores is None:
        return
    if tuple(scores.shape) != tuple(candidates.shape[:2]):
        raise ValueError(
            f"scores must have shape (B, M) = {tuple(candidates.shape[:2])}, "
            f"got {tuple(scores.shape)}"
        )
    if rule in _SCORED and not bool(torch.isfinite(scores).all()):
        raise ValueError("scores contain NaN or inf")
