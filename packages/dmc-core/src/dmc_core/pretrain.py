"""Stage `pretrain`: train one foundation model (Diffuser, Decision Diffuser, Diffusion Policy).

    python -m dmc_core pretrain --name diffuser --dataset data/datasets/nav1d/full.hdf5 \
        --out data/models/diffuser
    torchrun --nproc_per_node 2 -m dmc_core pretrain ...      (data-parallel, same flags)

Writes `<out>/model.safetensors` (the EMA weights; its `model.yaml` sidecar rebuilds the model)
and learning curves under `<out>/live/`. Every `checkpoint_every` steps it leaves a resumable
snapshot in `<out>/.resume/`: a run that is killed and started again continues from there, as
long as its settings and dataset are unchanged.
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from dmc_core.checkpoint import file_sha256
from dmc_core.config import BaseConfig, entry, knob
from dmc_core.data import TransitionDataset, read_dataset
from dmc_core.errors import ConfigError
from dmc_core.models import ControlModel, ModelSpec, WindowSampler, build_model, save_model
from dmc_core.models.spec import TrainSpec
from dmc_core.models.windows import window_to
from dmc_core.training import (
    EMA,
    ResumableRun,
    World,
    adam,
    data_parallel_world,
    descend,
)

__all__ = ["PretrainConfig", "TrainingRun", "pretrain"]

log = logging.getLogger(__name__)


def _nav1d_models() -> dict[str, ModelSpec]:
    # The defaults of params.yaml: small models that train in about a minute on 2 CPU cores.
    return {
        "diffuser": ModelSpec(
            kind="diffuser",
            horizon=8,
            backbone={"name": "unet", "dim": 16, "dim_mults": [1, 2]},
            train=TrainSpec(steps=2500),
        ),
        "policy": ModelSpec(
            kind="diffusion_policy",
            horizon=4,
            history=2,
            inpainting="none",
            backbone={"name": "mlp", "hidden": 128, "blocks": 2},
            train=TrainSpec(steps=3000),
        ),
    }


@dataclass(frozen=True)
class PretrainConfig:
    """Stage `pretrain`: the foundation models, one DVC stage instance per entry."""

    base: BaseConfig = knob(factory=BaseConfig)
    models: dict[str, ModelSpec] = knob(factory=_nav1d_models)
    device: str = knob("auto", choices=("auto", "cpu", "cuda"), doc="auto: a GPU if present")


def pretrain(config: PretrainConfig, args: argparse.Namespace) -> None:
    """Train `config.models[args.name]` on `args.dataset`; write it to `args.out`."""
    spec = entry(config.models, args.name, "pretrain.models", args.params)
    dataset = read_dataset(args.dataset)
    with data_parallel_world(config.device) as world:
        digest = file_sha256(args.dataset)
        run = TrainingRun(spec, dataset, Path(args.out), world, config.base.seed, args.name, digest)
        run.train()


def learning_rate(train: TrainSpec, step: int) -> float:
    """Linear warm-up to `lr`, then cosine decay to 0 at `steps`."""
    if step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    span = max(1, train.steps - train.warmup_steps)
    return train.lr * 0.5 * (1.0 + math.cos(math.pi * (step - train.warmup_steps) / span))


class TrainingRun(ResumableRun):
    """One `pretrain` run: model, EMA, optimiser and snapshot; `train()` runs it."""

    stage = "pretrain"

    def __init__(
        self,
        spec: ModelSpec,
        dataset: TransitionDataset,
        out: Path,
        world: World,
        seed: int,
        name: str,
        dataset_digest: str | None = None,
    ) -> None:
        """Build everything; every process starts from the same initial weights."""
        self.spec, self.train_spec, self.schedule = spec, spec.train, spec.train
        self.out, self.world, self.seed, self.name = out, world, seed, name
        if self.train_spec.batch_size % world.size:
            raise ConfigError(
                f"pretrain.models.{name}.train.batch_size: {self.train_spec.batch_size} is not "
                f"divisible by the {world.size} processes"
            )
        torch.manual_seed(seed)
        self.model: ControlModel = build_model(spec, dataset).to(world.device)
        self.ema = EMA(self.model, self.train_spec.ema_decay)
        self.optimizer = adam(
            self.model.parameters(), self.train_spec.lr, self.train_spec.weight_decay
        )
        self.windows = WindowSampler(dataset, spec.horizon, spec.history)
        self.snapshot = self.make_snapshot(spec, dataset, dataset_digest)
        self.learner = self._learner()

    @property
    def parameters(self) -> int:
        """Trainable parameters of the model."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def _learner(self) -> torch.nn.Module:
        if self.world.size == 1:
            return self.model
        device_ids = [self.world.device] if self.world.device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=device_ids)

    def step(self, step: int, generators: tuple[torch.Generator, ...]) -> dict[str, float]:
        """One AdamW step on a batch of windows, then the EMA update."""
        windows, noise = generators
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.train_spec, step)
        batch = self.train_spec.batch_size // self.world.size
        window = window_to(self.windows.sample(batch, windows), self.world.device)
        loss = self.learner(window, noise)
        descend(loss, self.optimizer, self.model, self.train_spec.grad_clip, self.ema)
        return {"loss": float(loss.detach())}

    def gauges(self) -> dict[str, float]:
        """The learning rate in use."""
        return {"lr": self.optimizer.param_groups[0]["lr"]}

    def trained(self) -> tuple[torch.nn.Module, EMA | None, torch.optim.Optimizer]:
        """What a snapshot holds."""
        return self.model, self.ema, self.optimizer

    def finish(self, summary: dict[str, float]) -> Path:
        """Save the EMA weights as the model, with the run's summary in the sidecar."""
        path = self.out / "model.safetensors"
        self.ema.copy_to(self.model)
        metadata = {
            "name": self.name,
            "steps": self.train_spec.steps,
            "processes": self.world.size,
            "parameters": self.parameters,
            **summary,
        }
        save_model(path, self.model, metadata)
        log.info("%s: wrote %s (%d parameters)", self.name, path, self.parameters)
        return path
