"""Stage `pretrain`: learning-rate schedule, EMA, resumable snapshots, the CLI, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from dmc_core.data import read_dataset, write_dataset
from dmc_core.models import ModelSpec, TrainSpec, load_model
from dmc_core.pretrain import TrainingRun, learning_rate
from dmc_core.testing import run_module, torch_threads, toy_dataset
from dmc_core.training import EMA, ResumableRun, Snapshot, World, descend
from dmc_core.training.resume import RESUME_ROOT

CPU_WORLD = World(rank=0, size=1, device=torch.device("cpu"))
TINY_BACKBONE = {"name": "mlp", "hidden": 16, "blocks": 1}


def tiny_spec(**train: object) -> ModelSpec:
    settings = {"steps": 30, "batch_size": 16, "checkpoint_every": 10, "log_every": 5, **train}
    return ModelSpec(
        kind="diffuser",
        horizon=4,
        backbone=TINY_BACKBONE,
        train=TrainSpec(**settings),  # type: ignore[arg-type]
    )


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    train = TrainSpec(steps=110, lr=1.0, warmup_steps=10)
    assert learning_rate(train, 0) == pytest.approx(0.1)
    assert learning_rate(train, 9) == pytest.approx(1.0)
    assert learning_rate(train, 10) == pytest.approx(1.0)
    assert learning_rate(train, 60) == pytest.approx(0.5)
    assert learning_rate(train, 110) == pytest.approx(0.0, abs=1e-12)


def test_ema_moves_towards_the_weights_with_warmed_up_decay() -> None:
    layer = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(layer.weight)
    ema = EMA(layer, decay=0.9)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    ema.update(layer)  # first update: decay min(0.9, 2/11)
    assert float(ema.shadow["weight"]) == pytest.approx(1.0 - 2.0 / 11.0)
    for _ in range(200):
        ema.update(layer)
    assert float(ema.shadow["weight"]) == pytest.approx(1.0, abs=1e-6)
    target = torch.nn.Linear(1, 1, bias=False)
    ema.copy_to(target)
    assert torch.equal(target.weight, ema.shadow["weight"])


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(tmp_path: Path) -> None:
    data = toy_dataset(episodes=6, horizon=8)
    whole = TrainingRun(tiny_spec(), data, tmp_path / "whole", CPU_WORLD, 0, "m")
    whole_path = whole.train()
    assert whole_path is not None and not (tmp_path / "whole" / ".resume").exists()

    first = TrainingRun(tiny_spec(), data, tmp_path / "split", CPU_WORLD, 0, "m")
    assert first.train(stop_after=20) is None
    assert (tmp_path / "split" / ".resume" / "state.safetensors").is_file()
    second = TrainingRun(tiny_spec(), data, tmp_path / "split", CPU_WORLD, 0, "m")
    split_path = second.train()
    assert split_path is not None
    for name, value in load_model(whole_path).state_dict().items():
        assert torch.equal(value, load_model(split_path).state_dict()[name]), name


def test_under_a_resume_root_a_run_resumes_in_another_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A queued DVC experiment queued again after a kill runs in a new copy of the workspace.
    data = toy_dataset(episodes=6, horizon=8)
    whole = TrainingRun(tiny_spec(), data, tmp_path / "whole", CPU_WORLD, 0, "m").train()
    assert whole is not None
    root = tmp_path / "root"
    monkeypatch.setenv(RESUME_ROOT, str(root))
    first = TrainingRun(tiny_spec(), data, tmp_path / "copy1", CPU_WORLD, 0, "m")
    assert first.train(stop_after=20) is None
    assert not (tmp_path / "copy1" / ".resume").exists()
    assert [p.name for p in root.glob("*/*")] == ["state.safetensors"]
    second = TrainingRun(tiny_spec(), data, tmp_path / "copy2", CPU_WORLD, 0, "m")
    resumed = second.train()
    assert resumed is not None
    assert json.loads((tmp_path / "copy2" / "timing.json").read_text())["resumed_at"] == [20]
    for name, value in load_model(whole).state_dict().items():
        assert torch.equal(value, load_model(resumed).state_dict()[name]), name
    assert list(root.iterdir()) == []  # a finished run removes its snapshot
    other = TrainingRun(tiny_spec(lr=5e-4), data, tmp_path / "copy3", CPU_WORLD, 0, "m")
    assert other.snapshot.directory.parent == root
    assert other.snapshot.directory != second.snapshot.directory


def test_a_snapshot_of_other_settings_is_not_resumed(tmp_path: Path) -> None:
    data = toy_dataset(episodes=6, horizon=8)
    TrainingRun(tiny_spec(), data, tmp_path, CPU_WORLD, 0, "m").train(stop_after=10)
    other = TrainingRun(tiny_spec(lr=5e-4), data, tmp_path, CPU_WORLD, 0, "m")
    snapshot: Snapshot = other.snapshot
    assert snapshot.restore(other.model, other.ema, other.optimizer) == 0
    same = TrainingRun(tiny_spec(), data, tmp_path, CPU_WORLD, 0, "m")
    assert same.snapshot.restore(same.model, same.ema, same.optimizer) == 10


# The command line: files, metrics, a kill and a restart, and DDP ---------------------------


def write_inputs(tmp_path: Path, **train: object) -> Path:
    data = tmp_path / "data.hdf5"
    write_dataset(data, toy_dataset(episodes=20, horizon=8))
    entry = {
        "kind": "diffuser",
        "horizon": 4,
        "backbone": TINY_BACKBONE,
        "train": {"steps": 40, "batch_size": 16, "checkpoint_every": 10, "log_every": 5, **train},
    }
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"base": {"seed": 0}, "pretrain": {"models": {"m": entry}}}))
    return params


def pretrain_args(tmp_path: Path) -> list[str]:
    return [
        "pretrain",
        "--name",
        "m",
        "--dataset",
        str(tmp_path / "data.hdf5"),
        "--out",
        str(tmp_path / "out"),
        "--params",
        str(tmp_path / "params.yaml"),
    ]


def test_the_stage_writes_the_model_and_its_learning_curve(tmp_path: Path) -> None:
    write_inputs(tmp_path)
    result = run_module("dmc_core", *pretrain_args(tmp_path))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    model = load_model(out / "model.safetensors")
    assert model.kind == "diffuser"
    sidecar = yaml.safe_load((out / "model.yaml").read_text())
    assert sidecar["metadata"]["steps"] == 40 and sidecar["metadata"]["processes"] == 1
    curve = (out / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert curve[0].split("\t")[:2] == ["step", "loss"] and len(curve) == 1 + 40 // 5
    assert "train" in yaml.safe_load((out / "live" / "metrics.json").read_text())
    assert not (out / ".resume").exists()


def test_unknown_model_entry_is_a_one_line_error(tmp_path: Path) -> None:
    write_inputs(tmp_path)
    args = pretrain_args(tmp_path)
    args[2] = "nope"
    result = run_module("dmc_core", *args)
    assert result.returncode == 2
    assert "pretrain.models has no entry 'nope'" in result.stderr


def test_a_killed_run_continues_from_its_last_snapshot(tmp_path: Path) -> None:
    write_inputs(tmp_path, steps=1500, checkpoint_every=20, log_every=20)
    snapshot = tmp_path / "out" / ".resume" / "state.safetensors"
    command = [sys.executable, "-m", "dmc_core", *pretrain_args(tmp_path)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not snapshot.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert snapshot.exists(), "no snapshot was written before the kill"
    assert not (tmp_path / "out" / "model.safetensors").exists(), "the run finished too soon"

    result = run_module("dmc_core", *pretrain_args(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "resuming from the snapshot at step" in result.stderr
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert not snapshot.exists()


class _RecordedRun(TrainingRun):
    """A pretrain run that also leaves `<out>/rank<r>.safetensors`: its raw weights (before
    `finish` copies the EMA in) and its EMA, whichever rank it is."""

    raw: dict[str, torch.Tensor] | None = None

    def finish(self, summary: dict[str, float]) -> Path:
        self.raw = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return super().finish(summary)

    def train(self, stop_after: int | None = None) -> Path | None:
        path = super().train(stop_after)
        raw = self.raw if self.raw is not None else self.model.state_dict()
        tensors = {f"raw.{k}": v for k, v in raw.items()}
        tensors |= {f"ema.{k}": v for k, v in self.ema.shadow.items()}
        contiguous = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
        save_file(contiguous, str(self.out / f"rank{self.world.rank}.safetensors"))
        return path


class _UnionOfRanks(_RecordedRun):
    """One process whose every step trains on the union of the two ranks' batches: each half
    drawn, and noised, by the generators that rank uses (`ResumableRun.generators`)."""

    def generators(self, step: int) -> Any:
        cpu = torch.device("cpu")
        ranks = [SimpleNamespace(seed=self.seed, world=World(r, 2, cpu)) for r in range(2)]
        return [ResumableRun.generators(rank, step) for rank in ranks]  # type: ignore[arg-type]

    def step(self, step: int, generators: Any) -> dict[str, float]:
        """TrainingRun.step with the mean of the two halves' losses (DDP averages gradients)."""
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.train_spec, step)
        half = self.train_spec.batch_size // 2
        losses = [self.model(self.windows.sample(half, w), noise) for w, noise in generators]
        loss = torch.stack(losses).mean()
        descend(loss, self.optimizer, self.model, self.train_spec.grad_clip, self.ema)
        return {"loss": float(loss.detach())}


