"""Fourier features against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from dmc_core.nets import FourierFeatures, fourier_features


def test_fourier_features_are_x_then_sines_then_cosines_by_octave() -> None:
    x = torch.tensor([[0.5, -0.25]])
    h = math.sqrt(0.5)
    expected = torch.tensor(
        [
            [
                *(0.5, -0.25),
                *(1.0, -h),  # sin(pi x)
                *(0.0, -1.0),  # sin(2 pi x)
                *(0.0, h),  # cos(pi x)
                *(-1.0, 0.0),  # cos(2 pi x)
            ]
        ]
    )
    torch.testing.assert_close(fourier_features(x, 2), expected, atol=1e-6, rtol=0)


def test_zero_frequencies_is_the_identity_and_the_layer_reports_its_width() -> None:
    x = torch.randn(4, 3)
    assert torch.equal(fourier_features(x, 0), x)
    layer = FourierFeatures(3)
    assert layer(x).shape == (4, layer.out_dim(3)) == (4, 21)
    assert list(layer.state_dict()) == []


def test_negative_frequencies_are_rejected() -> None:
    with pytest.raises(ValueError, match="frequencies"):
        FourierFeatures(-1)
