"""Stage `pretrain`: train one foundation model (Diffuser, Decision Diffuser, Diffusion Policy).

    python -m dmc_core pretrain --name diffuser --dataset data/datasets/nav1d/full.hdf5 \
        --out data/models/diffuser
    torchrun --nproc_per_node 2 -m dmc_core pretrain ...      (data-parallel, same flags)

Writes `<out>/model.safetensors` (the EMA weights; its `model.yaml` sidecar rebuilds the model)
and dvclive metrics under `<out>/live/`. Every `checkpoint_every` steps it leaves a resumable
snapshot in `<out>/.resume/`: a run that is killed and started again continues from there, as
long as its settings and dataset are unchanged.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from dmc_core.checkpoint import file_sha256
from dmc_core.config import BaseConfig, knob, to_plain
from dmc_core.data import TransitionDataset, read_dataset
from dmc_core.errors import ConfigError
from dmc_core.models import ControlModel, ModelSpec, WindowSampler, build_model, save_model
from dmc_core.models.spec import TrainSpec
from dmc_core.models.windows import window_to
from dmc_core.seeding import torch_generator
from dmc_core.training import EMA, Snapshot, World, data_parallel_world, fingerprint

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
    if args.name not in config.models:
        raise ConfigError(
            f"{args.params}: pretrain.models has no entry '{args.name}' "
            f"(entries: {sorted(config.models)})"
        )
    spec = config.models[args.name]
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


class TrainingRun:
    """One `pretrain` run: model, EMA, optimiser, snapshot, metrics; `train()` runs it."""

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
        self.spec, self.train_spec = spec, spec.train
        self.out, self.world, self.seed, self.name = out, world, seed, name
        if self.train_spec.batch_size % world.size:
            raise ConfigError(
                f"pretrain.models.{name}.train.batch_size: {self.train_spec.batch_size} is not "
                f"divisible by the {world.size} processes"
            )
        torch.manual_seed(seed)
        self.model: ControlModel = build_model(spec, dataset).to(world.device)
        self.ema = EMA(self.model, self.train_spec.ema_decay)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=self.train_spec.lr,
            weight_decay=self.train_spec.weight_decay,
        )
        self.windows = WindowSampler(dataset, spec.horizon, spec.history)
        digest = dataset_digest or fingerprint(len(dataset), dataset.attrs)
        self.snapshot = Snapshot(out / ".resume", fingerprint(to_plain(spec), seed, digest))

    @property
    def parameters(self) -> int:
        """Trainable parameters of the model."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def train(self, stop_after: int | None = None) -> Path | None:
        """Train to `train.steps` (or stop early after `stop_after` steps, leaving a snapshot).

        Returns the model file, or None when stopped early.
        """
        start = self.snapshot.restore(self.model, self.ema, self.optimizer)
        if start and self.world.is_main:
            log.info("%s: resuming from the snapshot at step %d", self.name, start)
        learner = self._learner()
        total = self.train_spec.steps
        end = total if stop_after is None else min(total, stop_after)
        with _metrics(self, start) as metrics:
            for step in range(start, end):
                if step % self.train_spec.checkpoint_every == 0:
                    generators = self._generators(step)
                metrics.record(step, self._step(learner, step, generators))
                if (step + 1) % self.train_spec.checkpoint_every == 0 and step + 1 < total:
                    self._save_snapshot(step + 1)
        if end < total:
            self._save_snapshot(end)
            return None
        return self._finish(metrics.summary)

    def _learner(self) -> torch.nn.Module:
        if self.world.size == 1:
            return self.model
        device_ids = [self.world.device] if self.world.device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=device_ids)

    def _generators(self, step: int) -> tuple[torch.Generator, torch.Generator]:
        # Re-seeded at every snapshot boundary from (seed, rank, step), so that a resumed run
        # draws exactly the batches and noise the uninterrupted run would have drawn.
        seed = fingerprint(self.seed, self.world.rank, step)
        value = int(seed, 16) % 2**63
        return torch_generator(value), torch_generator(value + 1, self.world.device)

    def _step(
        self, learner: torch.nn.Module, step: int, generators: tuple[torch.Generator, ...]
    ) -> float:
        windows, noise = generators
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.train_spec, step)
        batch = self.train_spec.batch_size // self.world.size
        window = window_to(self.windows.sample(batch, windows), self.world.device)
        loss = learner(window, noise)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.train_spec.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.train_spec.grad_clip)
        self.optimizer.step()
        self.ema.update(self.model)
        return float(loss.detach())

    def _save_snapshot(self, step: int) -> None:
        if self.world.is_main:
            self.snapshot.save(step, self.model, self.ema, self.optimizer)
        self.world.barrier()

    def _finish(self, summary: dict[str, float]) -> Path | None:
        path = self.out / "model.safetensors"
        if self.world.is_main:
            self.ema.copy_to(self.model)
            metadata = {
                "name": self.name,
                "steps": self.train_spec.steps,
                "processes": self.world.size,
                "parameters": self.parameters,
                **summary,
            }
            save_model(path, self.model, metadata)
            self.snapshot.clear()
            log.info("%s: wrote %s (%d parameters)", self.name, path, self.parameters)
        self.world.barrier()
        return path


class _Metrics:
    """Running loss, progress bar and dvclive logging (main process only)."""

    def __init__(self, run: TrainingRun, start: int) -> None:
        self.run, self.start = run, start
        self.every = run.train_spec.log_every
        self.losses: list[float] = []
        self.began = time.perf_counter()
        self.summary: dict[str, float] = {}
        self.live = None
        self.bar = None
        if run.world.is_main:
            from dvclive import Live
            from tqdm.auto import tqdm

            self.live = Live(
                str(run.out / "live"), resume=start > 0, dvcyaml=False, save_dvc_exp=False
            )
            self.live.step = start
            self.live.log_param("parameters", run.parameters)
            self.bar = tqdm(
                total=run.train_spec.steps, initial=start, desc=f"pretrain {run.name}", unit="step"
            )

    def record(self, step: int, loss: float) -> None:
        self.losses.append(loss)
        if self.bar is not None:
            self.bar.update(1)
        if (step + 1) % self.every or self.live is None:
            return
        mean = sum(self.losses[-self.every :]) / len(self.losses[-self.every :])
        self.live.step = step + 1
        self.live.log_metric("train/loss", mean)
        self.live.log_metric("train/lr", self.run.optimizer.param_groups[0]["lr"])
        self.bar.set_postfix(loss=f"{mean:.4f}")

    def close(self) -> None:
        elapsed = time.perf_counter() - self.began
        done = len(self.losses)
        tail = self.losses[-self.every :] or [float("nan")]
        self.summary = {
            "final_loss": sum(tail) / len(tail),
            "seconds": round(elapsed, 2),
            "steps_per_second": round(done / elapsed, 2) if elapsed > 0 else 0.0,
        }
        # dvclive already reports the last logged loss as train.loss.
        shown = {k: v for k, v in self.summary.items() if k != "final_loss"}
        if self.bar is not None:
            self.bar.close()
        if self.live is not None:
            self.live.summary.update(shown)
            self.live.make_summary()
            self.live.end()


@contextmanager
def _metrics(run: TrainingRun, start: int) -> Iterator[_Metrics]:
    metrics = _Metrics(run, start)
    try:
        yield metrics
    finally:
        metrics.close()
