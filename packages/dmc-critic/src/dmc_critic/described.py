"""What the critic and the baseline policies share: range-normalised inputs, and a checkpoint
recipe (`kind`, `obs_dim`, `act_dim`, `spec`) that rebuilds them around their weights."""

from __future__ import annotations

from typing import Any

from torch import nn

from dmc_core.config import to_plain
from dmc_core.models.normalizer import RangeNormalizer

__all__ = ["Described"]


class Described(nn.Module):
    """A module on observations and actions normalised inside by its own range normalisers.

    Subclasses set `kind` (str), `spec` (a config dataclass), `obs_normalizer` and
    `act_normalizer`; `checkpoints.load_recipe` rebuilds them from `describe()`.
    """

    kind: str
    spec: Any
    obs_normalizer: RangeNormalizer
    act_normalizer: RangeNormalizer

    @property
    def obs_dim(self) -> int:
        """Observation size."""
        return self.obs_normalizer.dim

    @property
    def act_dim(self) -> int:
        """Action size."""
        return self.act_normalizer.dim

    def describe(self) -> dict[str, Any]:
        """Everything needed to rebuild this module around a state dict (checkpoint sidecar)."""
        return {
            "kind": self.kind,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "spec": to_plain(self.spec),
        }