DDP_TRAIN = {"steps": 12, "warmup_steps": 2, "lr": 3e-3, "checkpoint_every": 12}


def test_two_ranks_train_like_one_process_on_the_union_of_their_batches(tmp_path: Path) -> None:
    """Catches ranks training apart (no DDP), on one shared stream, or on the whole batch each."""
    write_inputs(tmp_path, **DDP_TRAIN)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # This file is the worker: `pretrain` through the CLI, each rank recording its weights.
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        __file__,
        *pretrain_args(tmp_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    sidecar = yaml.safe_load((out / "model.yaml").read_text())
    assert sidecar["metadata"]["processes"] == 2
    ranks = [load_file(str(out / f"rank{r}.safetensors")) for r in range(2)]
    # The gradients are all-reduced, so both ranks take the same steps, bit for bit.
    assert ranks[0].keys() == ranks[1].keys()
    for name, value in ranks[0].items():
        assert torch.equal(value, ranks[1][name]), name

    dataset = read_dataset(tmp_path / "data.hdf5")
    (windows, _), (other, _) = _UnionOfRanks.generators(SimpleNamespace(seed=0), 0)
    draws = [torch.randint(1000, (8,), generator=g) for g in (windows, other)]
    assert not torch.equal(*draws)  # the ranks draw different batches
    spec = load_model(out / "model.safetensors").spec  # the one the ranks trained
    with torch_threads(1):
        single = _UnionOfRanks(spec, dataset, tmp_path / "single", CPU_WORLD, 0, "m")
        single.train()
    union = load_file(str(tmp_path / "single" / "rank0.safetensors"))
    # Equal up to float32 rounding. With one thread per process they are equal bit for bit (the
    # halves' gradients are scaled by 1/2, an exact operation, and summed: by gloo across the
    # ranks, by autograd here); with more cores the ranks take cpu_count // 2 threads and the
    # reference 1, and matmul reductions split by thread round differently, a few ulps per
    # step carried through 12 Adam steps. Ranks each drawing the whole batch fail this.
    for name, value in union.items():
        torch.testing.assert_close(ranks[0][name], value, rtol=1e-5, atol=1e-6, msg=name)
    initial = _UnionOfRanks(spec, dataset, tmp_path / "unused", CPU_WORLD, 0, "m").model
    moved = [n for n, v in initial.state_dict().items() if not torch.equal(v, union[f"raw.{n}"])]
    assert moved  # the runs trained: equal weights are not just the shared initial ones


if __name__ == "__main__":  # a rank of the DDP test above, started by torchrun
    import dmc_core.pretrain
    from dmc_core.cli import run_cli
    from dmc_core.stages import STAGES

    dmc_core.pretrain.TrainingRun = _RecordedRun  # type: ignore[misc]
    sys.exit(run_cli("dmc_core", STAGES, sys.argv[1:]))
