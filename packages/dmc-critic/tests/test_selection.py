"""Selection rules: argmax, softmax (temperature limits and frequencies), expectation, errors."""

from __future__ import annotations

import math

import pytest
import torch

from dmc_core.seeding import torch_generator
from dmc_critic import SELECTION_RULES, select_candidates


def _candidates(batch: int = 5, m: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, m, 2, 3, generator=generator), torch.randn(
        batch, m, generator=generator
    )


def test_q_argmax_picks_the_best_scored_candidate() -> None:
    candidates, scores = _candidates()
    chosen, index = select_candidates("q_argmax", candidates, scores)
    assert index is not None
    for row in range(5):
        best = int(torch.argmax(scores[row]))
        assert int(index[row]) == best
        assert torch.equal(chosen[row], candidates[row, best])


def test_none_takes_the_first_candidate_and_expectation_the_mean() -> None:
    candidates, _ = _candidates()
    chosen, index = select_candidates("none", candidates, None)
    assert torch.equal(chosen, candidates[:, 0]) and index is not None and not index.any()
    mean, no_index = select_candidates("expectation", candidates, None)
    torch.testing.assert_close(mean, candidates.mean(dim=1))
    assert no_index is None and mean.shape == (5, 2, 3)


def test_q_softmax_with_a_tiny_temperature_is_the_argmax() -> None:
    candidates, scores = _candidates(batch=50, m=8)
    _, best = select_candidates("q_argmax", candidates, scores)
    _, drawn = select_candidates("q_softmax", candidates, scores, torch_generator(1), 1e-6)
    assert drawn is not None and torch.equal(drawn, best)


def _frequencies(scores: list[float], temperature: float, rows: int = 8000) -> torch.Tensor:
    candidates = torch.arange(len(scores)).float().expand(rows, -1)
    table = torch.tensor(scores).expand(rows, -1)
    _, index = select_candidates("q_softmax", candidates, table, torch_generator(2), temperature)
    assert index is not None
    return torch.bincount(index, minlength=len(scores)).double() / rows


def test_q_softmax_with_a_huge_temperature_is_uniform() -> None:
    frequencies = _frequencies([0.0, 1.0, 2.0, 3.0], temperature=1e6)
    assert torch.allclose(frequencies, torch.full((4,), 0.25, dtype=torch.float64), atol=0.03)


def test_q_softmax_draws_in_proportion_to_exp_score_over_temperature() -> None:
    # exp(2 log(k) / 2) = k: probabilities 1/10, 2/10, 3/10, 4/10, favouring high scores.
    frequencies = _frequencies([2 * math.log(k) for k in (1, 2, 3, 4)], temperature=2.0)
    expected = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    assert torch.allclose(frequencies, expected, atol=0.03), frequencies


def test_q_softmax_repeats_with_the_seed() -> None:
    candidates, scores = _candidates(batch=20)
    first = select_candidates("q_softmax", candidates, scores, torch_generator(5))[1]
    second = select_candidates("q_softmax", candidates, scores, torch_generator(5))[1]
    assert first is not None and second is not None and torch.equal(first, second)


def test_errors_name_the_problem() -> None:
    candidates, scores = _candidates()
    with pytest.raises(ValueError, match=r"'best_of'.*\['none', 'q_argmax'"):
        select_candidates("best_of", candidates, scores)
    for rule in ("q_argmax", "q_softmax"):
        with pytest.raises(ValueError, match=f"'{rule}' needs scores"):
            select_candidates(rule, candidates, None, torch_generator(0))
    with pytest.raises(ValueError, match=r"scores must have shape \(B, M\) = \(5, 4\)"):
        select_candidates("q_argmax", candidates, scores[:, :3])
    with pytest.raises(ValueError, match="candidates must have shape"):
        select_candidates("none", torch.zeros(5), None)
    for temperature in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature must be > 0"):
            select_candidates("q_softmax", candidates, scores, torch_generator(0), temperature)
    with pytest.raises(ValueError, match=r"torch\.Generator"):
        select_candidates("q_softmax", candidates, scores, None)
    with pytest.raises(ValueError, match="NaN"):
        select_candidates("q_argmax", candidates, torch.full((5, 4), math.nan))
    assert SELECTION_RULES == ("none", "q_argmax", "q_softmax", "expectation")
