"""Stage `fit_cascade`: train a cascade that refines the samples of one model (spec §4.4).

    python -m dmc_align fit_cascade --name diffuser_cascade \
        --model data/models/diffuser/model.safetensors \
        --foundation data/models/diffuser/model.safetensors \
        --dataset data/datasets/nav1d/full.hdf5 --critic data/critics/full/critic.safetensors \
        --out data/models/diffuser_cascade

`--model` is the model whose samples the cascade refines (a `pretrain` or an `align` output),
`--foundation` the weights it starts from (the foundation, or the refined model itself: then the
cascade starts as that model, and training on the pairs moves it from there). The reward of
the pairs is r = Q(s, a_0) of the critic (`dmc_align.rewards.QFirstAction`, as alignment uses
it). The pairs are drawn once, from `conditions` observation histories of the dataset
(`dmc_align.cascade_pairs`); the cascade is then trained on them like a foundation (AdamW,
warm-up + cosine, EMA, resumable snapshots).
Writes into `--out`:
    model.safetensors (+ .yaml)  the cascade with the refined model inside: evaluation rolls
                                 out `model -> cascade (-> cascade)` from this file alone
    metrics.json                 pairs, reward gap, final loss
    live/                        learning curves of the loss and the learning rate
    timing.json                  seconds drawing the pairs and training (ignored by DVC)
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from dmc_align.cascade_pairs import PAIR_MODES, CascadePairs, make_pairs
from dmc_align.conditions import ConditionPool
from dmc_align.rewards import QFirstAction
from dmc_align.sources import check_learned_from, learned_name
from dmc_core.atomic import atomic_write_text
from dmc_core.checkpoint import file_sha256
from dmc_core.config import BaseConfig, entry, knob, to_plain
from dmc_core.data import TransitionDataset, read_dataset
from dmc_core.errors import ConfigError
from dmc_core.models import ControlModel, load_model
from dmc_core.models.cascade import CascadeModel, check_compatible, save_cascade
from dmc_core.models.spec import TrainSpec
from dmc_core.pretrain import learning_rate
from dmc_core.seeding import seeded_initialisation, torch_generator
from dmc_core.training import (
    EMA,
    ResumableRun,
    World,
    adam,
    data_parallel_world,
    descend,
    fingerprint,
)
from dmc_critic import IQLCritic, critic_learned_from, load_critic

__all__ = ["CascadeSpec", "CascadeTrainingRun", "FitCascadeConfig", "fit_cascade"]

log = logging.getLogger(__name__)
PAIRS_SEED_OFFSET = 31


def _cascade_training() -> TrainSpec:
    """`pretrain`'s training knobs with a fine-tuning's defaults (a warm start, few steps)."""
    return TrainSpec(steps=600, lr=3e-4, warmup_steps=50, ema_decay=0.99)


@dataclass(frozen=True)
class CascadeSpec:
    """One cascade: `fit_cascade.cascades.<name>` in `params.yaml`."""

    model: str = knob("diffuser", doc="model it refines: a pretrain or align entry (dvc.yaml)")
    foundation: str = knob(
        "diffuser", doc="pretrain or align entry whose weights it starts from (its start)"
    )
    dataset: str = knob("full", doc="make_dataset entry the histories come from")
    critic: str = knob("full", doc="fit_critic entry whose Q(s, a_0) orders the pairs")
    pairs: str = knob("inpaint", choices=PAIR_MODES, doc="consistency: inpaint, shared_latent")
    conditions: int = knob(1024, ge=1, doc="observation histories pairs are drawn for")
    candidates: int = knob(8, ge=2, doc="samples per history; the best is every pair's x_r")
    branch_fraction: float = knob(0.5, gt=0.0, lt=1.0, doc="shared_latent: chain share to z_t")
    hidden: int = knob(64, ge=1, doc="width of the x_cond encoder")
    train: TrainSpec = knob(factory=_cascade_training, doc="training on the pairs (batch: pairs)")


def _nav1d_cascades() -> dict[str, CascadeSpec]:
    return {"diffuser_cascade": CascadeSpec()}


@dataclass(frozen=True)
class FitCascadeConfig:
    """Stage `fit_cascade`: the cascades, one DVC stage instance per entry."""

    base: BaseConfig = knob(factory=BaseConfig)
    cascades: dict[str, CascadeSpec] = knob(factory=_nav1d_cascades)
    device: str = knob("auto", choices=("auto", "cpu", "cuda"), doc="auto: a GPU if present")


def fit_cascade(config: FitCascadeConfig, args: argparse.Namespace) -> None:
    """Fit `config.cascades[args.name]` (see the module docstring)."""
    spec = entry(config.cascades, args.name, "fit_cascade.cascades", args.params)
    dataset = read_dataset(args.dataset)
    with data_parallel_world(config.device) as world:
        if world.size != 1:
            raise ConfigError("fit_cascade runs in one process (its pairs are drawn once)")
        device = str(world.device)
        source = load_model(args.model, device=device)
        foundation = load_model(args.foundation, device=device)
        critic = load_critic(args.critic, device=device)
        _check_sources(args, spec, source, foundation, critic, dataset)
        run = CascadeTrainingRun(
            spec,
            source,
            foundation,
            critic,
            dataset,
            Path(args.out),
            world,
            config.base.seed,
            args.name,
            # A snapshot resumes only with the same bytes of every input: the pairs come from
            # the source model and the critic, the warm start from the foundation.
            fingerprint(*(file_sha256(path) for path in _input_files(args))),
        )
        run.train()


def _input_files(args: argparse.Namespace) -> tuple[str, ...]:
    """The files a cascade is made of: dataset, refined model, foundation and critic."""
    return (args.dataset, args.model, args.foundation, args.critic)


def draw_pairs(
    spec: CascadeSpec,
    source: ControlModel,
    critic: IQLCritic,
    dataset: TransitionDataset,
    seed: int,
    chunk: int = 256,
) -> CascadePairs:
    """The cascade's training pairs: `spec.conditions` dataset histories, `candidates` samples
    of `source` each (in chunks of `chunk` histories)."""
    generator = torch_generator(seed + PAIRS_SEED_OFFSET)
    pool = ConditionPool.from_dataset(dataset, source.history_len, 0, generator)
    device = next(source.parameters()).device
    histories = pool.sample(spec.conditions, generator).to(device)
    reward = QFirstAction(critic)
    noise = torch_generator(seed + PAIRS_SEED_OFFSET + 1, device)
    source.eval()
    parts = [
        make_pairs(
            source,
            reward,
            histories[i : i + chunk],
            spec.candidates,
            spec.pairs,
            noise,
            spec.branch_fraction,
        )
        for i in range(0, histories.shape[0], chunk)
    ]
    return CascadePairs.cat(parts)


class CascadeTrainingRun(ResumableRun):
    """One `fit_cascade` run: pairs, cascade, EMA, optimiser, snapshot; `train()` runs it."""

    stage = "fit_cascade"

    def __init__(
        self,
        spec: CascadeSpec,
        source: ControlModel,
        foundation: ControlModel,
        critic: IQLCritic,
        dataset: TransitionDataset,
        out: Path,
        world: World,
        seed: int,
        name: str,
        inputs_digest: str | None = None,
    ) -> None:
        """Draw the pairs and warm-start the cascade from the foundation; `inputs_digest` (of
        every input file) keys the snapshot."""
        self.spec, self.schedule = spec, spec.train
        self.out, self.world, self.seed, self.name = out, world, seed, name
        began = time.perf_counter()
        self.pairs = draw_pairs(spec, source, critic, dataset, seed)
        self.pair_seconds = time.perf_counter() - began
        if len(self.pairs) == 0:
            raise ConfigError(
                f"fit_cascade.cascades.{name}: no pair has a strictly better sample "
                f"(all {spec.candidates} candidates of every history tie)"
            )
        log.info(
            "%s: %d pairs (%s) in %.1f s, mean reward gap %.4f",
            name,
            len(self.pairs),
            spec.pairs,
            self.pair_seconds,
            self.pairs.gap,
        )
        with seeded_initialisation(seed):  # the x_cond encoder's random start
            cascade = CascadeModel(foundation.cpu(), spec.hidden, source=source.cpu())
        self.cascade = cascade.to(world.device)
        self.cascade.refiner.train()
        self.ema = EMA(self.cascade.refiner, spec.train.ema_decay)
        self.optimizer = adam(
            self.cascade.refiner.parameters(), spec.train.lr, spec.train.weight_decay
        )
        self.snapshot = self.make_snapshot(spec, dataset, inputs_digest)

    @property
    def parameters(self) -> int:
        """Trainable parameters of the cascade."""
        return sum(p.numel() for p in self.cascade.refiner.parameters() if p.requires_grad)

    def step(self, step: int, generators: tuple[torch.Generator, ...]) -> dict[str, float]:
        """One AdamW step on a batch of pairs, then the EMA update."""
        picks, noise = generators
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.spec.train, step)
        index = torch.randint(len(self.pairs), (self.spec.train.batch_size,), generator=picks)
        index = index.to(self.pairs.x_r.device)
        loss = self.cascade.denoising_loss(
            self.pairs.x_r[index], self.pairs.history[index], self.pairs.x_cond[index], noise
        ).mean()
        descend(loss, self.optimizer, self.cascade.refiner, self.spec.train.grad_clip, self.ema)
        return {"loss": float(loss.detach())}

    def gauges(self) -> dict[str, float]:
        """The learning rate in use."""
        return {"lr": self.optimizer.param_groups[0]["lr"]}

    def timing(self) -> dict[str, float]:
        """The time spent drawing the pairs (before the training steps)."""
        return {"pair_seconds": round(self.pair_seconds, 2)}

    def trained(self) -> tuple[torch.nn.Module, EMA | None, torch.optim.Optimizer]:
        """What a snapshot holds."""
        return self.cascade.refiner, self.ema, self.optimizer

    def finish(self, summary: dict[str, float]) -> Path:
        """Save the EMA cascade (with its source model) and the run's metrics."""
        self.ema.copy_to(self.cascade.refiner)
        self.cascade.eval()
        record = {
            "name": self.name,
            "pairs": len(self.pairs),
            "pair_mode": self.spec.pairs,
            "reward_cond": float(self.pairs.r_cond.mean()),
            "reward_r": float(self.pairs.r_r.mean()),
            "reward_gap": self.pairs.gap,
            "final_loss": summary.get("final_loss", float("nan")),
            "steps": self.spec.train.steps,
            "parameters": self.parameters,
        }
        path = self.out / "model.safetensors"
        save_cascade(path, self.cascade, {**record, "spec": to_plain(self.spec)})
        atomic_write_text(self.out / "metrics.json", json.dumps(record, indent=2) + "\n")
        log.info(
            "%s: wrote %s (%d pairs, loss %.4f)",
            self.name,
            path,
            len(self.pairs),
            record["final_loss"],
        )
        return path


def _check_sources(
    args: argparse.Namespace,
    spec: CascadeSpec,
    source: ControlModel,
    foundation: ControlModel,
    critic: IQLCritic,
    dataset: TransitionDataset,
) -> None:
    where = f"{args.params}: fit_cascade.cascades.{args.name}"
    check_learned_from(
        where,
        learned_name(spec.dataset, dataset),
        [
            ("model", args.model, source.spec.dataset),
            ("foundation", args.foundation, foundation.spec.dataset),
            ("critic", args.critic, critic_learned_from(args.critic, critic)),
        ],
    )
    try:
        check_compatible(source, foundation)
    except ValueError as err:
        raise ConfigError(f"{where}.foundation: {err}") from None
