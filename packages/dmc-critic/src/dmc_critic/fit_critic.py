"""Stage `fit_critic`: train one IQL critic on a dataset (resumable, logged, atomic).

    python -m dmc_critic fit_critic --name full --dataset data/datasets/nav1d/full.hdf5 \
        --out data/critics/full

Writes `<out>/critic.safetensors` with its `critic.yaml` sidecar (the checkpoint alone rebuilds
the critic) and learning curves under `<out>/live/`. Every `checkpoint_every` steps it leaves a
resumable snapshot in `<out>/.resume/`; a killed run started again continues from there, as long
as its settings and dataset are unchanged. The summary records two first sanity checks of the
fit: how well Q ranks the returns-to-go of the rewards it learns from (Spearman), and how often
Q prefers the data's action to a uniform one in the same state (`data_action_preferred`: about
0.5 where Q ignores the action, or where the data's actions are no better than uniform ones; on
expert data, a critic that tells actions apart should be well above 0.5). It warns when the
dataset's episodes end on success but its rewards make finishing worth less than going on
(`dmc_critic.rewards.finishing_undervalued`).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dmc_core.checkpoint import file_sha256
from dmc_core.config import BaseConfig, entry, knob
from dmc_core.data import TransitionDataset, read_dataset
from dmc_core.training import EMA, ResumableRun, World, choose_device
from dmc_critic.batches import TransitionSampler
from dmc_critic.checkpoints import save_critic
from dmc_critic.fit import critic_optimizer, train_step
from dmc_critic.iql import IQLCritic, build_critic
from dmc_critic.rewards import finishing_undervalued, returns_to_go, transform_rewards
from dmc_critic.spec import CriticSpec

__all__ = ["CriticRun", "FitCriticConfig", "fit_critic", "rank_correlation"]

log = logging.getLogger(__name__)


def _nav1d_critics() -> dict[str, CriticSpec]:
    return {"full": CriticSpec(dataset="full")}


@dataclass(frozen=True)
class FitCriticConfig:
    """Stage `fit_critic`: the critics, one DVC stage instance per entry."""

    base: BaseConfig = knob(factory=BaseConfig)
    critics: dict[str, CriticSpec] = knob(factory=_nav1d_critics)
    device: str = knob("auto", choices=("auto", "cpu", "cuda"), doc="auto: a GPU if present")


def fit_critic(config: FitCriticConfig, args: argparse.Namespace) -> None:
    """Train `config.critics[args.name]` on `args.dataset`; write it to `args.out`."""
    spec = entry(config.critics, args.name, "fit_critic.critics", args.params)
    dataset = read_dataset(args.dataset)
    world = World(0, 1, choose_device(config.device))
    digest = file_sha256(args.dataset)
    CriticRun(spec, dataset, Path(args.out), world, config.base.seed, args.name, digest).train()


class CriticRun(ResumableRun):
    """One `fit_critic` run: critic, optimiser, snapshot; `train()` runs it."""

    stage = "fit_critic"

    def __init__(
        self,
        spec: CriticSpec,
        dataset: TransitionDataset,
        out: Path,
        world: World,
        seed: int,
        name: str,
        dataset_digest: str | None = None,
    ) -> None:
        """Build the critic (normalisers fitted to the dataset), its optimiser and sampler."""
        self.spec, self.schedule = spec, spec.train
        self.out, self.world, self.seed, self.name = out, world, seed, name
        self.dataset = dataset
        torch.manual_seed(seed)
        self.critic: IQLCritic = build_critic(spec, dataset).to(world.device)
        self.optimizer = critic_optimizer(self.critic, spec.train)
        self.sampler = TransitionSampler(dataset, spec, world.device)
        # The rewards Q learns from: its returns-to-go are what the in-sample check ranks.
        self.rewards = transform_rewards(dataset, spec, self.sampler.reward_factor)
        problem = finishing_undervalued(dataset, self.rewards, spec.discount)
        if problem:
            log.warning("fit_critic.critics.%s: %s", name, problem)
        self.snapshot = self.make_snapshot(spec, dataset, dataset_digest)
        self.critic.train()

    @property
    def parameters(self) -> int:
        """Trainable parameters (online Qs and V)."""
        return sum(p.numel() for p in self.critic.trainable_parameters())

    def step(self, step: int, generators: tuple[torch.Generator, ...]) -> dict[str, float]:
        """One IQL step (V expectile + twin TD) and the Polyak update of the target Qs."""
        batch = self.sampler.sample(self.spec.train.batch_size, generators[0])
        return train_step(self.critic, self.optimizer, batch)

    def trained(self) -> tuple[torch.nn.Module, EMA | None, torch.optim.Optimizer]:
        """What a snapshot holds."""
        return self.critic, None, self.optimizer

    def finish(self, summary: dict[str, float]) -> Path:
        """Save the critic with the run's summary and the two in-sample checks."""
        self.critic.eval()
        checks = self.in_sample_checks()
        path = self.out / "critic.safetensors"
        metadata = {
            "name": self.name,
            "steps": self.spec.train.steps,
            "parameters": self.parameters,
            "reward_factor": self.sampler.reward_factor,
            # A `roll_out` dataset: the one it extends, which the stages pair models with.
            **(
                {"dataset_extends": extends}
                if (extends := self.dataset.attrs.get("extends"))
                else {}
            ),
            **checks,
            **summary,
        }
        save_critic(path, self.critic, metadata)
        log.info(
            "%s: wrote %s (%d parameters; Spearman of Q with returns-to-go %.3f; Q prefers the "
            "data's action to a uniform one in %.1f %% of states)",
            self.name,
            path,
            self.parameters,
            checks["spearman_returns_to_go"],
            100 * checks["data_action_preferred"],
        )
        return path

    @torch.no_grad()
    def in_sample_checks(self, rows: int = 20000) -> dict[str, float]:
        """On at most `rows` dataset rows drawn with the run's seed: the Spearman correlation
        of Q(s, a) with the returns-to-go of the rewards it learns from, normalised and shifted
        (`spearman_returns_to_go`), and the share of those states where Q of the data's action
        (chunk) exceeds Q(s, u), u uniform on the box of the dataset's actions, per dimension
        from the least to the most value recorded, drawn with the run's seed
        (`data_action_preferred`)."""
        count = min(rows, len(self.dataset))
        pick = np.random.default_rng(self.seed).choice(len(self.dataset), count, replace=False)
        # The sampler's rows: float32 whatever the file stores (the contract allows any float;
        # SAC's replay buffer keeps float64 observations).
        batch = self.sampler.batch(torch.as_tensor(pick, device=self.world.device))
        q = self.critic.q(batch.obs, batch.act)
        to_go = returns_to_go(self.dataset, self.spec.discount, rewards=self.rewards)
        target = torch.as_tensor(to_go[pick])
        # Each action of a chunk uniform on the box (the bounds repeated for every step).
        chunk = self.spec.action_chunk
        low = batch.act.new_tensor(np.tile(self.dataset.actions.min(axis=0), chunk))
        high = batch.act.new_tensor(np.tile(self.dataset.actions.max(axis=0), chunk))
        generator = torch.Generator().manual_seed(self.seed)
        uniform = low + (high - low) * torch.rand(batch.act.shape, generator=generator).to(low)
        return {
            "spearman_returns_to_go": rank_correlation(q.cpu().double(), target.double()),
            "data_action_preferred": float((q > self.critic.q(batch.obs, uniform)).double().mean()),
        }


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two 1-D tensors (ties broken by order)."""
    ranks = [torch.argsort(torch.argsort(x)).double() for x in (a, b)]
    centred = [r - r.mean() for r in ranks]
    denominator = (centred[0].norm() * centred[1].norm()).clamp_min(1e-12)
    return float((centred[0] * centred[1]).sum() / denominator)
