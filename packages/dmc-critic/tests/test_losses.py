"""The expectile loss and the TD target against values computed by hand."""

from __future__ import annotations

import pytest
import torch

from dmc_critic import expectile_loss, td_target


def test_expectile_loss_weights_positive_residuals_by_tau_and_negative_by_one_minus_tau() -> None:
    residual = torch.tensor([2.0, -1.0, 0.5, -3.0, 0.0])
    # tau = 0.9: 0.9 * 4, 0.1 * 1, 0.9 * 0.25, 0.1 * 9, 0.
    expected = torch.tensor([3.6, 0.1, 0.225, 0.9, 0.0])
    torch.testing.assert_close(expectile_loss(residual, 0.9), expected)


def test_expectile_loss_at_one_half_is_half_the_squared_error() -> None:
    residual = torch.tensor([1.5, -2.0])
    torch.testing.assert_close(expectile_loss(residual, 0.5), torch.tensor([1.125, 2.0]))


@pytest.mark.parametrize("tau", [0.0, 1.0, -0.1])
def test_expectile_loss_rejects_a_tau_outside_the_open_unit_interval(tau: float) -> None:
    with pytest.raises(ValueError, match="expectile"):
        expectile_loss(torch.zeros(2), tau)


def test_td_target_bootstraps_only_where_not_done() -> None:
    reward = torch.tensor([1.0, 2.0, 3.0])
    done = torch.tensor([0.0, 1.0, 0.0])
    next_v = torch.tensor([10.0, 20.0, 30.0])
    # 1 + 0.9 * 10, 2 (done), 3 + 0.9 * 30.
    torch.testing.assert_close(td_target(reward, done, next_v, 0.9), torch.tensor([10.0, 2, 30]))
