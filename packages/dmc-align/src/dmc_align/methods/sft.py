"""SFT on the best samples, iterated (spec §4.3).

Every round samples `candidates` per condition from the generator (the foundation, or the model
being fine-tuned), keeps the top `keep_fraction` of each condition by r(z_0) and trains on them
with the ordinary diffusion loss for `updates_per_batch` updates. When the generator is the
fine-tuned model, a kept sample must also be likely under the foundation, which stops the loop
from drifting off the data. Two estimators of that likelihood (`likelihood_estimator`):

- `denoising` (any model): the foundation's denoising loss of the sample, averaged over
  `likelihood_draws` times and noises (an ELBO surrogate), must not exceed `likelihood_threshold`;
- `energy` (a BDM): the foundation's scalar network f_phi is log pi(a | s) up to a per-state
  constant, so it is compared within each condition's candidates: the sample's log-density
  relative to the candidates' average density, f_phi(a) - logsumexp_k f_phi(a_k) + log K, must
  be at least -`likelihood_threshold`.

Each round's kept samples join a pool that the updates draw from: the newest round alone
(`keep_rounds: 1`, the default), the last k rounds, or every round so far (`0`). A sample of the
frozen foundation, scored by a fixed critic, stays a valid target after its round, so a pool of
rounds gives the updates many more conditions' best samples for the same sampling cost (the
growing dataset of RAFT and ReST). The pool is part of the pass's snapshot.

The `dataset` generator samples no model: every round draws `conditions x candidates` of the
dataset's own windows and keeps the top `keep_fraction` of them by the critic's advantage of
their first action, A(s, a) = Q(s, a) - V(s) (one action per state, so the ranking is across
states, and V removes the per-state baseline). The critic is then only asked about actions it
was trained on, where IQL's Q is accurate; a model's samples off the data are where it is not.
This is filtered behaviour cloning (CRR's binary filter) with the diffusion loss.

References:
    Black et al. (2023), the filtered "RWR-sparse" baseline; Huh & Mohapatra (2025), Sec. 3.3;
    Wang et al., "Critic Regularized Regression" (2020), the binary advantage filter;
    Dong et al., "RAFT" (2023) and Gulcehre et al., "ReST" (2023): a growing set of the best.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from dmc_align.lora import reference_mode, sampling_mode
from dmc_align.methods.base import AlignContext, no_update
from dmc_core.errors import ConfigError
from dmc_core.models import ControlModel, Window
from dmc_core.models.windows import window_to

__all__ = [
    "SFT",
    "KeptRounds",
    "foundation_nll",
    "foundation_relative_log_density",
    "top_per_condition",
]


def top_per_condition(reward: Tensor, candidates: int, fraction: float) -> Tensor:
    """Indices of the best ceil(fraction x candidates) samples of every condition's group.

    Shapes:
        reward: (groups * candidates,), consecutive groups; returns (groups * kept,) long.
    """
    kept = max(1, math.ceil(fraction * candidates))
    grouped = reward.reshape(-1, candidates)
    best = grouped.topk(kept, dim=1).indices
    rows = torch.arange(grouped.shape[0], device=reward.device)[:, None] * candidates
    return (rows + best).reshape(-1)


def foundation_nll(
    model: ControlModel, z0: Tensor, history: Tensor, draws: int, generator: torch.Generator
) -> Tensor:
    """The foundation's denoising loss of each sample, averaged over `draws` (t, noise) draws.

    Shapes:
        z0: (B, horizon, transition_dim); returns (B,).
    """
    with reference_mode(model):
        losses = [model.denoising_loss(z0, history, generator) for _ in range(draws)]
    return torch.stack(losses).mean(dim=0)


def foundation_relative_log_density(
    model: ControlModel, z0: Tensor, history: Tensor, candidates: int
) -> Tensor:
    """Each sample's foundation log-density relative to its condition's candidates (a BDM).

    log pi_ref(a | s) - log mean_k pi_ref(a_k | s), from f_phi at the least noisy time: the
    per-state constant of f cancels. 0 for a sample as likely as the candidates on average.

    Shapes:
        z0: (groups * candidates, horizon, act_dim) normalised, consecutive groups;
        history: (groups * candidates, To, obs_dim); returns (groups * candidates,).
    """
    with reference_mode(model):
        t = model.smallest_time(z0.shape[0], z0.device)  # type: ignore[attr-defined]
        f = model.energy(z0, history, t).reshape(-1, candidates)  # type: ignore[attr-defined]
    return (f - torch.logsumexp(f, dim=1, keepdim=True) + math.log(candidates)).reshape(-1)


class KeptRounds:
    """The kept samples and their conditions of the last `rounds` rounds (0: of every round).

    Shapes:
        samples: (kept, horizon, transition_dim); conditions: (kept, To, obs_dim).
    """

    def __init__(self, rounds: int) -> None:
        """An empty pool keeping `rounds` rounds (0: all)."""
        self.rounds = rounds
        self._kept: deque[tuple[Tensor, Tensor]] = deque(maxlen=rounds or None)
        self._joined: tuple[Tensor, Tensor] | None = None

    def add(self, samples: Tensor, conditions: Tensor) -> None:
        """A new round's kept samples; the oldest round leaves a full pool."""
        self._kept.append((samples, conditions))
        self._joined = None

    def joined(self) -> tuple[Tensor, Tensor]:
        """Every kept round's samples and conditions, oldest first."""
        assert self._kept, "collect() first"
        if self._joined is None:
            self._joined = (
                torch.cat([samples for samples, _ in self._kept]),
                torch.cat([conditions for _, conditions in self._kept]),
            )
        return self._joined

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The rounds the next round does not push out (none when the pool keeps one round:
        a snapshot is taken where the next update collects afresh)."""
        survivors = list(self._kept)
        if self.rounds:
            survivors = survivors[max(0, len(survivors) - (self.rounds - 1)) :]
        sizes = [int(samples.shape[0]) for samples, _ in survivors]
        if not survivors:
            return {}, {"sizes": sizes}
        tensors = {
            "samples": torch.cat([samples for samples, _ in survivors]),
            "conditions": torch.cat([conditions for _, conditions in survivors]),
        }
        return tensors, {"sizes": sizes}

    def load_state(
        self, tensors: Mapping[str, Tensor], record: Mapping[str, Any], device: torch.device
    ) -> None:
        """Continue from what `state` returned, the tensors on `device`."""
        self._kept.clear()
        self._joined = None
        sizes = [int(size) for size in record["sizes"]]
        if not sizes:
            return
        samples = tensors["samples"].to(device).split(sizes)
        conditions = tensors["conditions"].to(device).split(sizes)
        self._kept.extend(zip(samples, conditions, strict=True))


class SFT:
    """The `sft` method (see the module docstring)."""

    def __init__(self, context: AlignContext) -> None:
        """Read the pass's `sft` knobs."""
        self.context = context
        self.spec = context.spec.sft
        if self.spec.likelihood_estimator == "energy" and not hasattr(context.model, "energy"):
            raise ConfigError(
                f"align.passes: sft.likelihood_estimator energy needs a BDM's log-density; "
                f"'{context.spec.model}' is a {context.model.kind}"
            )
        if self.spec.generator == "dataset" and self.spec.keep_rounds != 1:
            raise ConfigError(
                "align.passes: sft.keep_rounds pools the rounds of a model's samples; with "
                "generator dataset draw more windows a round instead (conditions)"
            )
        if self.spec.generator == "dataset" and not hasattr(context.reward, "advantage"):
            raise ConfigError(
                "align.passes: sft.generator dataset ranks the data's actions by the critic's "
                "advantage Q - V; this pass's reward has no critic V (use q_first_action)"
            )
        self.updates_per_batch = self.spec.updates_per_batch
        self.loss_has_scale = True
        self.kept = KeptRounds(self.spec.keep_rounds)
        self._kept_windows: Window | None = None

    def collect(self, history: Tensor, generator: torch.Generator) -> dict[str, float]:
        """Sample, keep the best of every condition, filter by foundation likelihood."""
        if self.spec.generator == "dataset":
            return self._collect_windows(history.shape[0] * self.spec.candidates, generator)
        model, spec = self.context.model, self.spec
        repeated = history.repeat_interleave(spec.candidates, dim=0)
        sampler = reference_mode if spec.generator == "foundation" else sampling_mode
        with torch.no_grad(), sampler(model):
            z0 = model.sample(repeated, generator, record=False).x0
            reward = self.context.score(z0, repeated, history.shape[0])
        keep = top_per_condition(reward, spec.candidates, spec.keep_fraction)
        samples, conditions = z0[keep], repeated[keep]
        metrics = {"reward": float(reward.mean()), "kept_reward": float(reward[keep].mean())}
        if spec.generator == "current" and spec.likelihood_threshold > 0:
            likely = self._likely(z0, repeated, keep, generator, metrics)
            metrics["likelihood_kept"] = float(likely.float().mean())
            samples, conditions = samples[likely], conditions[likely]
        self.kept.add(samples.detach(), conditions)
        return metrics

    def _likely(
        self,
        z0: Tensor,
        history: Tensor,
        keep: Tensor,
        generator: torch.Generator,
        metrics: dict[str, float],
    ) -> Tensor:
        """Which kept samples (`z0[keep]`) the foundation finds likely enough (module docstring)."""
        spec, model = self.spec, self.context.model
        if spec.likelihood_estimator == "energy":
            relative = foundation_relative_log_density(model, z0, history, spec.candidates)[keep]
            metrics["foundation_relative_log_density"] = float(relative.mean())
            return relative >= -spec.likelihood_threshold
        nll = foundation_nll(model, z0[keep], history[keep], spec.likelihood_draws, generator)
        metrics["foundation_nll"] = float(nll.mean())
        return nll <= spec.likelihood_threshold

    def _collect_windows(self, count: int, generator: torch.Generator) -> dict[str, float]:
        """Draw `count` dataset windows, keep the top fraction by the advantage of their first
        action (or the critic's chunk).

        The windows go to the model's device once here, not at every update."""
        device = next(self.context.model.parameters()).device
        windows = window_to(self.context.windows.sample(count, generator), device)
        with torch.no_grad():
            advantage = self.context.reward.advantage(  # type: ignore[attr-defined]
                windows.history[:, -1], windows.actions
            )
        keep = top_per_condition(advantage, count, self.spec.keep_fraction)
        self._kept_windows = windows.rows(keep)
        return {"reward": float(advantage.mean()), "kept_reward": float(advantage[keep].mean())}

    def loss(self, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """The diffusion loss of a random batch of the kept samples."""
        if self.spec.generator == "dataset":
            return self._window_loss(generator)
        samples, conditions = self.kept.joined()
        if samples.shape[0] == 0:
            return no_update(self.context.model), {"kept": 0.0}
        pick = torch.randint(samples.shape[0], (self.spec.batch_size,), generator=generator)
        loss = self.context.model.denoising_loss(samples[pick], conditions[pick], generator)
        return loss.mean(), {"kept": float(samples.shape[0])}

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The pool of kept rounds a snapshot must carry (a `dmc_align.snapshots.Stateful`)."""
        return self.kept.state()

    def load_state(self, tensors: Mapping[str, Tensor], record: Mapping[str, Any]) -> None:
        """Continue with the pool `state` returned."""
        device = next(self.context.model.parameters()).device
        self.kept.load_state(tensors, record, device)

    def _window_loss(self, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """The model's training loss on a random batch of the kept dataset windows."""
        assert self._kept_windows is not None, "collect() first"
        kept = self._kept_windows
        pick = torch.randint(len(kept), (self.spec.batch_size,), generator=generator)
        loss = self.context.model.training_loss(kept.rows(pick.to(kept.states.device)), generator)
        return loss, {"kept": float(len(kept))}
