"""What defines a baseline policy and how it is trained: the `fit_policy` entry of `params.yaml`.

A policy checkpoint records the resolved `PolicySpec`, so a checkpoint alone rebuilds its policy.

References:
    Kostrikov, Nair, Levine, "Offline Reinforcement Learning with Implicit Q-Learning", ICLR 2022
    (policy extraction by advantage-weighted regression; official code: Gaussian actor with a
    tanh mean and a state-independent log-std, 2 x 256, Adam 3e-4 with cosine decay, beta 3 and
    weights clipped at 100 on MuJoCo locomotion).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dmc_core.config import from_plain, knob
from dmc_critic.spec import CriticTrainSpec

__all__ = ["POLICY_KINDS", "PolicySpec", "PolicyTrainSpec", "policy_spec_from_dict"]

#: `bc`: every transition weighs 1 (behaviour cloning); `awr`: IQL's advantage weights.
POLICY_KINDS = ("bc", "awr")


@dataclass(frozen=True)
class PolicyTrainSpec(CriticTrainSpec):
    """How a policy is trained: `fit_critic`'s knobs, the learning rate decayed by a cosine."""

    lr: float = knob(3e-4, gt=0.0, doc="Adam learning rate, cosine-decayed to 0 at `steps` (IQL)")
    warmup_steps: int = knob(0, ge=0, doc="linear learning-rate warm-up before the decay (IQL: 0)")


@dataclass(frozen=True)
class PolicySpec:
    """One baseline policy: its data, its critic, the weighting of its regression, its network.

    Both kinds name a critic: `awr` weighs every transition by it, and both log the advantage of
    their mean action under it as they train (a foreach stage of DVC has the same dependencies
    for every entry).
    """

    kind: str = knob("awr", choices=POLICY_KINDS, doc="bc (weights 1) or awr (IQL's policy)")
    dataset: str = knob("full", doc="dataset entry it learns from (dvc.yaml reads it)")
    critic: str = knob("full", doc="fit_critic entry of the same dataset (dvc.yaml reads it)")
    beta: float = knob(3.0, ge=0.0, doc="awr: inverse temperature of exp(beta (Q - V)) (IQL: 3)")
    max_weight: float = knob(100.0, gt=0.0, doc="awr: the weights are clipped here (IQL: 100)")
    hidden: int = knob(256, ge=1, doc="width of the hidden layers of the mean network")
    layers: int = knob(2, ge=1, le=16, doc="hidden layers of the mean network")
    fourier_frequencies: int = knob(
        0, ge=0, le=16, doc="Fourier features sin/cos(pi 2^k s), k < this, of the input; 0 = off"
    )
    train: PolicyTrainSpec = knob(factory=PolicyTrainSpec)


def policy_spec_from_dict(values: Mapping[str, Any], source: str = "<checkpoint>") -> PolicySpec:
    """Rebuild a `PolicySpec` from its plain form (a checkpoint's sidecar), validated."""
    return from_plain(PolicySpec, values, source, "spec")
