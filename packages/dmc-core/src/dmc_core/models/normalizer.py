"""Per-dimension affine normalisation of observations and actions to [-1, 1], saved with a model."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["RangeNormalizer"]


class RangeNormalizer(nn.Module):
    """Map each dimension's data range [low, high] onto [-1, 1] (Diffusion Policy's limits mode).

    The range is a buffer, so it is saved and loaded with the model's weights: a checkpoint
    always carries the normalisation it was trained with. A dimension that never varies in the
    data is only shifted (its width is taken as 2), so that it maps to 0 instead of dividing by 0.

    Shapes:
        low, high: (dim,).
    """

    def __init__(self, low: Tensor, high: Tensor) -> None:
        """Keep the per-dimension range (float32 buffers)."""
        super().__init__()
        low = torch.as_tensor(low, dtype=torch.float32).reshape(-1)
        high = torch.as_tensor(high, dtype=torch.float32).reshape(-1)
        if low.shape != high.shape or bool((high < low).any()):
            raise ValueError("normaliser range must have low <= high, dimension by dimension")
        self.register_buffer("low", low)
        self.register_buffer("high", high)

    @classmethod
    def fit(cls, data: np.ndarray) -> RangeNormalizer:
        """Take the range of `data` (N, dim) over its rows."""
        array = np.asarray(data, dtype=np.float32)
        return cls(torch.from_numpy(array.min(axis=0)), torch.from_numpy(array.max(axis=0)))

    @classmethod
    def empty(cls, dim: int) -> RangeNormalizer:
        """A placeholder of the right size whose buffers a checkpoint will overwrite."""
        return cls(-torch.ones(dim), torch.ones(dim))

    @property
    def dim(self) -> int:
        """The number of dimensions."""
        return int(self.low.shape[0])

    def _center_and_half_width(self) -> tuple[Tensor, Tensor]:
        half = (self.high - self.low) / 2.0
        return (self.high + self.low) / 2.0, torch.where(half > 0, half, torch.ones_like(half))

    def normalize(self, x: Tensor) -> Tensor:
        """Data units -> [-1, 1]. Shapes: x (..., dim) -> same."""
        center, half = self._center_and_half_width()
        return (x - center) / half

    def unnormalize(self, x: Tensor) -> Tensor:
        """[-1, 1] -> data units. Shapes: x (..., dim) -> same."""
        center, half = self._center_and_half_width()
        return x * half + center
